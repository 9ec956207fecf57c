"""Two-point function G(r) along the lattice axes on the torus.

G(r) = <s(i, j) s(i+r, j)>/2 + <s(i, j) s(i, j+r)>/2 - <s>^2 (connected), averaged over
all sites and samples, r = 0 ... L//2 (G(L - r) = G(r) on the torus).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# As in analysis.cumulants: vectorised per-sample sums, one thread per sample.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _pair_means_kernel(x, out, site):
    n, L, _ = x.shape
    R = out.shape[1]
    norm = 1.0 / (L * L)
    for s in prange(n):
        f = np.empty((L, 2 * L))
        total = 0.0
        for i in range(L):
            for j in range(L):
                v = np.float64(x[s, i, j])
                f[i, j] = v
                f[i, j + L] = v
                total += v
        site[s] = total * norm
        for r in range(R):
            acc = 0.0
            for i in range(L):
                i2 = i + r
                if i2 >= L:
                    i2 -= L
                for j in range(L):
                    acc += f[i, j] * (f[i2, j] + f[i, j + r])
            out[s, r] = 0.5 * acc * norm


def pair_means(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample site mean (n,) and axis-averaged pair means <s(x) s(x+r)>, r = 0..L//2, shape (n, L//2+1)."""
    x = np.ascontiguousarray(x)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"configurations must have shape (n, L, L), got {x.shape}")
    n, L, _ = x.shape
    out = np.empty((n, L // 2 + 1))
    site = np.empty(n)
    _pair_means_kernel(x, out, site)
    return site, out


def G_from_means(site: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Connected G(r) from the mean site value and the mean pair products (last axis r)."""
    return pairs - np.asarray(site)[..., None] ** 2
