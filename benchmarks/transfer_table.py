"""The table of docs/results/transfer_L128.md from the transfer workflow's correlators Dataset.

    python benchmarks/transfer_table.py [runs/transfer_L128/kappa4.nc]

Per source (truth first): paired κ4 excess κ4(model)/κ4(truth, same configurations) − 1 at
each ℓ, the κ4 exponent fitted over the Dataset's window (4 ≤ ℓ ≤ 32 in the workflow) with
its deviation from the truth's, paired Δ⟨e⟩ and ΔU4, and the largest paired |ΔG(r)|/σ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.moments import MOMENT_NAMES
from skild_phys.reports.evaluate import kappa4_excess

SHOW = (1, 2, 4, 8, 16, 24, 32)


def table(path) -> str:
    ds = xr.load_dataset(path)
    excess, err = kappa4_excess(ds)
    sizes = [int(l) for l in ds.patch_size.values]
    cols = [l for l in SHOW if l in sizes]
    mi = {name: i for i, name in enumerate(MOMENT_NAMES)}
    lo, hi = (float(v) for v in np.ravel(ds.attrs.get("kappa4_window")))
    window = f"{lo:g}–{hi:g}"
    lines = [f"| source | n | paired κ4 excess %, ℓ = {' / '.join(map(str, cols))} | worst \\|excess\\|/σ (ℓ) | "
             f"κ4 exponent, ℓ = {window} | vs truth | Δ⟨e⟩ paired | ΔU4 paired | worst paired \\|ΔG(r)\\|/σ (r) |",
             "|---" * 9 + "|"]
    t_exp, t_err = float(ds.kappa4_exponent.values[0]), float(ds.kappa4_exponent_err.values[0])
    for s, label in enumerate(ds.source.values):
        n = int(ds.n_samples.values[s])
        expo, expo_err = float(ds.kappa4_exponent.values[s]), float(ds.kappa4_exponent_err.values[s])
        if s == 0:
            lines.append(f"| {label} | {n} | — | — | {expo:.3f} ± {expo_err:.3f} | — | — | — | — |")
            continue
        ex, ee = excess.values[s], err.values[s]
        if not np.isfinite(ex).all():
            paired = ["unpaired"] * 2
            de = db = gmax = "—"
        else:
            idx = {l: sizes.index(l) for l in cols}
            paired = [" / ".join(f"{100 * ex[idx[l]]:+.1f}±{100 * ee[idx[l]]:.1f}" for l in cols)]
            z = np.abs(ex / ee)
            worst = int(np.nanargmax(z))
            paired.append(f"{z[worst]:.1f} (ℓ = {sizes[worst]})")
            mp, me = ds.moments_paired.values[s], ds.moments_paired_err.values[s]
            de = f"{mp[mi['e']]:+.4f} ± {me[mi['e']]:.4f}"
            db = f"{mp[mi['binder']]:+.4f} ± {me[mi['binder']]:.4f}"
            gz = np.abs(ds.G_paired.values[s] / ds.G_paired_err.values[s])
            gz[~np.isfinite(gz)] = 0
            r = int(np.argmax(gz))
            gmax = f"{gz[r]:.1f} (r = {int(ds.r.values[r])})"
        dev = (expo - t_exp) / np.hypot(expo_err, t_err)
        lines.append(f"| {label} | {n} | {paired[0]} | {paired[1]} | {expo:.3f} ± {expo_err:.3f} | {dev:+.1f}σ | "
                     f"{de} | {db} | {gmax} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", default="runs/transfer_L128/kappa4.nc",
                        help="correlators Dataset of the transfer workflow [default: %(default)s]")
    args = parser.parse_args()
    if not Path(args.dataset).is_file():
        parser.exit(2, f"{args.dataset}: no such file (run `skild-phys run workflows/transfer_L128.toml` first)\n")
    print(table(args.dataset))
