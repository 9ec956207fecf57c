"""Orthonormal separable bases for the SKILD process: DCT-II (default) and a periodic real Fourier basis.

A basis maps pixels x (..., H, W) to coefficients X = A_H x A_Wᵀ with orthonormal 1D
matrices, built once in float64 with NumPy/SciPy and applied by matmul on any device and
dtype.  Each coefficient has a radial wavenumber |k| in units of 1/(image side) (SPEC §4).

Wavenumbers: DCT mode u is cos(πu(j+½)/N), so k = πu.  The real Fourier basis orders its
1D rows by frequency, [1, cos 1, sin 1, cos 2, sin 2, ..., (Nyquist)], and row i has
frequency m = ⌈i/2⌉, i.e. k = 2πm ≈ πi: the same physical scale has the same k in both
bases.  The 2D product of cos/sin rows at (m, n) is a combination of plane waves
(±m, ±n), all with |k| = 2π√(m² + n²), so radial per-mode factors act exactly on the torus.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.spectrum import dct_matrix, fourier_frequency, fourier_matrix, wavenumber_grid


class Basis:
    """Separable orthonormal basis on an H×W grid: forward x → X, inverse X → x, wavenumbers k."""

    def __init__(self, name: str, A_H: np.ndarray, A_W: np.ndarray, k: np.ndarray):
        self.name = name
        self.H, self.W = A_H.shape[0], A_W.shape[0]
        self._A_H = torch.as_tensor(A_H, dtype=torch.float64)
        self._A_W = torch.as_tensor(A_W, dtype=torch.float64)
        self.k = torch.as_tensor(k, dtype=torch.float64)
        self._cache = {}

    @classmethod
    def dct(cls, H: int, W: int | None = None) -> "Basis":
        """DCT-II basis, k = π√(u² + v²)."""
        W = H if W is None else W
        return cls("dct", dct_matrix(H), dct_matrix(W), wavenumber_grid(H, W))

    @classmethod
    def fourier(cls, H: int, W: int | None = None) -> "Basis":
        """Periodic real Fourier basis of the torus, k = 2π√(m² + n²)."""
        W = H if W is None else W
        m = fourier_frequency(H)[:, None]
        n = fourier_frequency(W)[None, :]
        return cls("fourier", fourier_matrix(H), fourier_matrix(W), 2 * np.pi * np.sqrt(m**2 + n**2))

    @classmethod
    def identity(cls, H: int, W: int | None = None) -> "Basis":
        """Pixel basis with k = 1 everywhere: every mode is noised alike (white-noise DDPM baselines)."""
        W = H if W is None else W
        return cls("identity", np.eye(H), np.eye(W), np.ones((H, W)))

    @classmethod
    def named(cls, name: str, H: int, W: int | None = None) -> "Basis":
        """Basis by name: "dct", "fourier" or "identity"."""
        if name not in ("dct", "fourier", "identity"):
            raise ValueError(f"unknown basis {name!r}; choose 'dct', 'fourier' or 'identity'")
        return getattr(cls, name)(H, W)

    def _matrices(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = (self._A_H.to(device=like.device, dtype=like.dtype),
                                self._A_W.to(device=like.device, dtype=like.dtype))
        return self._cache[key]

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != (self.H, self.W):
            raise ValueError(f"array of shape {tuple(x.shape)} does not end in the basis grid {(self.H, self.W)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients X = A_H x A_Wᵀ over the last two axes."""
        self._check(x)
        A_H, A_W = self._matrices(x)
        return A_H @ x @ A_W.T

    def inverse(self, X: torch.Tensor) -> torch.Tensor:
        """Pixels x = A_Hᵀ X A_W over the last two axes."""
        self._check(X)
        A_H, A_W = self._matrices(X)
        return A_H.T @ X @ A_W

    def __repr__(self) -> str:
        return f"Basis({self.name!r}, H={self.H}, W={self.W})"


def embed_low_modes(X_lr: torch.Tensor, H: int, W: int | None = None) -> torch.Tensor:
    """Place orthonormal DCT coefficients of an (h, w) image into the low modes of an (H, W) grid, any h ≤ H.

    Mode (u, v) has the same k = π√(u² + v²) on both grids, and an N-point orthonormal sum
    carries √N per axis, so the coefficients scale by √(H W / (h w)): for a smooth field x and
    its block mean y over f×f blocks, DCT_H(x)[u, v] ≈ f · DCT_h(y)[u, v] for u, v ≪ h.  High
    modes are set to zero.
    """
    W = H if W is None else W
    h, w = X_lr.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"low-resolution grid {(h, w)} is larger than {(H, W)}")
    X = X_lr.new_zeros(X_lr.shape[:-2] + (H, W))
    X[..., :h, :w] = (H * W / (h * w)) ** 0.5 * X_lr
    return X
