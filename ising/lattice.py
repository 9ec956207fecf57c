"""Vectorised per-sample observables and block averages of periodic square-lattice configurations."""

from __future__ import annotations

import numpy as np


def energy_per_spin(spins: np.ndarray, J: float = 1.0) -> np.ndarray:
    """e = -J sum_<ij> s_i s_j / N over right and down bonds, for each lattice of a batch (n, H, W).

    Integer spins are summed exactly; a real field (e.g. block means) in float64."""
    s = np.asarray(spins)
    s = s.astype(np.int64 if np.issubdtype(s.dtype, np.integer) else np.float64)
    bonds = (s * (np.roll(s, -1, axis=1) + np.roll(s, -1, axis=2))).sum(axis=(1, 2))
    return -J * bonds / (s.shape[1] * s.shape[2])


def block_mean(x, f: int):
    """Average over non-overlapping f x f blocks of the last two axes (NumPy arrays or torch tensors)."""
    H, W = x.shape[-2:]
    if H % f or W % f:
        raise ValueError(f"grid {(H, W)} is not divisible by the factor {f}")
    return x.reshape(x.shape[:-2] + (H // f, f, W // f, f)).mean(axis=(-3, -1))
