"""Wolff single-cluster updates for the 2D Ising model (Wolff 1989), compiled with Numba.

Square L x L lattice, periodic boundaries, H = -J sum_<ij> s_i s_j.  A cluster grows from a
random seed site over aligned neighbours, each bond added with p_add = 1 - exp(-2 beta J);
the whole cluster is flipped.  Spins are flipped as they join the cluster, so "aligned with
the seed's old value" also means "not yet in the cluster".  tests/naive.py holds the
plain-Python twin that reproduces these kernels bit for bit.

All kernels act on a stack of independent chains (C, L, L) and run them in parallel
(`prange` over chains).  A chain's trajectory depends only on its own RNG state, so results
are identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ising.rng import below, xoshiro_next


@njit(inline="always")
def _try_add(flat, n, old, threshold, stack, top, s0, s1, s2, s3):
    """Offer neighbour n to the cluster: joins (and flips) if aligned with `old` and u < p_add.

    Branch-free on purpose: both conditions are coin flips a branch predictor cannot learn.
    A random number is drawn for every neighbour, aligned or not.
    """
    r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    joins = np.int64(flat[n] == old) & np.int64(r < threshold)
    flat[n] = flat[n] * np.int8(1 - 2 * joins)
    stack[top] = n
    return top + joins, s0, s1, s2, s3


@njit(cache=True)
def cluster_updates(spins, state, threshold, n_updates, stack):
    """Apply n_updates Wolff cluster flips to one lattice in place; returns spins flipped.

    spins: int8 (L, L), C-contiguous; state: uint64 (4,) xoshiro state, advanced in place;
    threshold: uint64 encoding p_add; stack: int32 work array of size L*L.
    Neighbours are offered in the order up, down, left, right; the frontier is a LIFO stack.
    """
    L = spins.shape[0]
    flat = spins.reshape(L * L)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    flipped = 0
    for _ in range(n_updates):
        r, s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
        site = below(r, L * L)
        old = flat[site]
        flat[site] = -old
        stack[0] = site
        top = 1
        size = 1
        while top > 0:
            top -= 1
            i = stack[top]
            y = i // L
            x = i - y * L
            row = i - x
            before = top
            top, s0, s1, s2, s3 = _try_add(flat, i - L if y > 0 else i + L * (L - 1), old, threshold, stack, top,
                                           s0, s1, s2, s3)
            top, s0, s1, s2, s3 = _try_add(flat, i + L if y < L - 1 else x, old, threshold, stack, top,
                                           s0, s1, s2, s3)
            top, s0, s1, s2, s3 = _try_add(flat, i - 1 if x > 0 else row + L - 1, old, threshold, stack, top,
                                           s0, s1, s2, s3)
            top, s0, s1, s2, s3 = _try_add(flat, i + 1 if x < L - 1 else row, old, threshold, stack, top,
                                           s0, s1, s2, s3)
            size += top - before
        flipped += size
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return flipped


@njit(cache=True)
def energy_magnetization(spins, J):
    """Total energy E = -J sum_<ij> s_i s_j (right and down bonds) and magnetisation M = sum s."""
    L = spins.shape[0]
    bonds = 0
    M = 0
    for y in range(L):
        yd = y + 1 if y < L - 1 else 0
        for x in range(L):
            xr = x + 1 if x < L - 1 else 0
            s = np.int64(spins[y, x])
            bonds += s * (spins[y, xr] + spins[yd, x])
            M += s
    return -J * bonds, M


@njit(parallel=True, cache=True)
def thermalize(spins, states, threshold, target_flips):
    """Run every chain until it has flipped >= target_flips spins.

    Returns per-chain (updates, late_updates, late_flips), the last two counted once a chain
    has passed target_flips / 2, for a mean cluster size free of the initial transient.
    """
    C, L = spins.shape[0], spins.shape[1]
    updates = np.zeros(C, dtype=np.int64)
    late_updates = np.zeros(C, dtype=np.int64)
    late_flips = np.zeros(C, dtype=np.int64)
    for c in prange(C):
        stack = np.empty(L * L, dtype=np.int32)
        total = 0
        while total < target_flips:
            f = cluster_updates(spins[c], states[c], threshold, 1, stack)
            total += f
            updates[c] += 1
            if total > target_flips // 2:
                late_updates[c] += 1
                late_flips[c] += f
    return updates, late_updates, late_flips


@njit(parallel=True, cache=True)
def run_rounds(spins, states, threshold, n_between, J, out_spins, out_energy, out_mag, out_flips):
    """Advance every chain n_rounds times by exactly n_between cluster updates, recording each round.

    The number of updates between records is fixed in advance, so the recorded ensemble is
    unbiased.  n_rounds = out_energy.shape[0].  out_energy, out_mag: float64 (n_rounds, C),
    per spin; out_flips: int64 (n_rounds, C), spins flipped during each round.  out_spins:
    int8 (n_rounds, C, L, L) receives the configurations, or has zero rounds to skip them.
    """
    C, L = spins.shape[0], spins.shape[1]
    n_rounds = out_energy.shape[0]
    keep = out_spins.shape[0] > 0
    for c in prange(C):
        stack = np.empty(L * L, dtype=np.int32)
        for r in range(n_rounds):
            out_flips[r, c] = cluster_updates(spins[c], states[c], threshold, n_between, stack)
            E, M = energy_magnetization(spins[c], J)
            out_energy[r, c] = E / (L * L)
            out_mag[r, c] = M / (L * L)
            if keep:
                out_spins[r, c] = spins[c]
