"""A checkpoint on another lattice size: the SKILD process in lattice units (docs/theory.md §5.6).

A mode's wavenumber is k = q·H with q its wavenumber per lattice spacing, and the forward
process keeps ᾱ_n(k) = exp(−max(k², k_c²) λ_n) of it.  Running a model trained on an H×H
grid on an H'×H' grid (s = H'/H) with

    λ'_n = λ_n / s²,   k_c' = s·k_c,   S0'(q) = S0(q)  (the spectrum per mode in lattice units),

gives every physical wavenumber q the same ᾱ_n and the same noise variance at every step n,
so the step index the network is conditioned on means the same noise state on both grids,
and a translation-invariant, fully convolutional periodic network sees, locally, the same
input statistics.  The start step of a factor f is then the same n0 on both grids
(r'(n) = s·r(n), so r'(n0) = H'/f exactly where r(n0) = H/f).

S0' is S0 in (q_y, q_x): the power law A q^(−a) fitted to the lowest shells times the
remainder S0/(A q^(−a)), interpolated log-bilinearly between the training grid's
wavenumbers (so the lattice anisotropy at large q is kept) — modes below the training
grid's lowest wavenumber follow the power law — and the DC mode is scaled with it
(DC' = DC·s^a: the magnetisation variance L²⟨m²⟩ and S(2π/L) share their finite-size
scaling).

That carry treats the training grid's low modes as the infinite lattice's.  At a critical point
they are not: the correlation length is the lattice size, and S_L(q) = L^(2−η) Φ(qL) + D(q), a
singular part that scales with L and a regular background that does not.  Where the exponent
2 − η is known (`scaling_exponent`: 7/4 for a checkpoint trained on the 2D Ising model at β_c),
`transfer_spectrum(..., exponent=a)` carries the low modes by finite-size scaling instead: a mode
of the larger grid takes the training grid's mode of the same index (the same qL),

    S0'(u) = s^a (S0(u) − D) + D,

with D the background fitted as S q^a = B + D q^a over the training shells 2 q_min ≤ q ≤ π/2;
the weight of this rule falls linearly from 1 to 0 as the training mode's wavenumber goes from
π/2 to π (where the lattice, not the size, bends the spectrum), and the lattice-unit carry takes
over (log-linear blend).
"""

from __future__ import annotations

import math
from dataclasses import replace as dc_replace

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from analysis.spectrum import fourier_frequency
from skild_base.errors import InputError
from skild_phys.process.basis import Basis
from skild_phys.process.schedule import Schedule

LOW_SHELLS = 3  # lowest non-zero |k| shells of the training grid that fix the extrapolating power law
ISING_2D_EXPONENT = 1.75  # 2 − η of the 2D Ising universality class


def scaling_exponent(config) -> float | None:
    """2 − η of the training data where it is known to be critical, else None (lattice-unit carry).

    Known: a lattice store of the 2D Ising model (`data_attrs` written by `simulate`) at β_c.
    """
    from ising.exact import BETA_C

    attrs = (getattr(config, "data", None) or {}).get("data_attrs") or {}
    beta = attrs.get("beta")
    if attrs.get("model") == "ising2d" and beta is not None and abs(float(beta) - BETA_C) < 1e-9:
        return ISING_2D_EXPONENT
    return None


def scaled_schedule(schedule: Schedule, s: float) -> Schedule:
    """The schedule in lattice units on a grid s times larger: λ'(t) = λ(t)/s², k_c' = s k_c.

    Exact for the linear schedule (λ_i, λ_f → s λ_i, s λ_f) and the log-linear one
    (λ_i, λ_f → λ_i − 2 log10 s, λ_f − 2 log10 s); the white-noise cosine schedule has no
    wavenumber dependence to carry.
    """
    if schedule.kind == "linear":
        return dc_replace(schedule, lam_i=s * schedule.lam_i, lam_f=s * schedule.lam_f, k_c=s * schedule.k_c)
    if schedule.kind == "log_linear":
        shift = 2 * math.log10(s)
        return dc_replace(schedule, lam_i=schedule.lam_i - shift, lam_f=schedule.lam_f - shift, k_c=s * schedule.k_c)
    raise InputError(f"a {schedule.kind} schedule has no lattice-unit form; size transfer needs a SKILD schedule")


