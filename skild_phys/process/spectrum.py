"""The data spectrum S0 for the SKILD process: transform in torch, accumulate and fit with `analysis.spectrum`."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from analysis.spectrum import ModeVariance, PowerLawFit, fit_power_law, radial_spectrum
from skild_phys.process.basis import Basis


def mode_variance(batches: Iterable[torch.Tensor], basis: Basis) -> ModeVariance:
    """Per-mode mean and variance of basis coefficients over batches of pixels (B, C, H, W) or (B, H, W)."""
    acc = ModeVariance()
    for x in batches:
        X = basis.forward(torch.as_tensor(x).to(torch.float64))
        acc.update(X.cpu().numpy())
    if acc.count < 2:
        raise ValueError("need at least two samples to estimate a spectrum")
    return acc


def fit_S0(S: np.ndarray, basis: Basis, k_range=None) -> PowerLawFit:
    """Power-law fit C (k² + k0²)^(−α) to the radially binned per-mode spectrum S, averaged over channels."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim == 3:
        S = S.mean(axis=0)
    k, S_k, counts = radial_spectrum(S, k=basis.k.numpy())
    return fit_power_law(k, S_k, k_range=k_range, counts=counts)


K0SQ_ZERO = 1e-8  # k0² below this fraction of k_min² is the fit's lower bound 0 (up to solver tolerance)


def S0_from_fit(fit: PowerLawFit, basis: Basis) -> torch.Tensor:
    """S0 = C (k² + k0²)^(−α) on the basis grid (H, W), float64.

    With k0² = 0 (numerically: below K0SQ_ZERO k_min²; a fit pushed to its bound) the DC mode
    takes the value at the lowest non-zero |k| instead of a divergent one.
    """
    k = basis.k.clone()
    k_min = float(k[k > 0].min())
    if fit.k0sq < K0SQ_ZERO * k_min**2:
        k[k == 0] = k_min
    return torch.as_tensor(fit(k.numpy()))
