"""SKILD noise schedules λ(t), the discrete steps λ_n and the effective resolution r(n) (SPEC §4).

λ(t) increases from λ(0) = 0; a mode of wavenumber k keeps ᾱ_t(k) = exp(−k_eff² λ(t)) of
its signal, with k_eff² = max(|k|², k_c²).  Its SNR ᾱ/(1−ᾱ) stays ≥ τ while
k² λ(t) ≤ ln(1 + 1/τ) (official `snr_threshold`), which defines the resolved cutoff k*(t) = √(ln(1+1/τ)/λ(t)) and the
effective resolution r(t) = k*(t)/(√2 π) pixels per side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

SCHEDULE_KINDS = ("linear", "log_linear", "cosine")
COSINE_ALPHA_BAR_MIN = 1e-8  # floor on ᾱ of the cosine schedule, whose ᾱ(1) = 0 exactly


def lam_linear(t, lam_i: float, lam_f: float, theta: float):
    """Linear schedule λ(t) = θ t / (λ_i (1 − t) + λ_f)²."""
    return theta * t / (lam_i * (1 - t) + lam_f) ** 2


def lam_log_linear(t, lam_i: float, lam_f: float):
    """Log-linear schedule λ(t) = t · 10^(λ_i + (λ_f − λ_i) t)."""
    return t * 10.0 ** (lam_i + (lam_f - lam_i) * t)


def lam_cosine(t, s: float):
    """White-noise DDPM cosine schedule as λ(t) = −ln ᾱ(t), ᾱ(t) = cos²(π/2 (t+s)/(1+s)) / cos²(π/2 s/(1+s)).

    With k_eff² = 1 for every mode this is the SR3/improved-DDPM process (Nichol & Dhariwal
    2021, Eq. 17); ᾱ is floored at COSINE_ALPHA_BAR_MIN so λ(1) stays finite.
    """
    f = np.cos(np.pi / 2 * (np.asarray(t) + s) / (1 + s)) ** 2 / np.cos(np.pi / 2 * s / (1 + s)) ** 2
    return -np.log(np.maximum(f, COSINE_ALPHA_BAR_MIN))


@dataclass(frozen=True)
class Schedule:
    """A SKILD schedule: λ(t) of the given kind, IR cutoff k_c, SNR threshold τ, N steps.

    For kind "cosine" (the white-noise baseline) theta is the cosine offset s.
    """

    kind: str
    lam_i: float
    lam_f: float
    theta: float | None = None
    k_c: float = 0.0
    tau: float = 0.1
    N: int = 1000

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; choose one of {SCHEDULE_KINDS}")
        if self.kind in ("linear", "cosine") and self.theta is None:
            raise ValueError(f"the {self.kind} schedule needs theta")
        if self.N < 1 or self.tau <= 0 or self.k_c < 0:
            raise ValueError("need N ≥ 1, tau > 0 and k_c ≥ 0")

    def lam(self, t):
        """λ(t) for t in [0, 1] (float or float64 array)."""
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "linear":
            return lam_linear(t, self.lam_i, self.lam_f, self.theta)
        if self.kind == "cosine":
            return lam_cosine(t, self.theta)
        return lam_log_linear(t, self.lam_i, self.lam_f)

    def lam_n(self) -> np.ndarray:
        """λ_n = λ(n/N) for n = 0…N, float64 (N + 1,)."""
        return self.lam(np.arange(self.N + 1) / self.N)

    def k_eff2(self, k):
        """k_eff² = max(|k|², k_c²) (float64 tensor for a tensor k, else array)."""
        if isinstance(k, torch.Tensor):
            return torch.clamp(k.to(torch.float64) ** 2, min=self.k_c**2)
        return np.maximum(np.asarray(k, dtype=np.float64) ** 2, self.k_c**2)

    @property
    def snr_log(self) -> float:
        """ln(1 + 1/τ): the resolved-mode bound on k² λ."""
        return math.log1p(1.0 / self.tau)

    def k_star(self, n) -> np.ndarray:
        """Resolved cutoff k*(n) = √(ln(1+1/τ)/λ_n); infinite at n = 0."""
        lam = self.lam_n()[np.asarray(n)]
        with np.errstate(divide="ignore"):
            return np.sqrt(self.snr_log / lam)

    def resolution(self, n) -> np.ndarray:
        """Effective resolution r(n) = k*(n)/(√2 π) in pixels per side."""
        return self.k_star(n) / (math.sqrt(2) * math.pi)

    def start_step(self, r_target: float) -> int:
        """Start step n0: the first n (smallest) with r(n) ≤ r_target.

        r(n) falls monotonically, so X_{n0} resolves no more than r_target pixels per side.
        A relative slack of 1e−9 lets r_target = r_LR reach n0 = N despite rounding in λ_f.
        Raises ValueError if even r(N) exceeds r_target.
        """
        r = self.resolution(np.arange(self.N + 1))
        below = np.nonzero(r <= r_target * (1 + 1e-9))[0]
        if below.size == 0:
            raise ValueError(f"resolution {r_target:g} is not reached: r(N) = {r[-1]:.4g} pixels per side")
        return int(below[0])

    def to_dict(self) -> dict:
        """Plain-dict form (for JSON configs)."""
        return asdict(self)
