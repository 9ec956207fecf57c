"""Two checkpoints' super-resolution paired on the same truth configurations: the specific-heat
ratio Var e(model) / Var e(truth) of each, and their difference, jackknifed jointly.

    python benchmarks/paired_checkpoints.py EVAL_A EVAL_B --truth TEST.zarr [--blocks 25]

EVAL_A and EVAL_B are `skild-phys evaluate` directories made with the same truth store, sample
count and seed (so the same truth configurations and starts), differing in the checkpoint. For
each super-resolution protocol both evaluated, the table gives each model's C ratio and ⟨e⟩
offset and A − B, with errors from a delete-one-block jackknife over contiguous blocks of
configurations (the same blocks for A, B and the truth, so what they share cancels).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.stats import block_sums, jackknife
from ising.model import ISING


def energies(store) -> tuple[np.ndarray, np.ndarray]:
    """(energy per spin, truth index) of every configuration of a super-resolution store."""
    ds = xr.open_zarr(store)
    return ISING.observables(ds.spins.values.astype(np.int8))["energy"], ds.source_index.values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--truth", required=True)
    ap.add_argument("--blocks", type=int, default=25)
    args = ap.parse_args()
    found = [p for p in ("marginal", "lowres")
             if all((Path(d) / f"model_{p}.zarr").is_dir() for d in (args.a, args.b))]
    if not found:
        raise SystemExit(f"{args.a} and {args.b} share no super-resolution store (model_marginal.zarr, model_lowres.zarr)")
    truth = xr.open_zarr(args.truth).spins
    print("| protocol | C ratio A | C ratio B | A − B | Δ⟨e⟩ A | Δ⟨e⟩ B | ⟨e⟩ A − B |\n|---|---|---|---|---|---|---|")
    for protocol in found:
        (ea, ia), (eb, ib) = (energies(Path(d) / f"model_{protocol}.zarr") for d in (args.a, args.b))
        if not np.array_equal(ia, ib):
            raise SystemExit(f"{protocol}: the two evaluations super-resolved different truth configurations")
        et = ISING.observables(truth.values[ia].astype(np.int8))["energy"]
        # primitives: e and e² of A, B and the truth, per configuration
        prim = np.stack([ea, ea**2, eb, eb**2, et, et**2], axis=1)
        sums, counts = block_sums(prim, args.blocks)

        def stats(m):
            var = m[1::2] - m[0::2] ** 2
            ra, rb = var[0] / var[2], var[1] / var[2]
            da, db = m[0] - m[4], m[2] - m[4]
            return np.array([ra, rb, ra - rb, da, db, da - db])

        v, e = jackknife(sums, counts, stats)
        cells = [f"{x:.3f} ± {s:.3f}" for x, s in zip(v[:3], e[:3])] + [f"{x:+.4f} ± {s:.4f}" for x, s in zip(v[3:], e[3:])]
        print(f"| {protocol} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
