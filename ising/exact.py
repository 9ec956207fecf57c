"""Exact results for the 2D Ising model on the L×L torus, H = −J Σ_<ij> s_i s_j, k_B = 1.

Bonds: every site (i, j) couples to its right neighbour (i, j+1 mod L) and its down
neighbour (i+1 mod L, j), so the lattice has 2L² bonds (for L = 2 each pair of neighbours
is joined by two bonds).  Three independent routes to the same numbers:

- enumeration of all 2^(L²) states (L ≤ 4);
- the exact density of states g(E, M) from the row-to-row transfer matrix (L ≤ 6);
- Kaufman's closed form of the finite-torus partition function (any L, any β > 0),
  B. Kaufman, Phys. Rev. 76, 1232 (1949), in the notation of
  A. E. Ferdinand and M. E. Fisher, Phys. Rev. 185, 832 (1969).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from scipy.special import ellipk, logsumexp

from skild_base.errors import InputError

BETA_C = float(np.log1p(np.sqrt(2.0)) / 2.0)
"""Critical inverse temperature β_c = ln(1 + √2)/2 (Kramers–Wannier self-dual point, sinh 2β_c = 1)."""

T_C = 1.0 / BETA_C
"""Critical temperature T_c = 1/β_c ≈ 2.269185."""

ENUMERATION_MAX_L = 4
"""Largest L whose 2^(L²) states enumerate_states lists."""

DOS_MAX_L = 6
"""Largest L for which density_of_states is exact in float64 transfer-matrix arithmetic."""


def p_add(beta: float, J: float = 1.0) -> float:
    """Wolff bond-activation probability 1 − exp(−2βJ) between aligned neighbours."""
    return float(-np.expm1(-2.0 * beta * J))


# --------------------------------------------------------------------------------------
# Enumeration (L ≤ 4)
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def enumerate_states(L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 2^(L²) states, read-only: spins int8 (2^(L²), L, L), total energy E (J = 1), magnetisation M.

    State k has spin −1 at site (i, j) where bit iL + j of k is set, so k and 2^(L²) − 1 − k
    are global flips of each other.
    """
    if not 2 <= L <= ENUMERATION_MAX_L:
        raise InputError(f"enumeration needs 2 <= L <= {ENUMERATION_MAX_L}, got L={L}")
    n_sites = L * L
    index = np.arange(2**n_sites, dtype=np.int64)
    bits = (index[:, None] >> np.arange(n_sites, dtype=np.int64)) & 1
    spins = (1 - 2 * bits).astype(np.int8).reshape(-1, L, L)
    s = spins.astype(np.int64)
    bond_sum = s * (np.roll(s, -1, axis=2) + np.roll(s, -1, axis=1))
    energy = -bond_sum.sum(axis=(1, 2))
    magnetization = s.sum(axis=(1, 2))
    for array in (spins, energy, magnetization):
        array.flags.writeable = False
    return spins, energy, magnetization


def boltzmann_weights(L: int, beta: float, J: float = 1.0) -> np.ndarray:
    """Normalised Boltzmann probabilities exp(−βJE)/Z aligned with enumerate_states(L)."""
    _, energy, _ = enumerate_states(L)
    log_w = -beta * J * energy.astype(np.float64)
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def exact_expectation(
    L: int,
    beta: float,
    fn: Callable[[np.ndarray], np.ndarray],
    J: float = 1.0,
    batch_size: int = 8192,
) -> np.ndarray | float:
    """Exact thermal average Σ_states p(state) fn(state); fn maps an int8 batch (n, L, L) to (n, ...)."""
    spins, _, _ = enumerate_states(L)
    p = boltzmann_weights(L, beta, J)
    total = 0.0
    for start in range(0, len(p), batch_size):
        values = np.asarray(fn(spins[start : start + batch_size]), dtype=np.float64)
        total = total + np.tensordot(p[start : start + batch_size], values, axes=(0, 0))
    return float(total) if np.ndim(total) == 0 else total


# --------------------------------------------------------------------------------------
# Density of states (L ≤ 6) from the row transfer matrix
# --------------------------------------------------------------------------------------


