"""Per-chain random numbers: xoshiro256** (Blackman & Vigna 2018) inside Numba kernels.

Each Markov chain owns a 4-word uint64 state derived from (seed, chain) through NumPy's
SeedSequence, so a chain's random stream depends only on the run seed and the chain index —
never on the thread that runs it or on where a run was interrupted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_U64 = np.uint64


def chain_states(seed: int, n_chains: int) -> np.ndarray:
    """Initial xoshiro256** states, shape (n_chains, 4) uint64, one independent stream per chain."""
    states = np.empty((n_chains, 4), dtype=np.uint64)
    for chain in range(n_chains):
        words = np.random.SeedSequence(seed, spawn_key=(chain,)).generate_state(4, dtype=np.uint64)
        if not words.any():  # the all-zero state is the generator's one fixed point
            words[0] = 1
        states[chain] = words
    return states


def probability_threshold(p: float) -> np.uint64:
    """uint64 threshold t with P(u < t) = p for u uniform on [0, 2^64) (to 2^-64)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p} outside [0, 1]")
    return np.uint64(min(int(p * 2.0**64), 2**64 - 1))


@njit(inline="always")
def _rotl(x, k):
    return (x << _U64(k)) | (x >> _U64(64 - k))


@njit(inline="always")
def xoshiro_next(s0, s1, s2, s3):
    """One xoshiro256** step: returns (output, new s0, s1, s2, s3)."""
    result = _rotl(s1 * _U64(5), 7) * _U64(9)
    t = s1 << _U64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@njit(inline="always")
def below(r, n):
    """Map a uniform uint64 r to an integer in [0, n) (Lemire's multiply-shift, n < 2^32)."""
    return np.int64(((r >> _U64(32)) * _U64(n)) >> _U64(32))
