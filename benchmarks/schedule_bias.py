"""Why saves must follow a fixed number of cluster updates: the state-dependent rule's bias.

Two save rules on the same Wolff chains at beta_c, compared with Kaufman's exact energy:
  fixed  - save after a fixed number of cluster updates (what `skild-phys simulate` does);
  flips  - save as soon as the spins flipped since the last save reach S * L^2 (a stopping
           rule that depends on the state: the save tends to follow a large cluster).
Also the average over every update (no selection), which is unbiased.

    python benchmarks/schedule_bias.py --L 32 --samples 20000
"""

from __future__ import annotations

import argparse

import numpy as np

from analysis.stats import block_sums, jackknife
from ising import wolff
from ising.exact import BETA_C, kaufman_energy, p_add
from ising.rng import chain_states, probability_threshold


def run(L: int, samples: int, sweeps: float, seed: int):
    thr = probability_threshold(p_add(BETA_C))
    spins = np.ones((1, L, L), dtype=np.int8)
    state = chain_states(seed, 1)
    stack = np.empty(L * L, dtype=np.int32)
    _, late_u, late_f = wolff.thermalize(spins, state, thr, 500 * L * L)
    mean_cluster = late_f.sum() / late_u.sum()
    n_fixed = max(1, round(sweeps * L * L / mean_cluster))
    lattice = spins[0]
    fixed, by_flips, every = [], [], []
    acc, count = 0, 0
    while len(fixed) < samples or len(by_flips) < samples:
        acc += wolff.cluster_updates(lattice, state[0], thr, 1, stack)
        count += 1
        e = wolff.energy_magnetization(lattice, 1.0)[0] / (L * L)
        every.append(e)
        if count % n_fixed == 0 and len(fixed) < samples:
            fixed.append(e)
        if acc >= sweeps * L * L and len(by_flips) < samples:
            by_flips.append(e)
            acc = 0
    return np.array(fixed), np.array(by_flips), np.array(every)


def mean_err(x, blocks=50):
    sums, counts = block_sums(x[:, None], blocks)
    v, err = jackknife(sums, counts, lambda m: m[0])
    return float(v), float(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--sweeps-between", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    exact = kaufman_energy(args.L, BETA_C)
    fixed, by_flips, every = run(args.L, args.samples, args.sweeps_between, args.seed)
    print(f"L={args.L}, beta_c, {args.samples} saved samples per rule, {args.sweeps_between} sweeps apart")
    print(f"{'rule':<34}{'<e>':>12}{'error':>10}{'deviation':>12}")
    print(f"{'Kaufman exact':<34}{exact:>12.6f}")
    for name, x in (("fixed number of cluster updates", fixed), ("flipped spins reach S*L^2", by_flips),
                    ("every cluster update", every)):
        v, err = mean_err(x)
        print(f"{name:<34}{v:>12.6f}{err:>10.6f}{(v - exact) / err:>+11.1f}s")


if __name__ == "__main__":
    main()
