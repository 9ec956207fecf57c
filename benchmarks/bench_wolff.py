"""Wolff sampler throughput: skild-phys vs mcising (Rust core), in the same run.

Prints spins flipped per second and decorrelated configurations per second (configurations
spaced 2 sweeps apart, a sweep = L^2 flipped spins) at L = 64, 128, 256, on one thread and on
all cores, then times the end-to-end `skild-phys simulate --L 128 --samples 10000` command.

    pip install mcising   # optional peer (`pip install -e '.[bench]'`)
    python benchmarks/bench_wolff.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numba
import numpy as np

from ising import wolff
from ising.exact import BETA_C, T_C, p_add
from ising.rng import chain_states, probability_threshold

THRESHOLD = probability_threshold(p_add(BETA_C))


def ours(L: int, threads: int, seconds: float) -> float:
    """Spins flipped per second by run_rounds with `threads` threads (4 chains per thread)."""
    numba.set_num_threads(threads)
    C = 4 * threads
    spins = np.ones((C, L, L), dtype=np.int8)
    states = chain_states(0, C)
    _, late_updates, late_flips = wolff.thermalize(spins, states, THRESHOLD, 100 * L * L)
    per_round = max(1, round(2 * L * L * late_updates.sum() / late_flips.sum()))  # ~2 sweeps
    n_rounds = 1
    while True:
        e, m = np.empty((n_rounds, C)), np.empty((n_rounds, C))
        flips = np.empty((n_rounds, C), dtype=np.int64)
        t0 = time.perf_counter()
        wolff.run_rounds(spins, states, THRESHOLD, per_round, 1.0, np.empty((0, C, L, L), np.int8), e, m, flips)
        dt = time.perf_counter() - t0
        if dt > seconds:
            return flips.sum() / dt
        n_rounds *= 2


def mcising_rate(L: int, threads: int, seconds: float) -> float | None:
    """Spins flipped per second by mcising's Wolff, one simulation per thread (GIL released)."""
    try:
        from mcising import IsingSimulation
    except ImportError:
        return None
    sims = [IsingSimulation(L, 1.0, 0.0, 0.0, 0.0, 1 + i, algorithm="wolff") for i in range(threads)]
    for sim in sims:
        flipped = 0
        while flipped < 100 * L * L:
            flipped += sim.sweep(1000, temperature=T_C)[0]
    batch = 1000
    while True:
        counts = [0] * threads

        def work(i):
            counts[i] = sims[i].sweep(batch, temperature=T_C)[0]

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dt = time.perf_counter() - t0
        if dt > seconds:
            return sum(counts) / dt
        batch *= 2


def end_to_end(L: int = 128, samples: int = 10000) -> float:
    """Wall time of the simulate command (JIT cache warmed by a first tiny run)."""
    tmp = tempfile.mkdtemp()
    try:
        base = [sys.executable, "-m", "skild_phys", "simulate", "--quiet", "--overwrite"]
        subprocess.run(base + ["--L", "8", "--samples", "16", "--out", f"{tmp}/warm.zarr"], check=True,
                       capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(base + ["--L", str(L), "--samples", str(samples), "--out", f"{tmp}/run.zarr"], check=True,
                       capture_output=True)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed interval per cell")
    ap.add_argument("--sizes", default="64,128,256")
    args = ap.parse_args()
    cores = numba.config.NUMBA_NUM_THREADS
    print(f"machine: {os.cpu_count()} CPUs, numba threads available: {cores}")
    header = f"{'L':>5} {'threads':>7} {'skild-phys spins/s':>19} {'mcising spins/s':>16} {'ratio':>6} " \
             f"{'skild-phys conf/s':>18} {'mcising conf/s':>15}"
    print(header)
    print("-" * len(header))
    one_thread = {}
    for L in (int(s) for s in args.sizes.split(",")):
        for threads in sorted({1, cores}):
            r_ours = ours(L, threads, args.seconds)
            r_peer = mcising_rate(L, threads, args.seconds)
            if threads == 1:
                one_thread[L] = r_ours
            per_conf = 2.0 * L * L
            peer = f"{r_peer:16.3g}" if r_peer else f"{'n/a':>16}"
            ratio = f"{r_ours / r_peer:6.2f}" if r_peer else f"{'-':>6}"
            peer_conf = f"{r_peer / per_conf:15.1f}" if r_peer else f"{'n/a':>15}"
            print(f"{L:>5} {threads:>7} {r_ours:19.3g} {peer} {ratio} {r_ours / per_conf:18.1f} {peer_conf}")
            if threads > 1:
                print(f"{'':>5} {'':>7} parallel speed-up over one thread: {r_ours / one_thread[L]:.2f}x")
    wall = end_to_end()
    print(f"\n`skild-phys simulate --L 128 --samples 10000` (2 sweeps apart, Zarr write included): {wall:.1f} s wall")


if __name__ == "__main__":
    main()
