"""Correlator throughput: kappa4 at 7 patch sizes + G(r) + moments for 10,000 L = 128 configurations.

Times `ising.measure.correlators` (Numba kernels, streaming from the Zarr store,
blocked jackknife and fits included; spectrum off) against a straightforward NumPy
implementation with `np.roll` that computes the same primitives from the same store, each in
its own process so that peak memory (max RSS) is measured separately.  Also checks that the
two agree.

    python benchmarks/bench_correlators.py [--store PATH] [--samples 10000] [--L 128]

Without --store a critical Ising store is simulated first (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = [1, 2, 4, 8, 16, 32, 64]


def numpy_reference(path: str, sizes, chunk: int = 250) -> dict:
    """Per-sample corner and pair means with np.roll, then the same block jackknife."""
    import xarray as xr

    from analysis.cumulants import kappa4_from_means
    from analysis.moments import moment_estimates, moment_primitives
    from analysis.observables import block_edges
    from analysis.stats import jackknife

    ds = xr.open_zarr(path)
    n, L = ds.sizes["sample"], ds.sizes["x"]
    corner = np.empty((n, len(sizes), 15))
    pairs = np.empty((n, L // 2 + 1))
    site = np.empty(n)
    for start in range(0, n, chunk):
        x = ds.spins[start:start + chunk].values.astype(np.float64)
        s = slice(start, start + len(x))
        site[s] = x.mean(axis=(1, 2))
        for p, l in enumerate(sizes):
            a, b, c = x, np.roll(x, -l, axis=1), np.roll(x, -l, axis=2)
            d = np.roll(b, -l, axis=2)
            ab, cd = a * b, c * d
            products = [a, b, c, d, ab, a * c, a * d, b * c, b * d, cd, ab * c, ab * d, a * cd, b * cd, ab * cd]
            corner[s, p] = np.stack([q.mean(axis=(1, 2)) for q in products], axis=1)
        for r in range(L // 2 + 1):
            pairs[s, r] = (x * (np.roll(x, -r, axis=1) + np.roll(x, -r, axis=2))).mean(axis=(1, 2)) / 2
    edges = block_edges(n, ds.attrs.get("chains", 1), ds.attrs.get("tau_int_samples", 0.5))
    counts = np.diff(edges)

    def sums(values):
        return np.add.reduceat(values, edges[:-1], axis=0)

    k4 = jackknife(sums(corner), counts, kappa4_from_means)
    G = jackknife(sums(np.concatenate([site[:, None], pairs], axis=1)), counts, lambda m: m[1:] - m[0] ** 2)
    prim = moment_primitives(-2.0 * pairs[:, 1], site)
    mom = jackknife(sums(prim), counts, lambda m: moment_estimates(m, float(ds.attrs.get("beta", 1.0)), L * L))
    return {"kappa4": k4[0].tolist(), "kappa4_err": k4[1].tolist(), "G": G[0].tolist(), "binder": float(mom[0][4])}


def ours(path: str, sizes) -> dict:
    """The library path used by `skild-phys correlators --no-spectrum`."""
    from ising.measure import correlators

    ds = correlators([path], sizes=sizes, basis=None, progress=False)
    return {"kappa4": ds.kappa4.values[0].tolist(), "kappa4_err": ds.kappa4_err.values[0].tolist(),
            "G": ds.G.values[0].tolist(), "binder": float(ds.binder.values[0])}


def worker(which: str, path: str) -> None:
    """Run one implementation (after a small warm-up that compiles or caches), print JSON."""
    fn = ours if which == "ours" else numpy_reference
    if which == "ours":
        from analysis.correlation import pair_means
        from analysis.cumulants import corner_means

        warm = np.ones((2, 8, 8), dtype=np.int8)
        corner_means(warm, [1]), pair_means(warm)
    t0 = time.perf_counter()
    result = fn(path, SIZES)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, **result}))


def run_worker(which: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", which, "--store", path],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="existing spin store (default: simulate one)")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--L", type=int, default=128)
    parser.add_argument("--worker", choices=["ours", "numpy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.store)
        return

    import numba

    tmp = None
    path = args.store
    if path is None:
        from ising.simulate import SimulationParams, run_simulation

        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, f"ising{args.L}.zarr")
        print(f"simulating {args.samples} configurations of L={args.L} at beta_c (not timed) ...", flush=True)
        run_simulation(path, SimulationParams(L=args.L, n_samples=args.samples, seed=2026), progress=False,
                       log=lambda m: None)
    print(f"store {path}; {numba.config.NUMBA_NUM_THREADS} threads; patch sizes {SIZES}; "
          f"G(r) for r = 0..L/2; moments; blocked jackknife", flush=True)
    fast = run_worker("ours", path)
    slow = run_worker("numpy", path)
    print(f"\n{'implementation':<34}{'seconds':>10}{'peak RSS (MB)':>16}")
    print(f"{'skild-phys (Numba, streaming)':<34}{fast['seconds']:>10.2f}{fast['peak_mb']:>16.0f}")
    print(f"{'NumPy np.roll reference':<34}{slow['seconds']:>10.2f}{slow['peak_mb']:>16.0f}")
    print(f"speed-up {slow['seconds'] / fast['seconds']:.1f}x")
    diff = max(np.max(np.abs(np.subtract(fast[k], slow[k]))) for k in ("kappa4", "kappa4_err", "G", "binder"))
    print(f"largest difference between the two (kappa4, errors, G, U4): {diff:.1e}")
    print("kappa4(l): " + ", ".join(f"{l}: {v:+.4f}" for l, v in zip(SIZES, fast["kappa4"])))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
