"""Named SKILD presets from the official configs (SPEC §4) and the rule behind them.

Rule: λ_i = √2 π (H − 1) and λ_f = √2 π r_LR √(θ / ln(1 + 1/τ)), so that the linear
schedule ends at r(t = 1) = r_LR pixels per side.  The official S0 fits (α, C, k0²) were
made with the official DCT normalisation (`norm="forward"`: 2/N times the plain cosine
sum per axis; images in [−1, 1]): α and k0²
carry over, C does not (refit S0 on your data, or see `Preset.S0_fit_ortho`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from analysis.spectrum import PowerLawFit
from skild_base.errors import InputError
from skild_phys.process.schedule import Schedule


def preset_from_rule(H: int, r_lr: float, theta: float, tau: float, schedule: str = "linear",
                     k_c: float = 0.0, N: int = 1000) -> Schedule:
    """Linear schedule for an H×H grid ending at resolution r_lr (λ_i, λ_f by the official rule)."""
    if schedule != "linear":
        raise ValueError("the λ_i, λ_f rule is defined for the linear schedule only")
    lam_i = math.sqrt(2) * math.pi * (H - 1)
    lam_f = math.sqrt(2) * math.pi * r_lr * math.sqrt(theta / math.log1p(1.0 / tau))
    return Schedule("linear", lam_i, lam_f, theta=theta, k_c=k_c, tau=tau, N=N)


@dataclass(frozen=True)
class Preset:
    """A named configuration: grid size H, schedule, r(N) and the official S0 fit."""

    name: str
    H: int
    schedule: Schedule
    r_lr: float | None
    S0_alpha: float
    S0_C_official: float
    S0_k0sq: float

    @property
    def factor(self) -> float | None:
        """Super-resolution factor H / r_LR."""
        return None if self.r_lr is None else self.H / self.r_lr

    def S0_fit_ortho(self) -> PowerLawFit:
        """Official S0 fit with C converted to the orthonormal DCT (C × H²/4, exact for u, v ≥ 1)."""
        # The official norm="forward" DCT multiplies each axis sum by 2/N, the orthonormal one
        # by √(2/N) for u ≥ 1: the per-axis variance ratio is N/2 (N/4 on the u = 0 row).
        return PowerLawFit(C=self.S0_C_official * self.H**2 / 4, alpha=self.S0_alpha, k0sq=self.S0_k0sq,
                           C_err=0.0, alpha_err=0.0, k0sq_err=0.0, k_range=(0.0, math.inf))


def _official(name, H, r_lr, theta, tau, k_c, lam_f, fit):
    """Official linear preset; λ_i, λ_f as printed in the official configs."""
    lam_i = {32: 137.7294, 128: 564.2461, 256: 1132.9352}[H]
    schedule = Schedule("linear", lam_i, lam_f, theta=theta, k_c=k_c, tau=tau)
    return Preset(name, H, schedule, r_lr, *fit)


_IMAGENET_128_FIT = (1.061318, 0.90617, math.pi / 2)
_CIFAR_FIT = (1.051304, 0.91001, 1.940556)
# cifar10_linear's official λ_f = 1.57 (≈ π/2) is a generation preset: by the rule it
# corresponds to a sub-pixel r_LR = 1.57 / (√2 π √(θ / ln(1 + 1/τ))) ≈ 0.48.
_CIFAR_R_LR = 1.57 / (math.sqrt(2) * math.pi * math.sqrt(5 / math.log1p(1e4)))

PRESETS = {
    p.name: p
    for p in (
        _official("ising128_4x", 128, 32, 9, 0.1, 0.0, 275.4361, (0.811056, 0.26641, 3.0)),
        _official("imagenet128_4x", 128, 32, 9, 0.1, 0.0, 275.4361, _IMAGENET_128_FIT),
        _official("imagenet128_8x", 128, 16, 5, 0.1, 0.0, 102.6489, _IMAGENET_128_FIT),
        _official("imagenet256_4x", 256, 64, 9, 0.1, 0.0, 550.8723, (1.059750, 0.93221, math.pi / 2)),
        _official("cifar10_linear", 32, _CIFAR_R_LR, 5, 1e-4, 3.0, 1.57, _CIFAR_FIT),
        Preset("cifar10_log_linear", 32, Schedule("log_linear", -3.75, -2.0, k_c=31.2, tau=1e-4), None, *_CIFAR_FIT),
    )
}


def get_preset(name: str, H: int | None = None) -> Preset:
    """Named preset, rescaled to grid size H by the rule at the same factor H / r_LR."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    if H is None or H == p.H:
        return p
    if H < 2:
        raise InputError(f"grid size must be at least 2, got {H}")
    if p.r_lr is None:
        raise InputError(f"preset {name} has a log-linear schedule with no size rule; use it at H = {p.H}")
    s = p.schedule
    r_lr = p.r_lr * H / p.H
    schedule = preset_from_rule(H, r_lr, s.theta, s.tau, k_c=s.k_c, N=s.N)
    return replace(p, name=f"{name}@{H}", H=H, schedule=schedule, r_lr=r_lr)
