"""Price and accuracy of the samplers: paired fidelity against network evaluations, one checkpoint.

    python benchmarks/sampler_sweep.py [--checkpoint RUN] [--truth TEST.zarr] [--samples N] [--gen-samples M]
                                       [--rows a,b] [--threads T] [--table-only] [--out TABLE.md]

Every row super-resolves the same first N held-out configurations (paper protocol: the
forward marginal of the true configuration at n0, same seed) with one sampler, step
placement and step count (`skild-phys evaluate --protocol marginal --sampler S --spacing P
--steps K`), and the table gives its network evaluations per configuration (NFE), wall
time, the paired κ4 excess at every ℓ, and the paired Δ⟨e⟩ and ΔU4.  Finished rows are not
rerun; an interrupted row resumes.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import xarray as xr

OUT = Path("runs/sampler_sweep")
# (name, sampler, spacing, K[, protocol[, eta[, variance]]]): the full ancestral chain from n0 is the reference
ROWS = [
    ("ancestral-full", "ancestral", "uniform", None),
    ("ancestral-250", "ancestral", "uniform", 250),
    ("ancestral-100", "ancestral", "uniform", 100),
    ("ancestral-50", "ancestral", "uniform", 50),
    ("ancestral-20", "ancestral", "uniform", 20),
    ("ancestral-10", "ancestral", "uniform", 10),
    ("ancestral-loglam-20", "ancestral", "log-lambda", 20),
    ("ddim-loglam-50", "ddim", "log-lambda", 50),
    ("ddim-loglam-20", "ddim", "log-lambda", 20),
    ("ddim-loglam-10", "ddim", "log-lambda", 10),
    ("heun-loglam-50", "heun", "log-lambda", 50),
    ("heun-loglam-25", "heun", "log-lambda", 25),
    ("heun-loglam-13", "heun", "log-lambda", 13),
    ("heun-loglam-10", "heun", "log-lambda", 10),
    ("heun-loglam-5", "heun", "log-lambda", 5),
    ("heun-rho-13", "heun", "rho", 13),
    ("heun-uniform-13", "heun", "uniform", 13),
    # the churned (stochastic) Heun chain: η of each step re-noised by the forward kernel first
    ("heun0.25-loglam-13", "heun", "log-lambda", 13, "marginal", 0.25),
    ("heun0.5-loglam-13", "heun", "log-lambda", 13, "marginal", 0.5),
    # the real coarse input (block means alone) instead of the forward marginal
    ("ancestral-100-lowres", "ancestral", "uniform", 100, "lowres"),
    ("ancestral-20-lowres", "ancestral", "uniform", 20, "lowres"),
    ("heun-loglam-13-lowres", "heun", "log-lambda", 13, "lowres"),
    ("heun-loglam-50-lowres", "heun", "log-lambda", 50, "lowres"),
    # generation from noise (n = N), against the whole truth: --gen-samples configurations per row
    ("ancestral-250-gen", "ancestral", "uniform", 250, "generate"),
    ("ancestral-100-gen", "ancestral", "uniform", 100, "generate"),
    ("ancestral-50-gen", "ancestral", "uniform", 50, "generate"),
    ("ancestral-20-gen", "ancestral", "uniform", 20, "generate"),
    ("ddim-loglam-20-gen", "ddim", "log-lambda", 20, "generate"),
    ("heun-loglam-13-gen", "heun", "log-lambda", 13, "generate"),
    ("heun-loglam-25-gen", "heun", "log-lambda", 25, "generate"),
    ("ddim0.25-loglam-20-gen", "ddim", "log-lambda", 20, "generate", 0.25),
    ("ddim0.5-loglam-20-gen", "ddim", "log-lambda", 20, "generate", 0.5),
    ("ddim0.75-loglam-20-gen", "ddim", "log-lambda", 20, "generate", 0.75),
    # the ancestral chain with the posterior variance down to n0 and the forward one from n0
    ("split-100-gen", "ancestral", "uniform", 100, "generate", None, "split"),
    ("split-50-gen", "ancestral", "uniform", 50, "generate", None, "split"),
    ("split-20-gen", "ancestral", "uniform", 20, "generate", None, "split"),
    ("split-10-gen", "ancestral", "uniform", 10, "generate", None, "split"),
    ("forward-50-gen", "ancestral", "uniform", 50, "generate", None, "forward"),
    ("forward-20-gen", "ancestral", "uniform", 20, "generate", None, "forward"),
]
SIZES = (1, 2, 4, 8, 12)
GEN_SIZE = 4  # the patch size of the generation table's κ4 column


def command(args, name, sampler, spacing, K, protocol="marginal", eta=None, variance=None) -> list[str]:
    generated = str(args.gen_samples) if protocol == "generate" else "0"
    # the reverse-step noise of the ancestral chain: the row's, else the checkpoint's own default unless
    # told (forward for super-resolution, posterior for generation: skild_phys.methods.default_variance)
    variance = variance or args.variance or ("posterior" if protocol == "generate" else "forward")
    cmd = ["skild-phys", "evaluate", "--checkpoint", args.checkpoint, "--truth", args.truth,
           "--samples", str(args.samples), "--gen-samples", generated,
           "--protocol", protocol, "--baseline", "none", "--seed", "1", "--variance", variance,
           "--sampler", sampler, "--spacing", spacing, "--out", str(OUT / name), "--quiet"]
    cmd += ["--steps", str(K if K is not None else 1000)]  # K capped at n0: the full chain
    if eta is not None:
        cmd += ["--eta", str(eta)]
    return cmd


def table(args, rows) -> str:
    import numpy as np

    from skild_phys.reports.evaluate import DATASET_FILE, summary

    lines = [f"| row | input | sampler | spacing | K | NFE | wall s | paired κ4 excess % ℓ = {' / '.join(map(str, SIZES))} "
             "| max \\|excess\\|/σ | Δ⟨e⟩ | ΔU4 |", "|---" * 11 + "|"]
    cmds, generated = [], []
    for name, sampler, spacing, K, *rest in rows:
        protocol = rest[0] if rest else "marginal"
        cmds.append(f"- `{name}`: `{shlex.join(command(args, name, sampler, spacing, K, *rest))}`")
        if len(rest) > 1 and rest[1] is not None:
            sampler = f"{sampler} η = {rest[1]:g}"
        if len(rest) > 2:
            sampler = f"{sampler} ({rest[2]} variance)"
        elif sampler == "ancestral" and protocol == "generate":
            sampler = f"{sampler} ({args.variance or 'posterior'} variance)"
        if protocol == "generate":
            generated.append((name, sampler, spacing, K))
            continue
        nc = OUT / name / DATASET_FILE
        if not nc.is_file():
            lines.append(f"| {name} | {protocol} | {sampler} | {spacing} | {K or 'all'} | not run |" + " |" * 5)
            continue
        s = summary(xr.load_dataset(nc))[protocol]
        ex = s["kappa4_excess"]
        worst = max(abs(v) / e for v, e in ex.values())
        lines.append(f"| {name} | {protocol} | {sampler} | {spacing} | {K or 'all'} | {s['nfe']} | {s['wall_s']:.0f} | "
                     + " / ".join(f"{100 * ex[l][0]:+.1f}" for l in SIZES if l in ex)
                     + f" (±{100 * max(e for _, e in ex.values()):.1f}) | {worst:.1f} | "
                     f"{s['d_e'][0]:+.4f} ± {s['d_e'][1]:.4f} | {s['d_binder'][0]:+.4f} ± {s['d_binder'][1]:.4f} |")
    if generated:
        lines += ["", "Generation from noise (n = N): value and deviation from the whole truth in σ of both errors.", "",
                  "| row | sampler | spacing | K | NFE | wall s | n | U4 (σ) | ⟨\\|m\\|⟩ (σ) | ⟨e⟩ (σ) | C (σ) "
                  f"| κ4(ℓ = {GEN_SIZE}) (σ) |", "|---" * 12 + "|"]
        for name, sampler, spacing, K in generated:
            nc = OUT / name / DATASET_FILE
            if not nc.is_file():
                lines.append(f"| {name} | {sampler} | {spacing} | {K} | not run |" + " |" * 7)
                continue
            ds = xr.load_dataset(nc)
            s = summary(ds)["generate"]
            cells = " | ".join(f"{s[m][0]:.4f} ({s[m][2]:+.1f}σ)" for m in ("binder", "abs_m", "e"))
            cells += f" | {s['specific_heat'][0]:.3f} ({s['specific_heat'][2]:+.1f}σ)"
            # κ4 of the generated ensemble against the whole truth's (row 0), errors combined
            k = ds.kappa4.sel(patch_size=GEN_SIZE).values
            ke = ds.kappa4_err.sel(patch_size=GEN_SIZE).values
            g = list(ds.source.values).index("model/generate")
            cells += f" | {k[g]:.4f} ({(k[g] - k[0]) / float(np.hypot(ke[g], ke[0])):+.1f}σ)"
            lines.append(f"| {name} | {sampler} | {spacing} | {K} | {s['nfe']} | {s['wall_s']:.0f} | {s['n']} | {cells} |")
    return "\n".join(lines + ["", "Commands:", ""] + cmds)


def against(args, rows, reference: str) -> str:
    """Every row of the reference's input paired with the reference row instead of the truth.

    Row and reference super-resolve the same truth configurations from the same start (the same
    forward-marginal draw, or the same block means), so their difference is jackknifed over joint blocks (the truth's Monte Carlo blocks) and
    its error is the one that decides "the same answer": below either row's error against the
    truth.  κ4 difference relative to the reference's κ4; Δ⟨e⟩ and ΔU4 as differences.
    """
    import numpy as np

    from analysis.moments import MOMENT_NAMES
    from ising.measure import open_source, paired_with_reference
    from skild_base.errors import InputError
    from skild_phys.reports.evaluate import DATASET_FILE, summary

    def protocol_of(row):
        return row[4] if len(row) > 4 else "marginal"

    by_name = {r[0]: r for r in ROWS}
    if reference not in by_name:
        raise SystemExit(f"unknown reference row {reference}")
    protocol = protocol_of(by_name[reference])
    if protocol == "generate":
        raise SystemExit(f"{reference} generates from noise: there is nothing to pair it with")

    def store(name):
        return OUT / name / f"model_{protocol}.zarr"

    if not (OUT / reference / DATASET_FILE).is_file():
        raise SystemExit(f"reference row {reference} has not been run")
    ref_ds = xr.load_dataset(OUT / reference / DATASET_FILE)
    ref_k4 = ref_ds.kappa4.sel(source=f"model/{protocol}", patch_size=list(SIZES)).values
    truth = open_source(args.truth)
    ref = open_source(store(reference))
    mi = {m: i for i, m in enumerate(MOMENT_NAMES)}
    lines = [f"| row | NFE | κ4 difference % ℓ = {' / '.join(map(str, SIZES))} | max \\|diff\\|/σ | Δ⟨e⟩ | ΔU4 |",
             "|---" * 6 + "|"]
    for row in rows:
        name = row[0]
        nc = OUT / name / DATASET_FILE
        if protocol_of(row) != protocol or name == reference or not nc.is_file():
            continue
        src = open_source(store(name))
        mismatch = f"{name} and {reference} did not super-resolve the same configurations of {args.truth}"
        if src.n != ref.n:
            raise SystemExit(mismatch)
        try:
            est = paired_with_reference(truth, ref, src, SIZES)
        except InputError:
            raise SystemExit(mismatch) from None
        d, de = est["kappa4_paired"]
        rel, rel_e = d / ref_k4, np.abs(de / ref_k4)
        dm, dme = est["moments_paired"]
        nfe = summary(xr.load_dataset(nc))[protocol]["nfe"]
        lines.append(f"| {name} | {nfe} | " + " / ".join(f"{100 * v:+.1f}" for v in rel)
                     + f" (±{100 * rel_e.max():.1f}) | {np.max(np.abs(rel) / rel_e):.1f} | "
                     f"{dm[mi['e']]:+.4f} ± {dme[mi['e']]:.4f} | {dm[mi['binder']]:+.4f} ± {dme[mi['binder']]:.4f} |")
    return "\n".join(lines)


def figure(rows, path, samples: int) -> None:
    """Paired κ4 excess at ℓ = 4 and paired Δ⟨e⟩ against NFE, one line per sampler (paper protocol)."""
    from matplotlib.figure import Figure

    from skild_base import outputs
    from skild_phys.reports.evaluate import DATASET_FILE, summary

    fig = Figure(figsize=(10, 4), constrained_layout=True)
    ax_k, ax_e = fig.subplots(1, 2)
    for sampler, eta, marker in (("ancestral", None, "o"), ("ddim", None, "s"), ("heun", None, "^"),
                                 ("heun", 0.5, "v")):
        pts = []
        for name, s_, spacing, K, *rest in rows:
            nc = OUT / name / DATASET_FILE
            want = [] if eta is None else ["marginal", eta]
            if s_ != sampler or rest != want or not nc.is_file() or (sampler != "ancestral" and spacing != "log-lambda"):
                continue
            s = summary(xr.load_dataset(nc))["marginal"]
            pts.append((s["nfe"], *s["kappa4_excess"][4], *s["d_e"]))
        if not pts:
            continue
        pts.sort()
        nfe, k, ke, e, ee = (list(c) for c in zip(*pts))
        label = sampler + ("" if eta is None else f" η = {eta:g}") + ("" if sampler == "ancestral" else " (log-λ steps)")
        ax_k.errorbar(nfe, [100 * v for v in k], [100 * v for v in ke], marker=marker, capsize=3, label=label)
        ax_e.errorbar(nfe, e, ee, marker=marker, capsize=3, label=label)
    for ax, what in ((ax_k, "paired κ4 excess at ℓ = 4 (%)"), (ax_e, "paired Δ⟨e⟩ per spin")):
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per configuration")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    fig.suptitle("4x super-resolution, L = 32, models/ising32_4x: accuracy against cost "
                 f"({samples} held-out configurations)",
                 fontsize=10)
    fig.savefig(path, dpi=130, metadata=outputs.plot_metadata(path))


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="models/ising32_4x")
    ap.add_argument("--truth", default="runs/ising_sr_cpu_L32/data/test.zarr",
                    help="Held-out truth (the shipped checkpoint's: simulate --L 32 --samples 2000 --seed 1001).")
    ap.add_argument("--samples", type=int, default=1000, help="Super-resolved configurations per row.")
    ap.add_argument("--gen-samples", type=int, default=250, help="Generated configurations per generation row.")
    ap.add_argument("--variance", choices=("forward", "posterior", "split"), default=None,
                    help="Reverse-step noise of the ancestral rows [default: the checkpoint's own, forward for "
                         "super-resolution and posterior for generation].")
    ap.add_argument("--dir", default="runs/sampler_sweep", help="Where the rows' evaluations go.")
    ap.add_argument("--rows", default=None, help="Comma-separated row names, run in this order [default: all].")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--out", default=None, help="Also write the table to this Markdown file.")
    ap.add_argument("--against", default=None, metavar="ROW",
                    help="Also pair every super-resolution row with this row (e.g. ancestral-full) instead of the truth.")
    ap.add_argument("--figure", default=None, help="Also draw κ4 excess and Δ⟨e⟩ against NFE to this PNG.")
    args = ap.parse_args()
    OUT = Path(args.dir)
    by_name = {r[0]: r for r in ROWS}
    names = [r[0] for r in ROWS] if args.rows is None else args.rows.split(",")
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown rows {', '.join(unknown)}; choose from {', '.join(by_name)}")
    rows = [by_name[n] for n in names]  # run in the order given
    if not args.table_only:
        for name, sampler, spacing, K, *rest in rows:
            cmd = command(args, name, sampler, spacing, K, *rest) + (["--threads", str(args.threads)] if args.threads else [])
            print("$ " + shlex.join(cmd), flush=True)
            result = subprocess.run([sys.executable, "-m", "skild_phys"] + cmd[1:])
            if result.returncode != 0:
                raise SystemExit(f"failed (exit {result.returncode}): {shlex.join(cmd)}")
    text = table(args, rows)
    if args.against:
        text += f"\n\nPaired with `{args.against}` (row − {args.against}, same configurations and start):\n\n" \
            + against(args, rows, args.against)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.figure:
        figure(rows, args.figure, args.samples)


if __name__ == "__main__":
    main()