def _popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each non-negative integer in x."""
    x = np.asarray(x, dtype=np.int64)
    count = np.zeros_like(x)
    while np.any(x):
        count += x & 1
        x = x >> 1
    return count


@functools.lru_cache(maxsize=None)
def density_of_states(L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact state counts g[a, b] (int64, read-only) at energy E[a] (J = 1) and magnetisation M[b], both ascending.

    Z(x, y) = Σ g x^(n_unsat) y^(n_down) = Tr T(x, y)^L with the row-to-row transfer matrix
    T_ab = x^(vertical unsatisfied bonds a→b + horizontal ones in b) y^(down spins in b).
    Z is evaluated on roots of unity and g recovered by a discrete Fourier transform; the
    number of unsatisfied bonds on a torus is even, so x = exp(iπj/(L²+1)) (x² on the
    (L²+1)-th roots of unity) suffices.  Counts stay below 2^36, far inside float64's exact
    integer range, so rounding recovers them exactly.
    """
    if not 2 <= L <= DOS_MAX_L:
        raise InputError(f"density of states needs 2 <= L <= {DOS_MAX_L}, got L={L}")
    n_sites = L * L
    rows = np.arange(2**L, dtype=np.int64)
    rotated = (rows >> 1) | ((rows & 1) << (L - 1))
    horizontal = _popcount(rows ^ rotated)
    vertical = _popcount(rows[:, None] ^ rows[None, :])
    n_down = _popcount(rows)

    n_points = n_sites + 1
    j = np.arange(n_points)
    x = np.exp(1j * np.pi * j / n_points)  # x² runs over the n_points-th roots of unity
    y = np.exp(2j * np.pi * j / n_points)
    z = np.empty((n_points, n_points), dtype=np.complex128)
    x_power = x[:, None, None] ** (vertical + horizontal[None, :])[None]
    for k in range(n_points):
        transfer = x_power * (y[k] ** n_down)[None, None, :]
        z[:, k] = np.trace(np.linalg.matrix_power(transfer, L), axis1=1, axis2=2)
    counts = np.fft.fft2(z).real / n_points**2
    g = np.rint(counts).astype(np.int64)  # g[n_unsat/2, n_down]

    energy = -2 * n_sites + 4 * np.arange(n_points)  # E = −2L² + 2 n_unsat
    magnetization = n_sites - 2 * np.arange(n_points)  # M = L² − 2 n_down
    magnetization, g = magnetization[::-1].copy(), g[:, ::-1].copy()
    for array in (energy, magnetization, g):
        array.flags.writeable = False
    return energy, magnetization, g


