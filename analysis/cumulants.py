"""Joint fourth cumulant kappa4 of the corner spins of l x l squares on the torus (SPEC §3).

Corners of the square anchored at (i, j): a = s(i, j), b = s(i+l, j), c = s(i, j+l),
d = s(i+l, j+l), indices mod L (i runs along y, j along x).  kappa4 is the full joint
cumulant of (a, b, c, d), a function of the 15 means E[a], ..., E[abcd] taken over all L^2
anchors and all samples; the kernel reduces each sample to its anchor means so that blocks
of samples can be summed and jackknifed afterwards.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

CORNER_TERMS = ("a", "b", "c", "d", "ab", "ac", "ad", "bc", "bd", "cd", "abc", "abd", "acd", "bcd", "abcd")
"""The 15 corner products whose means determine kappa4, in the order of `expand_corner_means`."""

KERNEL_TERMS = ("a", "ab", "ac", "ad", "bc", "abc", "abd", "acd", "bcd", "abcd")
"""The distinct per-sample anchor means computed by `corner_means`."""

# Reassociation lets LLVM vectorise the anchor sums; each sample is still reduced by one
# thread in a fixed order, so results do not depend on the thread count.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _corner_means_kernel(x, sizes, out):
    n, L, _ = x.shape
    norm = 1.0 / (L * L)
    for s in prange(n):
        # each row stored twice so that j + l needs no wrap-around inside the inner loop
        f = np.empty((L, 2 * L))
        for i in range(L):
            for j in range(L):
                v = np.float64(x[s, i, j])
                f[i, j] = v
                f[i, j + L] = v
        for p in range(sizes.shape[0]):
            l = sizes[p]
            s_a = 0.0
            s_ab = 0.0
            s_ac = 0.0
            s_ad = 0.0
            s_bc = 0.0
            s_abc = 0.0
            s_abd = 0.0
            s_acd = 0.0
            s_bcd = 0.0
            s_abcd = 0.0
            for i in range(L):
                i2 = i + l
                if i2 >= L:
                    i2 -= L
                for j in range(L):
                    a = f[i, j]
                    b = f[i2, j]
                    c = f[i, j + l]
                    d = f[i2, j + l]
                    ab = a * b
                    cd = c * d
                    s_a += a
                    s_ab += ab
                    s_ac += a * c
                    s_ad += a * d
                    s_bc += b * c
                    s_abc += ab * c
                    s_abd += ab * d
                    s_acd += a * cd
                    s_bcd += b * cd
                    s_abcd += ab * cd
            out[s, p, 0] = s_a * norm
            out[s, p, 1] = s_ab * norm
            out[s, p, 2] = s_ac * norm
            out[s, p, 3] = s_ad * norm
            out[s, p, 4] = s_bc * norm
            out[s, p, 5] = s_abc * norm
            out[s, p, 6] = s_abd * norm
            out[s, p, 7] = s_acd * norm
            out[s, p, 8] = s_bcd * norm
            out[s, p, 9] = s_abcd * norm


def check_sizes(sizes, L: int) -> np.ndarray:
    """Patch sizes as an int64 array; ValueError unless 0 <= l < L for each."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if sizes.size == 0 or sizes.min() < 0 or sizes.max() >= L:
        raise ValueError(f"patch sizes must satisfy 0 <= l < L = {L}, got {sizes.tolist()}")
    return sizes


def corner_means(x: np.ndarray, sizes) -> np.ndarray:
    """Per-sample anchor means of the KERNEL_TERMS corner products, shape (n, len(sizes), 10).

    x: configurations (n, L, L), any real dtype.  l = 0 puts all four corners on one site.
    """
    x = np.ascontiguousarray(x)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"configurations must have shape (n, L, L), got {x.shape}")
    sizes = check_sizes(sizes, x.shape[1])
    out = np.empty((x.shape[0], sizes.size, len(KERNEL_TERMS)))
    _corner_means_kernel(x, sizes, out)
    return out


def expand_corner_means(m: np.ndarray) -> np.ndarray:
    """The 15 CORNER_TERMS means from the 10 KERNEL_TERMS means (last axis).

    Averaging over all L^2 anchors of the torus makes <a> = <b> = <c> = <d>, <ab> = <cd>
    and <ac> = <bd> identities of every configuration (each is the same sum, translated).
    """
    a, ab, ac, ad, bc, abc, abd, acd, bcd, abcd = np.moveaxis(np.asarray(m, dtype=np.float64), -1, 0)
    return np.stack([a, a, a, a, ab, ac, ad, bc, ac, ab, abc, abd, acd, bcd, abcd], axis=-1)


def kappa4_from_means(M: np.ndarray) -> np.ndarray:
    """Joint fourth cumulant of (a, b, c, d) from the 15 CORNER_TERMS means (last axis)."""
    a, b, c, d, ab, ac, ad, bc, bd, cd, abc, abd, acd, bcd, abcd = np.moveaxis(np.asarray(M), -1, 0)
    return (abcd
            - (a * bcd + b * acd + c * abd + d * abc)
            - (ab * cd + ac * bd + ad * bc)
            + 2.0 * (a * b * cd + a * c * bd + a * d * bc + b * c * ad + b * d * ac + c * d * ab)
            - 6.0 * a * b * c * d)


def kappa4(x: np.ndarray, sizes) -> np.ndarray:
    """kappa4(l) for each patch size, averaged over all anchors and samples of x (n, L, L); no errors."""
    return kappa4_from_means(expand_corner_means(corner_means(x, sizes).mean(axis=0)))
