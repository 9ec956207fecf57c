"""Power spectra of 2D fields in the orthonormal DCT-II basis (SPEC §4), NumPy only.

Mode (u, v) has wavenumber k = π(u, v) in units of 1/(image side), so the same physical
scale has the same |k| at every resolution.  The spectrum S(k) is the per-mode variance;
its radial average is fitted by S(k) = C (k² + k0²)^(−α).  For critical Ising the
two-point function gives S(k) ∝ k^(−(2−η)) = k^(−7/4) in the scaling range.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import scipy.fft
import scipy.optimize


def dct2(x: np.ndarray) -> np.ndarray:
    """Orthonormal 2D DCT-II over the last two axes."""
    return scipy.fft.dctn(np.asarray(x), type=2, axes=(-2, -1), norm="ortho")


def idct2(X: np.ndarray) -> np.ndarray:
    """Inverse of `dct2` (orthonormal DCT-III over the last two axes)."""
    return scipy.fft.idctn(np.asarray(X), type=2, axes=(-2, -1), norm="ortho")


def wavenumber_grid(H: int, W: int) -> np.ndarray:
    """|k| = π√(u² + v²) of DCT mode (u, v) on an H×W grid, shape (H, W)."""
    u = np.arange(H, dtype=np.float64)[:, None]
    v = np.arange(W, dtype=np.float64)[None, :]
    return np.pi * np.sqrt(u**2 + v**2)


class ModeVariance:
    """Streaming per-mode mean and variance of coefficient batches (n, ..., H, W), float64.

    Batches are merged with Chan et al.'s parallel update, so the result does not depend
    on how the data are split into batches (up to rounding).
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self._m2 = None

    def update(self, batch) -> "ModeVariance":
        """Merge a batch whose first axis runs over samples."""
        batch = np.asarray(batch, dtype=np.float64)
        n_b = batch.shape[0]
        if n_b == 0:
            return self
        mean_b = batch.mean(axis=0)
        m2_b = ((batch - mean_b) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self._m2 = n_b, mean_b, m2_b
            return self
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"batch modes {mean_b.shape} differ from earlier batches {self.mean.shape}")
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (self.count * n_b / n)
        self.count = n
        return self

    @property
    def variance(self) -> np.ndarray:
        """Unbiased per-mode variance (ddof = 1)."""
        if self.count < 2:
            raise ValueError("need at least two samples for a variance")
        return self._m2 / (self.count - 1)


def radial_spectrum(S: np.ndarray, n_bins: int | None = None, k: np.ndarray | None = None):
    """Radially binned spectrum of a per-mode array S (H, W) or (C, H, W).

    Default bins are unit shells round(|k|/π) = 0, 1, 2, ...; with n_bins, equal-width bins
    over [0, max |k|].  `k` overrides the DCT wavenumber grid (e.g. for a Fourier basis).
    Returns (k, S_k, counts) over non-empty bins: the mean |k| and mean S of each bin
    (S_k has shape (n,) or (C, n)) and the number of modes in it.
    """
    S = np.asarray(S, dtype=np.float64)
    H, W = S.shape[-2:]
    k = wavenumber_grid(H, W) if k is None else np.asarray(k, dtype=np.float64)
    if k.shape != (H, W):
        raise ValueError(f"wavenumber grid {k.shape} does not match spectrum modes {(H, W)}")
    if n_bins is None:
        index = np.rint(k / np.pi).astype(np.int64)
    else:
        edges = np.linspace(0.0, k.max(), n_bins + 1)
        index = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, n_bins - 1)
    index = index.ravel()
    n_idx = index.max() + 1
    counts = np.bincount(index, minlength=n_idx)
    keep = counts > 0
    k_mean = np.bincount(index, weights=k.ravel(), minlength=n_idx)[keep] / counts[keep]
    flat = S.reshape(-1, H * W)
    S_k = np.stack([np.bincount(index, weights=row, minlength=n_idx)[keep] for row in flat]) / counts[keep]
    S_k = S_k.reshape(S.shape[:-2] + (keep.sum(),))
    return k_mean, S_k, counts[keep]


@dataclass(frozen=True)
class PowerLawFit:
    """S(k) = C (k² + k0²)^(−α), fitted over k_range, with one-sigma errors."""

    C: float
    alpha: float
    k0sq: float
    C_err: float
    alpha_err: float
    k0sq_err: float
    k_range: tuple[float, float]

    def __call__(self, k):
        """Evaluate the fitted spectrum at wavenumber(s) k."""
        k = np.asarray(k, dtype=np.float64)
        return self.C * (k**2 + self.k0sq) ** (-self.alpha)


