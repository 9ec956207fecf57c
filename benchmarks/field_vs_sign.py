"""How far the sign projection moves a model's continuous output: the distribution of |x| per pixel.

    python benchmarks/field_vs_sign.py STORE.zarr [STORE.zarr ...]

STORE is a `superres`/`generate` output written with --keep-field.  For a model that has
learnt the ±1 spins the field ends at |x| ≈ 1 and the projection x -> sign(x) changes
nothing that matters; a field spread around 0 would make the projection decide the spins.
"""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", nargs="+")
    args = ap.parse_args()
    qs = (0.001, 0.01, 0.5, 0.99, 0.999)
    print(f"{'store':<40} {'pixels':>9} {'mean |x|':>9} {'|x|<0.5':>9} {'||x|-1|<0.1':>12}  "
          + "  ".join(f"q{q:g}" for q in qs))
    for path in args.stores:
        ds = xr.open_zarr(path)
        if "field" not in ds:
            raise SystemExit(f"{path} holds no `field`; write it with --keep-field")
        a = np.abs(ds.field.values.astype(np.float64))
        print(f"{path:<40} {a.size:>9} {a.mean():>9.4f} {(a < 0.5).mean():>9.2e} {(np.abs(a - 1) < 0.1).mean():>12.5f}  "
              + "  ".join(f"{v:.3f}" for v in np.quantile(a, qs)))


if __name__ == "__main__":
    main()