def axis_wavenumbers(basis_name: str, N: int) -> np.ndarray:
    """Wavenumber per lattice spacing of each 1D row of the basis: DCT π u/N, Fourier 2π m/N."""
    if basis_name == "dct":
        return np.pi * np.arange(N) / N
    if basis_name == "fourier":
        return 2 * np.pi * fourier_frequency(N) / N
    raise InputError(f"size transfer supports the dct and fourier bases, not {basis_name!r}")


def _grid_spectrum(S0: np.ndarray, basis_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_y, q_x, S on the distinct (q_y, q_x) pairs): S0 averaged over the modes sharing them."""
    H, W = S0.shape
    qy_rows, qx_cols = axis_wavenumbers(basis_name, H), axis_wavenumbers(basis_name, W)
    qy, iy = np.unique(qy_rows, return_inverse=True)
    qx, ix = np.unique(qx_cols, return_inverse=True)
    total = np.zeros((len(qy), len(qx)))
    count = np.zeros((len(qy), len(qx)))
    np.add.at(total, (iy[:, None].repeat(W, 1), ix[None, :].repeat(H, 0)), S0)
    np.add.at(count, (iy[:, None].repeat(W, 1), ix[None, :].repeat(H, 0)), 1)
    return qy, qx, total / count


def low_power_law(S0: np.ndarray, basis_name: str) -> tuple[float, float, float]:
    """(A, a, q_min): S ≈ A q^(−a) fitted (log-log least squares) to the lowest non-zero shells of S0."""
    H, W = S0.shape
    qy, qx = axis_wavenumbers(basis_name, H), axis_wavenumbers(basis_name, W)
    q = np.hypot(qy[:, None], qx[None, :])
    shells = np.unique(np.round(q[q > 0], 12))[:LOW_SHELLS]
    logq = np.log(shells)
    logS = np.array([np.log(S0[np.isclose(q, shell)]).mean() for shell in shells])
    a, logA = np.polyfit(logq, logS, 1)
    return float(np.exp(logA)), float(-a), float(shells[0])


def regular_background(S: np.ndarray, basis_name: str, a: float) -> float:
    """D ≥ 0 in S ≈ B q^(−a) + D: least squares of S q^a = B + D q^a over the modes 2 q_min ≤ q ≤ π/2."""
    h, w = S.shape
    qy, qx = axis_wavenumbers(basis_name, h), axis_wavenumbers(basis_name, w)
    q = np.hypot(qy[:, None], qx[None, :])
    q_min = min(qy[1], qx[1])
    window = (q >= 2 * q_min - 1e-12) & (q <= np.pi / 2 + 1e-12)
    if np.unique(np.round(q[window], 12)).size < 3:
        return 0.0
    D, _ = np.polyfit(q[window] ** a, S[window] * q[window] ** a, 1)
    return max(float(D), 0.0)


def _scaling_carry(S: np.ndarray, lattice: np.ndarray, basis_name: str, H: int, W: int, a: float) -> np.ndarray:
    """The finite-size-scaling rule blended into the lattice-unit carry `lattice` (module docstring)."""
    h, w = S.shape
    s = H / h
    qy, qx, grid = _grid_spectrum(S, basis_name)
    D = regular_background(S, basis_name, a)
    # a mode of the larger grid and the training mode of the same index share their axis wavenumbers × s
    src_y, src_x = s * axis_wavenumbers(basis_name, H), s * axis_wavenumbers(basis_name, W)
    iy, ix = np.searchsorted(qy, src_y - 1e-9), np.searchsorted(qx, src_x - 1e-9)
    iy, ix = np.minimum(iy, len(qy) - 1), np.minimum(ix, len(qx) - 1)
    hit_y, hit_x = np.isclose(qy[iy], src_y), np.isclose(qx[ix], src_x)
    hit = hit_y[:, None] & hit_x[None, :]
    fss = s**a * np.maximum(grid[iy[:, None], ix[None, :]] - D, 0.0) + D
    # the larger of the two wavenumbers decides where the lattice bends the spectrum (s < 1 carries back)
    q_far = np.maximum(np.hypot(src_y[:, None], src_x[None, :]), np.hypot(src_y[:, None], src_x[None, :]) / s)
    weight = np.where(hit, np.clip(2.0 - 2.0 * q_far / np.pi, 0.0, 1.0), 0.0)
    with np.errstate(divide="ignore"):
        return np.exp(weight * np.log(np.where(hit, fss, 1.0)) + (1 - weight) * np.log(lattice))


def transfer_spectrum(S0: np.ndarray, basis_name: str, H: int, W: int, exponent: float | None = None) -> np.ndarray:
    """S0 (C, h, w) of a training grid carried to the H×W grid of the same basis, in lattice units.

    S0 = A q^(−a) · R(q_y, q_x): the power law of the lowest shells carries the steep trend
    (and extrapolates below the training grid's lowest wavenumber), the slowly varying
    remainder R (bending, lattice anisotropy) is interpolated log-bilinearly and held
    constant beyond the training grid's largest wavenumber.  The DC mode scales as s^a.
    With `exponent` (2 − η of critical data) the low modes follow finite-size scaling instead
    (`_scaling_carry`, module docstring); it needs the same scale s on both axes.
    """
    if exponent is not None and H * S0.shape[-1] != W * S0.shape[-2]:
        raise InputError(f"finite-size scaling of S0 needs the same scale on both axes, got "
                         f"{S0.shape[-2]}x{S0.shape[-1]} -> {H}x{W}")
    S0 = np.asarray(S0, dtype=np.float64)
    out = np.empty((S0.shape[0], H, W))
    QY, QX = np.meshgrid(axis_wavenumbers(basis_name, H), axis_wavenumbers(basis_name, W), indexing="ij")
    Q = np.hypot(QY, QX)
    s = H / S0.shape[-2]
    for c, S in enumerate(S0):
        qy, qx, grid = _grid_spectrum(S, basis_name)
        A, a, _ = low_power_law(S, basis_name)
        GY, GX = np.meshgrid(qy, qx, indexing="ij")
        G = np.hypot(GY, GX)
        logR = np.log(grid) - np.log(A) + a * np.log(np.where(G > 0, G, 1.0))
        logR[0, 0] = 0.5 * (logR[0, 1] + logR[1, 0])  # the DC is not part of the smooth remainder
        interp = RegularGridInterpolator((qy, qx), logR)
        logR_t = interp(np.stack([np.clip(QY, qy[0], qy[-1]), np.clip(QX, qx[0], qx[-1])], axis=-1))
        result = A * np.where(Q > 0, Q, 1.0) ** (-a) * np.exp(logR_t)
        result[0, 0] = S[0, 0] * s ** a
        out[c] = result if exponent is None else _scaling_carry(S, result, basis_name, H, W, exponent)
    return out


def transferred_process(process, H: int, W: int, exponent: float | None = None):
    """The process of an (h, w) grid on an H×W grid in lattice units (scale s = H/h): schedule in
    physical wavenumbers, S0 carried as power law × interpolated remainder, its low modes by
    finite-size scaling where `exponent` (2 − η) is given (`transfer_spectrum`)."""
    import torch

    from skild_phys.process.diffusion import Process

    h, w = process.basis.H, process.basis.W
    s = H / h
    schedule = scaled_schedule(process.schedule, s)
    S0 = transfer_spectrum(process.S0.cpu().numpy().reshape(-1, h, w), process.basis.name, H, W, exponent)
    return Process(Basis.named(process.basis.name, H, W), schedule, torch.as_tensor(S0)).to(process.S0.device)
