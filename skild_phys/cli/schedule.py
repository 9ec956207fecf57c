"""`skild-phys schedule`: inspect a SKILD preset's noise schedule, resolution and start steps."""

from __future__ import annotations

import json
import math

import click

from skild_phys.cli.common import FiniteFloat, writes


def _table_steps(N: int) -> list[int]:
    """A readable subset of steps: the first few, then every tenth of the chain."""
    early = [n for n in (0, 1, 2, 5, 10, 20, 50) if n <= N]
    return sorted(set(early) | {round(N * i / 10) for i in range(11)})


def _plot(path, preset) -> None:
    """ᾱ over (|k|, n) with the resolved cutoff k*(n), and r(n)."""
    import matplotlib

    from skild_base import outputs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s = preset.schedule
    n = np.arange(s.N + 1)
    k = np.linspace(0.0, math.sqrt(2) * math.pi * (preset.H - 1), 400)
    lam = s.lam_n()
    alpha_bar = np.exp(-s.k_eff2(k)[None, :] * lam[:, None])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    im = ax0.imshow(alpha_bar, origin="lower", aspect="auto", extent=(k[0], k[-1], 0, s.N), vmin=0, vmax=1)
    with np.errstate(divide="ignore"):
        ax0.plot(s.k_star(n), n, color="white", lw=1.2, label=r"$k^*(n)$, SNR $=\tau$")
    ax0.set_xlim(k[0], k[-1])
    ax0.set_xlabel(r"$|k|$ (units of 1/side)")
    ax0.set_ylabel("step n")
    ax0.legend(loc="upper right")
    fig.colorbar(im, ax=ax0, label=r"$\bar\alpha_n(k)$")
    ax1.semilogy(n[1:], s.resolution(n[1:]))
    ax1.axhline(preset.H, color="grey", ls=":", label=f"H = {preset.H}")
    ax1.set_xlabel("step n")
    ax1.set_ylabel("effective resolution r(n) [pixels per side]")
    ax1.legend()
    fig.suptitle(f"{preset.name}: {s.kind} schedule")
    fig.savefig(path, dpi=120, metadata=outputs.plot_metadata(path))
    plt.close(fig)


@click.command()
@click.option("--preset", "name", required=True, help="Named preset (ising128_4x, imagenet128_8x, cifar10_linear, ...).")
@click.option("--size", "H", type=click.IntRange(min=2), default=None,
              help="Grid side H; rescales the preset by the λ rule at the same factor [default: the preset's].")
@click.option("--resolution", "resolutions", type=FiniteFloat(min=0, min_open=True), multiple=True,
              help="Target resolution r (pixels per side); prints the start step n0. Repeatable.")
@click.option("--factor", "factors", type=FiniteFloat(min=1), multiple=True,
              help="Super-resolution factor f; prints n0 for r = H/f. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a figure of ᾱ over (k, n) and r(n) to this file (.png or .pdf).")
@click.option("--overwrite", is_flag=True, help="Replace a plot skild-phys wrote at --plot.")
@writes("plot_path")
def schedule(name, H, resolutions, factors, as_json, plot_path, overwrite):
    """Show a preset's λ schedule, effective resolution r(n) and super-resolution start steps.

    r(n) = √(ln(1+1/τ)/λ_n) / (√2 π); the start step n0 for a target r is the first
    (smallest) n with r(n) ≤ r.
    """
    from skild_base import outputs
    from skild_base.errors import InputError
    from skild_phys.process.presets import get_preset

    if plot_path is not None:
        outputs.check_file(plot_path, (".png", ".pdf"), "--plot", overwrite, kind=outputs.PLOT)
    preset = get_preset(name, H)
    s = preset.schedule
    targets = [float(r) for r in resolutions] + [preset.H / f for f in factors]
    starts = []
    for r in targets:
        try:
            starts.append((r, s.start_step(r)))
        except ValueError:
            raise InputError(f"resolution {r:g} is never reached by {preset.name}: "
                             f"r(N) = {float(s.resolution(s.N)):.4g} pixels per side") from None
    steps = _table_steps(s.N)
    lam = s.lam_n()
    rows = [(n, n / s.N, float(lam[n]), float(s.resolution(n))) for n in steps]

    if plot_path is not None:
        try:
            _plot(plot_path, preset)
        except OSError as err:
            raise InputError(f"cannot write the plot to {plot_path}: {err.strerror}") from None

    if as_json:
        out = {
            "preset": preset.name, "H": preset.H, "r_lr": preset.r_lr, "factor": preset.factor,
            "schedule": s.to_dict(),
            "S0_fit_official": {"alpha": preset.S0_alpha, "C": preset.S0_C_official, "k0sq": preset.S0_k0sq},
            "table": [{"n": n, "t": t, "lam": la, "r": None if math.isinf(r) else r} for n, t, la, r in rows],
            "start_steps": [{"r": r, "n0": n0} for r, n0 in starts],
        }
        click.echo(json.dumps(out, indent=2))
        return

    theta = "—" if s.theta is None else f"{s.theta:g}"
    click.echo(f"preset {preset.name}: H = {preset.H}, {s.kind} schedule, N = {s.N}")
    click.echo(f"  lambda_i = {s.lam_i:.4f}   lambda_f = {s.lam_f:.4f}   theta = {theta}   "
               f"k_c = {s.k_c:g}   tau = {s.tau:g}")
    click.echo(f"  S0 fit (official normalisation): alpha = {preset.S0_alpha:g}, C = {preset.S0_C_official:g}, "
               f"k0^2 = {preset.S0_k0sq:.6g}")
    click.echo(f"  r(N) = {float(s.resolution(s.N)):.4g} pixels per side")
    click.echo(f"{'n':>6} {'t':>6} {'lambda(n)':>12} {'r(n)':>10}")
    for n, t, la, r in rows:
        click.echo(f"{n:>6d} {t:>6.3f} {la:>12.5g} {r:>10.4g}")
    for r, n0 in starts:
        click.echo(f"start step for r = {r:g}: n0 = {n0} (r(n0) = {float(s.resolution(n0)):.4g})")


COMMANDS = [schedule]
