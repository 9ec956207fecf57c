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


def transfer_spectrum(S0: np.ndarray, basis_name: str, H: int, W: int) -> np.ndarray:
    """S0 (C, h, w) of a training grid carried to the H×W grid of the same basis, in lattice units.

    S0 = A q^(−a) · R(q_y, q_x): the power law of the lowest shells carries the steep trend
    (and extrapolates below the training grid's lowest wavenumber), the slowly varying
    remainder R (bending, lattice anisotropy) is interpolated log-bilinearly and held
    constant beyond the training grid's largest wavenumber.  The DC mode scales as s^a.
    """
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
        out[c] = result
    return out


def transferred_process(process, H: int, W: int):
    """The process of an (h, w) grid on an H×W grid in lattice units (scale s = H/h): schedule in
    physical wavenumbers, S0 carried as power law × interpolated remainder (`transfer_spectrum`)."""
    import torch

    from skild_phys.process.diffusion import Process

    h, w = process.basis.H, process.basis.W
    s = H / h
    schedule = scaled_schedule(process.schedule, s)
    S0 = transfer_spectrum(process.S0.cpu().numpy().reshape(-1, h, w), process.basis.name, H, W)
    return Process(Basis.named(process.basis.name, H, W), schedule, torch.as_tensor(S0)).to(process.S0.device)