def _dos_probabilities(L: int, beta: float, J: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(E, M, joint probability p[E, M], log Z) at inverse temperature β from the exact density of states."""
    energy, magnetization, g = density_of_states(L)
    log_g = np.full(g.shape, -np.inf)
    log_g[g > 0] = np.log(g[g > 0])
    log_w = log_g - beta * J * energy[:, None].astype(np.float64)
    log_z = float(logsumexp(log_w))
    return energy, magnetization, np.exp(log_w - log_z), log_z


def exact_log_z(L: int, beta: float, J: float = 1.0) -> float:
    """Exact log partition function ln Z of the L×L torus (L ≤ 6) from the density of states."""
    return _dos_probabilities(L, beta, J)[3]


def energy_distribution(L: int, beta: float, J: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact distribution of the total energy, L ≤ 6: (occupied levels E·J ascending, their probabilities)."""
    energy, _, g = density_of_states(L)
    p = _dos_probabilities(L, beta, J)[2].sum(axis=1)
    occupied = g.sum(axis=1) > 0
    return J * energy[occupied], p[occupied]


def exact_moments(L: int, beta: float, J: float = 1.0) -> dict[str, float]:
    """Exact per-spin moments e, e2, abs_m, m2, m4, specific_heat, binder (U4) of the L×L torus, L ≤ 6."""
    energy, magnetization, p, _ = _dos_probabilities(L, beta, J)
    n_sites = L * L
    e = J * energy[:, None] / n_sites
    m = magnetization[None, :] / n_sites
    mean_e = float((p * e).sum())
    m2 = float((p * m**2).sum())
    m4 = float((p * m**4).sum())
    return {
        "e": mean_e,
        "e2": float((p * e**2).sum()),
        "abs_m": float((p * np.abs(m)).sum()),
        "m2": m2,
        "m4": m4,
        # the centred form avoids the cancellation in <e²> − <e>² at low temperature
        "specific_heat": float(beta**2 * n_sites * (p * (e - mean_e) ** 2).sum()),
        "binder": 1.0 - m4 / (3.0 * m2**2),
    }


# --------------------------------------------------------------------------------------
# Kaufman's finite-torus partition function
# --------------------------------------------------------------------------------------


def _product_terms(x: np.ndarray, dx: np.ndarray, d2x: np.ndarray, kind: str) -> tuple[float, float, float]:
    """(ln P, A = P'/P, B = P''/P − A²) of P = Π_r f(x_r), f = 2cosh or 2sinh (x_r > 0), ' = d/dK."""
    decay = np.exp(-2.0 * np.abs(x))
    if kind == "cosh":
        log_f = np.abs(x) + np.log1p(decay)
        ratio = np.tanh(x)  # f'/f
        curvature = 4.0 * decay / (1.0 + decay) ** 2  # 1 − tanh² = sech²
    else:
        log_f = x + np.log(-np.expm1(-2.0 * x))
        ratio = 1.0 / np.tanh(x)
        curvature = -4.0 * decay / (1.0 - decay) ** 2  # 1 − coth² = −1/sinh²
    a = ratio * dx
    b = curvature * dx**2 + ratio * d2x
    return float(log_f.sum()), float(a.sum()), float(b.sum())


def _kaufman(L: int, K: float) -> tuple[float, float, float]:
    """(ln Z, d ln Z/dK, d² ln Z/dK²) of the L×L torus at K = βJ > 0 (Kaufman 1949; Ferdinand & Fisher 1969).

    Z = ½ (2 sinh 2K)^(L²/2) (Z1 + Z2 + Z3 + Z4), Z1,2 = Π_{l odd} 2cosh, 2sinh(Lγ_l/2),
    Z3,4 = Π_{l even} 2cosh, 2sinh(Lγ_l/2), l = 0 … 2L−1.  Every term is carried as a log
    scale times its value and K-derivatives, so nothing overflows at any L.  Derivatives are
    exact; at very high temperature (K ≪ 1) the prefactor and the products cancel in
    d ln Z/dK, costing a relative accuracy of about 1e−16/K², and at very low temperature the
    specific heat is exact only to an absolute ~1e−13 per spin.
    """
    if L < 2:
        raise InputError(f"Kaufman's formula needs L >= 2, got L={L}")
    if not K > 0:
        raise InputError(f"Kaufman's formula needs K = beta*J > 0, got K={K}")
    m = n = L
    s = np.sinh(2.0 * K)
    ch = np.cosh(2.0 * K)
    # cosh γ_l = cosh 2K coth 2K − cos(πl/n), written as 1 + (s − 1)²/s + 2 sin²(πl/2n)
    # so that γ_l ≈ 0 near T_c keeps full relative precision.
    c1 = 2.0 * ch * (1.0 - 1.0 / s**2)  # d/dK of cosh 2K coth 2K
    c2 = 4.0 * s - 4.0 / s + 8.0 * (ch / s) ** 2 / s  # second derivative

    l_all = np.arange(2 * n)
    cosh_minus_1 = (s - 1.0) ** 2 / s + 2.0 * np.sin(np.pi * l_all / (2 * n)) ** 2
    gamma = 2.0 * np.arcsinh(np.sqrt(cosh_minus_1 / 2.0))
    sinh_gamma = np.sqrt(cosh_minus_1 * (cosh_minus_1 + 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        d_gamma = c1 / sinh_gamma
        d2_gamma = (c2 - (1.0 + cosh_minus_1) * d_gamma**2) / sinh_gamma
    # γ_0 is signed: γ_0 = 2K + ln tanh K = 2(K − K*), negative above T_c (Kaufman 1949)
    gamma[0] = 2.0 * K + np.log(np.tanh(K))
    d_gamma[0] = 2.0 + 2.0 / s
    d2_gamma[0] = -4.0 * ch / s**2

    x, dx, d2x = m * gamma / 2.0, m * d_gamma / 2.0, m * d2_gamma / 2.0
    odd, even = l_all % 2 == 1, l_all % 2 == 0

    # Each term Z_i is stored as exp(log_i) · (z, z', z''), with z' and z'' the K-derivatives.
    logs, z0, z1, z2 = [], [], [], []
    for kind, sel in (("cosh", odd), ("sinh", odd), ("cosh", even)):
        log_p, a, b = _product_terms(x[sel], dx[sel], d2x[sel], kind)
        logs.append(log_p)
        z0.append(1.0)
        z1.append(a)
        z2.append(a**2 + b)
    # Z_4 = 2 sinh(x_0) · Π_{l even ≠ 0} 2 sinh(x_l): the x_0 factor changes sign at T_c and
    # vanishes there, so it is kept apart with its own derivatives.
    rest = even & (l_all > 0)
    log_r, a_r, b_r = _product_terms(x[rest], dx[rest], d2x[rest], "sinh")
    x0, dx0, d2x0 = x[0], dx[0], d2x[0]
    decay0 = np.exp(-2.0 * abs(x0))
    g = np.sign(x0) * (1.0 - decay0)  # 2 sinh(x_0) e^{−|x_0|}
    dg = (1.0 + decay0) * dx0
    d2g = g * dx0**2 + (1.0 + decay0) * d2x0
    logs.append(log_r + abs(x0))
    z0.append(g)
    z1.append(dg + g * a_r)
    z2.append(d2g + 2.0 * dg * a_r + g * (a_r**2 + b_r))

    logs = np.array(logs)
    scale = np.exp(logs - logs.max())
    s0 = float(np.dot(scale, z0))
    s1 = float(np.dot(scale, z1))
    s2 = float(np.dot(scale, z2))

    n_sites = m * n
    log_2sinh = 2.0 * K + np.log(-np.expm1(-4.0 * K))  # ln(2 sinh 2K)
    log_z = np.log(0.5) + 0.5 * n_sites * log_2sinh + logs.max() + np.log(s0)
    d_log_z = n_sites * ch / s + s1 / s0
    d2_log_z = -2.0 * n_sites / s**2 + s2 / s0 - (s1 / s0) ** 2
    return float(log_z), float(d_log_z), float(d2_log_z)


def kaufman_log_z(L: int, beta: float, J: float = 1.0) -> float:
    """Exact ln Z of the L×L torus at βJ > 0 (Kaufman 1949), overflow-free for any L."""
    return _kaufman(L, beta * J)[0]


def kaufman_energy(L: int, beta: float, J: float = 1.0) -> float:
    """Exact energy per spin ⟨E⟩/L² of the L×L torus (Kaufman 1949; analytic K-derivative)."""
    return -J * _kaufman(L, beta * J)[1] / L**2


def kaufman_specific_heat(L: int, beta: float, J: float = 1.0) -> float:
    """Exact specific heat per spin β²(⟨E²⟩ − ⟨E⟩²)/L² of the L×L torus (Kaufman 1949)."""
    K = beta * J
    return K**2 * _kaufman(L, K)[2] / L**2


def onsager_energy(beta: float, J: float = 1.0) -> float:
    """Infinite-lattice energy per spin (Onsager 1944, Phys. Rev. 65, 117), K = βJ, κ = 2 sinh 2K / cosh² 2K:

    e_∞ = −J coth 2K [1 + (2/π)(2 tanh² 2K − 1) K(κ)], K(κ) the complete elliptic integral.
    """
    K = beta * J
    kappa = 2.0 * np.sinh(2.0 * K) / np.cosh(2.0 * K) ** 2
    prefactor = 2.0 * np.tanh(2.0 * K) ** 2 - 1.0
    # at β_c the prefactor vanishes linearly while K(κ) diverges only logarithmically
    elliptic = prefactor * ellipk(kappa**2) if kappa < 1.0 else 0.0
    return float(-J / np.tanh(2.0 * K) * (1.0 + 2.0 / np.pi * elliptic))
