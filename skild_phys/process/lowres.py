"""Real low-resolution inputs as SKILD start states: Gaussian conditioning on block means.

A coarse input y (h×w block means of an H×W field, factor f = H/h) fixes h·w linear
combinations of the clean coefficients X_0: y = M_H X_0 M_Wᵀ with M = B Aᵀ, B the 1D
block-mean matrix and A the process's orthonormal basis.  Under the process's own model of
the data — X_0 ~ N(0, diag(S0)) — the clean state given y is Gaussian, and one exact draw
from it is Matheron's rule: X = X* + S0 ⊙ Mᵀ G⁻¹ (y − M X*) with X* ~ N(0, S0) and
G = M diag(S0) Mᵀ (h·w × h·w).  Every draw reproduces the block means exactly; the modes
the coarse grid resolves carry its content (attenuation by the block average and aliasing
accounted for), the others get the spread S0 says they have.  The chain then starts from
the forward marginal of that draw at n0, as for the paper protocol.

Unlike placing the coarse coefficients in the low modes, this works in any basis (DCT or
periodic Fourier) and leaves no mode with less variance than the process expects.

A ±1 block spin says which way a block points, not how strongly.  Observed with noise,
y = M X_0 + ν with ν ~ N(0, σ² I), the same rule conditions on y only as far as σ allows:
X = X* + S0 ⊙ Mᵀ (G + σ² I)⁻¹ (y − M X* − ν*), ν* ~ N(0, σ² I).
"""

from __future__ import annotations

import numpy as np
import torch

from skild_phys.process.basis import Basis


def block_mean_matrix(H: int, f: int) -> np.ndarray:
    """B (H/f × H): row j averages pixels f·j … f·j + f − 1."""
    if f < 1 or H % f:
        raise ValueError(f"factor {f} does not divide the grid size {H}")
    B = np.zeros((H // f, H))
    for j in range(H // f):
        B[j, f * j:f * (j + 1)] = 1.0 / f
    return B


class BlockMeanConditional:
    """Exact draws of X_0 ~ N(0, S0) conditioned on its f×f block means, in the basis of `basis`."""

    def __init__(self, basis: Basis, S0: torch.Tensor, f: int, noise_var: float = 0.0):
        S0 = torch.as_tensor(S0, dtype=torch.float64)
        if S0.ndim == 3:
            if S0.shape[0] != 1:
                raise ValueError("block-mean conditioning is for one-channel lattices")
            S0 = S0[0]
        self.f, self.S0 = f, S0
        self.M_H = torch.as_tensor(block_mean_matrix(basis.H, f)) @ basis._A_H.T  # (h, H)
        self.M_W = torch.as_tensor(block_mean_matrix(basis.W, f)) @ basis._A_W.T  # (w, W)
        h, w = self.M_H.shape[0], self.M_W.shape[0]
        # G[(a, b), (c, d)] = sum_uv M_H[a, u] M_W[b, v] S0[u, v] M_H[c, u] M_W[d, v], in two contractions
        P = torch.einsum("au,cu,uv->acv", self.M_H, self.M_H, S0)
        G = torch.einsum("acv,bv,dv->abcd", P, self.M_W, self.M_W).reshape(h * w, h * w)
        if not noise_var >= 0:
            raise ValueError(f"observation noise variance must be >= 0, got {noise_var}")
        self.noise_var = float(noise_var)
        self.mean_square = float(torch.diagonal(G).mean())  # E[block mean²] under N(0, S0)
        self.chol = torch.linalg.cholesky(G + self.noise_var * torch.eye(h * w, dtype=G.dtype))
        self.shape_lr = (h, w)

    def observe(self, X: torch.Tensor) -> torch.Tensor:
        """Block means of the field with coefficients X (..., H, W) -> (..., h, w)."""
        return self.M_H.to(X) @ X @ self.M_W.to(X).T

    def sample(self, y: torch.Tensor, z: torch.Tensor, z_obs: torch.Tensor | None = None) -> torch.Tensor:
        """X_0 given block means y (B, 1, h, w), from standard normal z (B, 1, H, W): Matheron's rule.
        With observation noise, z_obs (B, 1, h, w) standard normal draws the noise of the prior sample."""
        if tuple(y.shape[-2:]) != self.shape_lr:
            raise ValueError(f"block means of shape {tuple(y.shape[-2:])}, expected {self.shape_lr}")
        S0 = self.S0.to(z)
        X_star = torch.sqrt(S0) * z
        observed = self.observe(X_star)
        if self.noise_var > 0:
            if z_obs is None or tuple(z_obs.shape) != tuple(y.shape):
                raise ValueError("a noisy observation needs z_obs of the block means' shape")
            observed = observed + self.noise_var ** 0.5 * z_obs.to(z)
        r = (y.to(z) - observed).reshape(*y.shape[:-2], -1, 1)
        coef = torch.cholesky_solve(r, self.chol.to(z)).reshape(y.shape)
        return X_star + S0 * (self.M_H.to(z).T @ coef @ self.M_W.to(z))
