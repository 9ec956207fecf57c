"""Nearest-neighbour order against distance to the array seam: where in the lattice a model errs.

A periodic L x L lattice has no edge, but an array holding it does: rows L-1 and 0 (and
columns L-1 and 0) are neighbours across the seam.  A process or network that is not
translation invariant on the torus (the DCT basis treats the seam as a reflecting wall)
leaves its mark there.  Bond row i joins rows i and i+1 (mod L); its distance to the seam
is delta(i) = min(i + 1, L - 1 - i): delta = 0 is the seam bond, delta = L/2 the middle.
Rows and columns are averaged, so each delta class holds the bonds of both orientations.
"""

from __future__ import annotations

import numpy as np


def seam_distance(L: int) -> np.ndarray:
    """delta(i) = min(i + 1, L - 1 - i) of bond row i = 0..L-1 (bond i joins rows i and i+1 mod L)."""
    i = np.arange(L)
    return np.minimum(i + 1, L - 1 - i)


def bond_rows(x: np.ndarray) -> np.ndarray:
    """Per-sample mean product of neighbours across bond row i, rows and columns averaged: (n, L).

    out[s, i] = mean_j [x(i, j) x(i+1, j) + x(j, i) x(j, i+1)] / 2, indices mod L.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"configurations must have shape (n, L, L), got {x.shape}")
    down = (x * np.roll(x, -1, axis=1)).mean(axis=2)  # bond between rows i and i+1
    right = (x * np.roll(x, -1, axis=2)).mean(axis=1)  # bond between columns i and i+1
    return 0.5 * (down + right)


def fold_to_seam_distance(rows: np.ndarray) -> np.ndarray:
    """Average the last axis (bond rows i = 0..L-1) into seam-distance classes delta = 0..L//2."""
    L = rows.shape[-1]
    delta = seam_distance(L)
    classes = np.arange(L // 2 + 1)
    weights = (delta[None, :] == classes[:, None]).astype(np.float64)  # (classes, L)
    weights /= weights.sum(axis=1, keepdims=True)
    return rows @ weights.T


def seam_profile(x: np.ndarray) -> np.ndarray:
    """Per-sample neighbour product by seam distance delta = 0..L//2, shape (n, L//2 + 1)."""
    return fold_to_seam_distance(bond_rows(x))
