"""Monte Carlo error analysis: integrated autocorrelation times and blocked jackknife.

Estimators here are functions of *means of primitive quantities* (e.g. <e>, <m^2>, <m^4>,
or the corner products of kappa4).  Working on per-block sums keeps everything streaming:
a store larger than memory is reduced block by block, then the jackknife runs on the sums.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation rho(t) of series x with shape (T,) or (chains, T), pooled over chains."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n_chains, T = x.shape
    x = x - x.mean(axis=1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(2 * T)))
    f = np.fft.rfft(x, n=n_fft, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=n_fft, axis=1)[:, :T].sum(axis=0)
    acov /= n_chains * (T - np.arange(T))  # unbiased lag normalisation
    if acov[0] <= 0:
        return np.ones(1)
    return acov / acov[0]


def tau_int(x: np.ndarray, c: float = 5.0) -> tuple[float, float]:
    """Integrated autocorrelation time (in units of the series spacing) with Sokal's window.

    tau_int = 1/2 + sum_{t=1}^{W} rho(t), W the smallest window with W >= c * tau_int(W).
    Uncorrelated data give tau_int = 1/2.  Returns (tau_int, its statistical error
    sqrt(2(2W+1)/N) * tau_int, Madras & Sokal 1988).
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rho = autocorrelation(x)
    T = x.shape[1]
    if rho.size < 2:
        return 0.5, 0.0
    taus = 0.5 + np.cumsum(rho[1:])
    windows = np.arange(1, rho.size)
    ok = windows >= c * taus
    W = int(windows[np.argmax(ok)]) if ok.any() else int(windows[-1])
    tau = float(max(taus[W - 1], 0.5))
    n_total = x.size
    err = tau * np.sqrt(2.0 * (2 * W + 1) / max(n_total, 1))
    return tau, float(err)


def block_sums(values: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `values` (samples first) into n_blocks contiguous blocks; return (sums, counts)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n_blocks < 2 or n < n_blocks:
        raise ValueError(f"need at least 2 blocks and one sample per block (n={n}, blocks={n_blocks})")
    edges = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    sums = np.add.reduceat(values, edges[:-1], axis=0)
    return sums, np.diff(edges)


def jackknife(sums: np.ndarray, counts: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]):
    """Delete-one-block jackknife of fn(mean of primitives).

    sums: (B, ...) per-block sums of the primitive quantities; counts: (B,) samples per block.
    fn maps the mean (shape sums.shape[1:]) to an estimate (scalar or array).
    Returns (estimate on all data, jackknife standard error).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    B = sums.shape[0]
    total, n = sums.sum(axis=0), counts.sum()
    full = np.asarray(fn(total / n), dtype=np.float64)
    loo = np.stack([np.asarray(fn((total - sums[b]) / (n - counts[b])), dtype=np.float64) for b in range(B)])
    err = np.sqrt((B - 1) / B * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    return full, err


def n_blocks_for(n_samples: int, block_min: int, max_blocks: int = 50) -> int:
    """Number of jackknife blocks with at least `block_min` samples each (at least 2, at most max_blocks)."""
    return int(np.clip(n_samples // max(int(block_min), 1), 2, max_blocks))
