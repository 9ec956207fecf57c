"""Slow, obviously correct twins of the fast kernels (plain Python / NumPy)."""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK64


class Xoshiro256:
    """xoshiro256** on Python integers, transcribed from the reference C code."""

    def __init__(self, state):
        self.s = [int(v) for v in state]

    def next(self) -> int:
        s0, s1, s2, s3 = self.s
        result = (_rotl((s1 * 5) & MASK64, 7) * 9) & MASK64
        t = (s1 << 17) & MASK64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        self.s = [s0, s1, s2, s3]
        return result


def wolff_update(spins: np.ndarray, rng: Xoshiro256, threshold: int) -> int:
    """One Wolff cluster flip with an explicit cluster set; returns the cluster size.

    Neighbours are visited up, down, left, right, one random number drawn for each, and the
    frontier is a LIFO stack: the random numbers are consumed as in the compiled kernel.
    """
    L = spins.shape[0]
    site = ((rng.next() >> 32) * (L * L)) >> 32
    y0, x0 = divmod(site, L)
    old = spins[y0, x0]
    cluster = {(y0, x0)}
    stack = [(y0, x0)]
    while stack:
        y, x = stack.pop()
        for ny, nx in (((y - 1) % L, x), ((y + 1) % L, x), (y, (x - 1) % L), (y, (x + 1) % L)):
            u = rng.next()
            if (ny, nx) not in cluster and spins[ny, nx] == old and u < threshold:
                cluster.add((ny, nx))
                stack.append((ny, nx))
    for y, x in cluster:
        spins[y, x] = -old
    return len(cluster)


def energy_magnetization(spins: np.ndarray, J: float = 1.0) -> tuple[float, int]:
    """E = -J sum over right and down bonds of s_i s_j, M = sum s (np.roll)."""
    s = spins.astype(np.int64)
    E = -J * (s * (np.roll(s, -1, axis=1) + np.roll(s, -1, axis=0))).sum()
    return E, int(s.sum())


def seam_profile(x: np.ndarray) -> np.ndarray:
    """Neighbour products by distance to the array seam, with explicit loops over every bond."""
    n, L, _ = x.shape
    sums = np.zeros((n, L // 2 + 1))
    counts = np.zeros(L // 2 + 1)
    for i in range(L):  # bond row i joins rows (columns) i and i + 1 mod L
        delta = min(i + 1, L - 1 - i)
        counts[delta] += 2 * L
        for s in range(n):
            for j in range(L):
                sums[s, delta] += x[s, i, j] * x[s, (i + 1) % L, j] + x[s, j, i] * x[s, j, (i + 1) % L]
    return sums / counts


def _window_offsets(window: int):
    """(offset, weight) pairs of a periodic window of `window` sites centred on a site (even: half-weight ends)."""
    if window % 2:
        half = (window - 1) // 2
        return [(d, 1.0) for d in range(-half, half + 1)]
    half = window // 2
    return [(d, 0.5 if abs(d) == half else 1.0) for d in range(-half, half + 1)]


def window_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Weighted periodic mean of x (..., H, W) over the window x window around every site, site by site."""
    H, W = x.shape[-2:]
    out = np.zeros_like(x, dtype=float)
    for i in range(H):
        for j in range(W):
            for di, wi in _window_offsets(window):
                for dj, wj in _window_offsets(window):
                    out[..., i, j] += wi * wj * x[..., (i + di) % H, (j + dj) % W]
    return out / window**2


def window_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int) -> np.ndarray:
    """Single-head attention (C, H, W) of every site to its periodic window, keys weighted, query by query."""
    C, H, W = q.shape
    out = np.zeros_like(q, dtype=float)
    for i in range(H):
        for j in range(W):
            scores, values = [], []
            for di, wi in _window_offsets(window):
                for dj, wj in _window_offsets(window):
                    key = k[:, (i + di) % H, (j + dj) % W]
                    scores.append(np.log(wi * wj) + q[:, i, j] @ key / np.sqrt(C))
                    values.append(v[:, (i + di) % H, (j + dj) % W])
            p = np.exp(np.array(scores) - max(scores))
            out[:, i, j] = (p / p.sum()) @ np.array(values)
    return out
