"""How far the sign projection moves a model's continuous output: the distribution of |x| per pixel.

    python benchmarks/field_vs_sign.py STORE.zarr [STORE.zarr ...]

STORE is a `superres`/`generate` output written with --keep-field.  For a model that has
learnt the ±1 spins the field ends at |x| ≈ 1 and the projection x -> sign(x) changes
nothing that matters; a field spread around 0 would make the projection decide the spins.
The second table pairs each output with its truth configuration (the store's `source`):
the magnetisation of the field and of its signs against the truth's, which shows whether the
projection x -> sign(x), dividing by |x| < 1, inflates the order the field carries.
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
    spread = [f"{'store':<40} {'pixels':>9} {'mean |x|':>9} {'|x|<0.5':>9} {'||x|-1|<0.1':>12}  "
              + "  ".join(f"q{q:g}" for q in qs)]
    order = [f"\n{'store':<40} {'<|m|> truth':>12} {'field/truth':>12} {'sign/truth':>11} "
             f"{'<m_field m_truth>/<m_truth^2>':>30}"]
    for path in args.stores:
        ds = xr.open_zarr(path)
        if "field" not in ds:
            raise SystemExit(f"{path} holds no `field`; write it with --keep-field")
        field = ds.field.values.astype(np.float64)
        a = np.abs(field)
        spread.append(f"{path:<40} {a.size:>9} {a.mean():>9.4f} {(a < 0.5).mean():>9.2e} "
                      f"{(np.abs(a - 1) < 0.1).mean():>12.5f}  " + "  ".join(f"{v:.3f}" for v in np.quantile(a, qs)))
        truth = xr.open_zarr(ds.attrs["source"]).spins.values[ds.source_index.values].astype(np.float64)
        m_t, m_f, m_s = (x.mean(axis=(1, 2)) for x in (truth, field, np.sign(field)))
        a_t = np.abs(m_t).mean()
        order.append(f"{path:<40} {a_t:>12.4f} {np.abs(m_f).mean() / a_t:>12.4f} {np.abs(m_s).mean() / a_t:>11.4f} "
                     f"{(m_f * m_t).mean() / (m_t ** 2).mean():>30.4f}")
    print("\n".join(spread + order))


if __name__ == "__main__":
    main()