def fit_power_law(k, S_k, k_range=None, counts=None, k0sq: float | None = None) -> PowerLawFit:
    """Fit log S_k = log C − α log(k² + k0²) over k_range (inclusive) with curve_fit.

    counts (modes per bin) weight the bins: a bin mean of `counts` modes has relative error
    ∝ 1/√counts.  Errors are rescaled by the fit residuals (absolute_sigma=False).
    With `k0sq` given, k0² is held fixed (error 0) and only C, α are fitted.  Errors are
    inf where the fit cannot determine them.
    """
    k = np.asarray(k, dtype=np.float64)
    S_k = np.asarray(S_k, dtype=np.float64)
    if S_k.shape != k.shape:
        raise ValueError(f"S_k shape {S_k.shape} must equal k shape {k.shape} (fit one channel at a time)")
    lo, hi = (float(k[k > 0].min()), float(k.max())) if k_range is None else map(float, k_range)
    sel = (k >= lo) & (k <= hi) & (S_k > 0) & np.isfinite(S_k)
    if k0sq is not None and k0sq == 0:
        sel &= k > 0
    n_par = 2 if k0sq is not None else 3
    if sel.sum() <= n_par:
        raise ValueError(f"only {sel.sum()} usable bins in k range [{lo:g}, {hi:g}]; need more than {n_par}")
    x, y = k[sel], np.log(S_k[sel])
    sigma = None if counts is None else 1.0 / np.sqrt(np.asarray(counts, dtype=np.float64)[sel])

    # Start from a straight line in log-log space: α0 = −slope/2, k0² a small fraction of the window.
    slope, intercept = np.polyfit(np.log(x**2 + 1e-12), y, 1)
    if k0sq is None:
        def model(kk, logC, alpha, k0):
            return logC - alpha * np.log(kk**2 + k0)

        p0 = [intercept, max(-slope, 1e-3), 0.01 * x.min() ** 2 + 1e-6]
        bounds = ([-np.inf, -np.inf, 0.0], [np.inf, np.inf, np.inf])
    else:
        def model(kk, logC, alpha):
            return logC - alpha * np.log(kk**2 + k0sq)

        p0 = [intercept, -slope]
        bounds = (-np.inf, np.inf)
    with warnings.catch_warnings():
        # A degenerate window (e.g. k0² pinned at 0) leaves the covariance undefined: errors become inf.
        warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
        p, cov = scipy.optimize.curve_fit(model, x, y, p0=p0, sigma=sigma, absolute_sigma=False,
                                          bounds=bounds, maxfev=20000)
    err = np.sqrt(np.clip(np.nan_to_num(np.diag(cov), nan=np.inf), 0.0, np.inf))
    C = float(np.exp(p[0]))
    return PowerLawFit(
        C=C, alpha=float(p[1]), k0sq=float(p[2]) if k0sq is None else float(k0sq),
        C_err=C * float(err[0]), alpha_err=float(err[1]), k0sq_err=float(err[2]) if k0sq is None else 0.0,
        k_range=(lo, hi),
    )


def field_spectrum(fields, batch: int = 256) -> ModeVariance:
    """Per-mode DCT mean and variance of real fields.

    `fields` is either one array-like (n, H, W) (NumPy, Zarr, xarray; read `batch` samples at
    a time) or an iterable of such batches.
    """
    acc = ModeVariance()
    if hasattr(fields, "shape") and len(fields.shape) >= 3:
        for start in range(0, fields.shape[0], batch):
            acc.update(dct2(np.asarray(fields[start:start + batch], dtype=np.float64)))
    else:
        for chunk in _as_batches(fields):
            acc.update(dct2(np.asarray(chunk, dtype=np.float64)))
    return acc


def _as_batches(fields: Iterable) -> Iterable:
    """Iterate over batches, rejecting a lone 2D field (which needs a sample axis)."""
    for chunk in fields:
        if np.ndim(chunk) < 3:
            raise ValueError("field_spectrum needs batches shaped (n, H, W); add a sample axis")
        yield chunk


def dct_matrix(N: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (N, N): X = D x for a column x."""
    return scipy.fft.dct(np.eye(N), type=2, norm="ortho", axis=0)


def fourier_matrix(N: int) -> np.ndarray:
    """Orthonormal real Fourier matrix F (N, N), rows ordered [1, cos 1, sin 1, cos 2, ...]."""
    j = np.arange(N, dtype=np.float64)
    rows = [np.full(N, 1.0 / np.sqrt(N))]
    for m in range(1, (N - 1) // 2 + 1):
        rows.append(np.sqrt(2.0 / N) * np.cos(2 * np.pi * m * j / N))
        rows.append(np.sqrt(2.0 / N) * np.sin(2 * np.pi * m * j / N))
    if N % 2 == 0:
        rows.append(np.cos(np.pi * j) / np.sqrt(N))
    return np.stack(rows)


def fourier_frequency(N: int) -> np.ndarray:
    """Integer frequency m = ⌈i/2⌉ of row i of `fourier_matrix(N)`."""
    return (np.arange(N) + 1) // 2
