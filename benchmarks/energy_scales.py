"""Where a store's energy fluctuations sit: the specific heat split into a coarse and a fine part.

    python benchmarks/energy_scales.py TRUTH.zarr MODEL.zarr [MODEL.zarr ...] [--label NAME ...]
                                       [--block 4] [--samples N] [--blocks 25]

The specific heat is C = β² L² Var e, e the energy per spin.  The energy of the b × b block
means (the coarse lattice a factor-b super-resolution starts from; `--block`, default 4)
carries most of it.  Per store this prints C and its two parts: the share of Var e that the
coarse energy e_b explains linearly, C_coarse = β² L² Cov(e, e_b)² / Var e_b, and the rest,
C_fine = C − C_coarse (the energy the fine texture adds given the coarse configuration), with
the standard deviation of e_b.  A model whose excess C sits in C_coarse draws coarse
configurations that vary too much; one whose excess sits in C_fine fills in the fine texture
with too much variance.  Errors: delete-one-block jackknife over contiguous blocks (the stores
are in Monte Carlo order); the deviation of a model from the truth combines both errors as
for independent ensembles.  docs/results/ising_sr_cpu.md ("What matches and what does not")
uses it for the generated configurations' specific heat.
"""

from __future__ import annotations

import argparse

import numpy as np
import zarr

from analysis.stats import block_sums, jackknife
from ising.lattice import block_mean, energy_per_spin


def energies(spins: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(e, e_b) per configuration: the nearest-neighbour energy per spin on the periodic lattice,
    and the same of the b × b block means on the coarse periodic lattice."""
    return energy_per_spin(spins), energy_per_spin(block_mean(spins.astype(np.float64), b))


def split(e: np.ndarray, e_b: np.ndarray, scale: float, n_blocks: int):
    """{name: (value, error)} of C, C_coarse, C_fine (each times `scale` = β² L²) and sd(e_b)."""
    prim = np.stack([e, e * e, e_b, e_b * e_b, e * e_b], axis=1)
    sums, counts = block_sums(prim, n_blocks)

    def fn(m):
        var_e, var_b = m[1] - m[0] ** 2, m[3] - m[2] ** 2
        cov = m[4] - m[0] * m[2]
        coarse = cov ** 2 / var_b
        return np.array([scale * var_e, scale * coarse, scale * (var_e - coarse), np.sqrt(var_b)])

    value, err = jackknife(sums, counts, fn)
    return dict(zip(("C", "C_coarse", "C_fine", "sd_e_b"), zip(value, err)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+", help="truth store first, then model stores (spin Zarr stores)")
    p.add_argument("--label", action="append", default=None, help="a name per store, in order")
    p.add_argument("--block", type=int, default=4, help="block size b of the coarse energy [default: 4]")
    p.add_argument("--samples", type=int, default=None, help="first N configurations of each store [default: all]")
    p.add_argument("--blocks", type=int, default=25, help="jackknife blocks [default: 25]")
    a = p.parse_args(argv)
    labels = a.label or [s.rstrip("/").split("/")[-1] for s in a.stores]
    if len(labels) != len(a.stores):
        p.error(f"{len(a.stores)} stores but {len(labels)} labels")
    rows = []
    for path, label in zip(a.stores, labels):
        try:
            g = zarr.open_group(path, mode="r")
            spins_array, beta = g["spins"], float(g.attrs["beta"])
        except (OSError, KeyError, zarr.errors.BaseZarrError):
            p.error(f"{path}: not a spin store (no readable 'spins' array and 'beta' attribute)")
        spins = np.asarray(spins_array[: a.samples])
        L = spins.shape[-1]
        if L % a.block:
            p.error(f"{path}: L = {L} is not a multiple of --block {a.block}")
        e, e_b = energies(spins, a.block)
        rows.append((label, len(e), split(e, e_b, beta ** 2 * L * L, a.blocks)))
    truth = rows[0][2]
    print(f"energy fluctuations by scale (coarse: the {a.block}x{a.block} block means); "
          f"deviation from {rows[0][0]} in sigma of both errors combined")
    head = f"{'store':22s} {'n':>5s}  {'C':>18s}  {'C_coarse':>18s}  {'C_fine':>18s}  {'sd(e_b)':>18s}"
    print(head)
    print("-" * len(head))
    for label, n, r in rows:
        cells = []
        for key in ("C", "C_coarse", "C_fine", "sd_e_b"):
            v, s = r[key]
            if r is truth:
                cells.append(f"{v:8.4f}({s:.4f})   ")
            else:
                z = (v - truth[key][0]) / np.hypot(s, truth[key][1])
                cells.append(f"{v:8.4f}({s:.4f}) {z:+4.1f}σ")
        print(f"{label:22s} {n:5d}  " + "  ".join(f"{c:>18s}" for c in cells))


if __name__ == "__main__":
    main()
