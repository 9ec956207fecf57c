"""The spectrum a checkpoint carries to a larger lattice against the data's own, shell by shell.

    python benchmarks/transfer_spectrum.py                    # models/ising32_4x on the L = 128 truth
    python benchmarks/transfer_spectrum.py --truth runs/ising_sr_cpu_L32/data/test.zarr   # its own size

The SKILD process on a lattice larger than the training one uses S0 carried in lattice units
(`skild_phys.process.transfer`, docs/theory.md "Lattice units"): the per-mode variance the
process assumes the data have. This prints, per shell of the wavenumber q (per lattice spacing),
the truth's measured per-mode variance in the process's basis, the carried S0, their ratio, and
each shell's share of the total variance (one per spin for ±1 spins). Where the checkpoint's data
are critical (`scaling_exponent`), the carried S0 follows finite-size scaling at the low modes; the
last column is the lattice-unit carry alone (no exponent), the reference it replaces. On the training lattice the
same table compares the checkpoint's S0 with held-out data: the reference the carried rows are
read against. Errors: the standard error over configurations (neighbours in the store are a few
sweeps apart, so slightly low).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

EDGES = (0.0, 1e-9, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.4, 3.2, 4.5)


def table(checkpoint: str, truth: str, samples: int) -> str:
    import torch

    from skild_phys.data.adapters import LatticeStore
    from skild_phys.methods import load_trained
    from skild_phys.methods.skild import at_size

    data = LatticeStore(truth)
    n = min(samples, len(data))
    model = load_trained(checkpoint, "cpu")
    trained = model.config.H
    from skild_phys.process.transfer import transfer_spectrum

    S0_trained = model.process.S0.numpy().reshape(-1, model.config.H, model.config.W)
    model = at_size(model, data.height, data.width)
    p = model.process
    exponent = (model.config.transfer or {}).get("exponent")
    plain = transfer_spectrum(S0_trained, p.basis.name, p.basis.H, p.basis.W)[0]
    S0 = p.S0.numpy().reshape(p.basis.H, p.basis.W)
    q = p.basis.k.numpy() / p.basis.H  # wavenumber per lattice spacing
    power = np.zeros((n, p.basis.H, p.basis.W))
    for lo in range(0, n, 100):
        x = torch.as_tensor(data.get(np.arange(lo, min(lo + 100, n))), dtype=torch.float64)
        power[lo:lo + len(x)] = (p.basis.forward(x)[:, 0] ** 2).numpy()
    total = power.mean(0).sum()
    lines = [f"{checkpoint} (trained at L = {trained}) on {truth} (L = {data.height}, {n} configurations): "
             f"mean carried S0 {S0.mean():.4f} (exponent {exponent}), lattice-unit carry {plain.mean():.4f}, "
             f"mean measured {power.mean():.4f} per mode", "",
             "| q range | modes | measured | S0 | S0 / measured | share of variance: measured / S0 | "
             "lattice-unit carry / measured |",
             "|---|---|---|---|---|---|---|"]
    for a, b in zip(EDGES[:-1], EDGES[1:]):
        sel = (q >= a) & (q < b)
        if not sel.any():
            continue
        per_config = power[:, sel].mean(1)
        m, err = per_config.mean(), per_config.std(ddof=1) / np.sqrt(n)
        s0 = S0[sel].mean()
        ratio, ratio_err = s0 / m, s0 / m * err / m
        span = "0 (DC)" if b <= 1e-9 else f"[{a:g}, {b:g})"
        lines.append(f"| {span} | {int(sel.sum())} | {m:.4g} ± {err:.2g} | {s0:.4g} | {ratio:.3f} ± {ratio_err:.3f} | "
                     f"{power[:, sel].mean(0).sum() / total:.3f} / {S0[sel].sum() / total:.3f} | "
                     f"{plain[sel].mean() / m:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="models/ising32_4x")
    ap.add_argument("--truth", default="runs/transfer_L128/truth.zarr",
                    help="spin store at the size to compare (the transfer workflow's truth by default)")
    ap.add_argument("--samples", type=int, default=1000, help="configurations to measure")
    args = ap.parse_args()
    if not Path(args.truth).is_dir():
        ap.exit(2, f"{args.truth}: no such store (run `skild-phys run workflows/transfer_L128.toml` first)\n")
    print(table(args.checkpoint, args.truth, args.samples))


if __name__ == "__main__":
    main()
