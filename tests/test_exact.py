"""Exact Ising results checked against each other and against independent physics facts.

Three routes (enumeration, transfer-matrix density of states, Kaufman's closed form) share
no code, so agreement to ~1e-10 is a real test; float64 round-off alone leaves ~1e-13.
"""

import itertools
import time

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from ising.exact import (
    BETA_C,
    T_C,
    boltzmann_weights,
    density_of_states,
    energy_distribution,
    enumerate_states,
    exact_expectation,
    exact_log_z,
    exact_moments,
    kaufman_energy,
    kaufman_log_z,
    kaufman_specific_heat,
    onsager_energy,
    p_add,
)

BETAS = [0.2, BETA_C, 0.6]  # high T, critical, low T


def enumerated_thermodynamics(L, beta):
    """ln Z, energy per spin and specific heat per spin straight from the list of all states."""
    _, energy, _ = enumerate_states(L)
    energy = energy.astype(np.float64)
    log_z = logsumexp(-beta * energy)
    p = np.exp(-beta * energy - log_z)
    mean = p @ energy
    variance = p @ (energy - mean) ** 2
    return log_z, mean / L**2, beta**2 * variance / L**2


def dos_thermodynamics(L, beta):
    """The same three numbers from the density of states (the only exact route for L = 5, 6)."""
    moments = exact_moments(L, beta)
    return exact_log_z(L, beta), moments["e"], moments["specific_heat"]


def naive_energy(spins):
    """Energy of one configuration by explicit loops over every site's right and down bond."""
    L = spins.shape[0]
    total = 0
    for i in range(L):
        for j in range(L):
            total -= int(spins[i, j]) * (int(spins[i, (j + 1) % L]) + int(spins[(i + 1) % L, j]))
    return total


def two_by_two_log_z(K):
    """ln Z of the 2×2 torus, Z = 2e^{8K} + 12 + 2e^{−8K} (E = −8, 0, +8 with 2, 12, 2 states)."""
    return 8 * K + np.log(2 + 12 * np.exp(-8 * K) + 2 * np.exp(-16 * K))


# ---- constants ---------------------------------------------------------------------------


def test_critical_point_is_self_dual():
    # Kramers–Wannier: sinh 2β_c = 1; then e^{−2β_c} = √2 − 1, so p_add(β_c) = 2 − √2.
    assert np.sinh(2 * BETA_C) == pytest.approx(1.0, abs=1e-15)
    assert T_C * BETA_C == pytest.approx(1.0, abs=1e-15)
    assert T_C == pytest.approx(2.269185314213022, abs=1e-12)
    assert p_add(BETA_C) == pytest.approx(2 - np.sqrt(2), abs=1e-15)
    assert p_add(0.3, J=2.0) == pytest.approx(p_add(0.6), abs=1e-15)
    assert p_add(0.0) == 0.0


# ---- enumeration --------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
def test_enumeration_lists_every_state_once(L):
    spins, energy, magnetization = enumerate_states(L)
    assert spins.shape == (2 ** (L * L), L, L) and spins.dtype == np.int8
    assert set(np.unique(spins)) == {-1, 1}
    assert len(np.unique(spins.reshape(len(spins), -1), axis=0)) == len(spins)
    np.testing.assert_array_equal(magnetization, spins.sum(axis=(1, 2)))
    # ferromagnetic ground states: the two uniform ones, E = −2L² (2L² bonds)
    assert energy.min() == -2 * L * L and np.sum(energy == energy.min()) == 2


@pytest.mark.parametrize("L", [2, 3, 4])
def test_enumeration_energy_matches_naive_loop(L):
    spins, energy, _ = enumerate_states(L)
    rng = np.random.default_rng(L)
    for k in rng.choice(len(spins), size=min(200, len(spins)), replace=False):
        assert energy[k] == naive_energy(spins[k])


def test_two_by_two_by_hand():
    # sites a b / c d; on the 2×2 torus each neighbour pair is joined by two bonds
    K = 0.37
    weights, energies = [], []
    for a, b, c, d in itertools.product((1, -1), repeat=4):
        e = -2 * (a * b + c * d + a * c + b * d)
        energies.append(e)
        weights.append(np.exp(-K * e))
    z = sum(weights)
    mean_energy = sum(w * e for w, e in zip(weights, energies)) / z
    assert np.log(z) == pytest.approx(two_by_two_log_z(K), rel=1e-14)
    assert np.log(z) == pytest.approx(enumerated_thermodynamics(2, K)[0], rel=1e-14)
    assert mean_energy / 4 == pytest.approx(enumerated_thermodynamics(2, K)[1], rel=1e-14)
    assert sorted(energies) == sorted(enumerate_states(2)[1].tolist())


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("beta", BETAS)
def test_probabilities_normalised_and_flip_symmetric(L, beta):
    p = boltzmann_weights(L, beta)
    spins, _, _ = enumerate_states(L)
    assert p.sum() == pytest.approx(1.0, abs=1e-14)
    # the state with index k flipped globally has index 2^(L²) − 1 − k (all bits inverted)
    np.testing.assert_allclose(p, p[::-1], rtol=1e-13)
    np.testing.assert_array_equal(spins[::-1], -spins)
    assert exact_expectation(L, beta, lambda s: s.mean(axis=(1, 2))) == pytest.approx(0.0, abs=1e-14)


def test_infinite_temperature_is_uniform():
    p = boltzmann_weights(3, 0.0)
    np.testing.assert_allclose(p, 1 / 2**9, rtol=1e-14)


def test_expectation_independent_of_batch_size():
    def correlation(s):
        return s[:, :1, :1] * s  # ⟨s_00 s_ij⟩, shape (n, L, L)

    full = exact_expectation(4, BETA_C, correlation)
    small = exact_expectation(4, BETA_C, correlation, batch_size=1000)
    np.testing.assert_allclose(small, full, rtol=1e-13)
    assert full[0, 0] == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(full, full.T, rtol=1e-13)  # square-lattice reflection symmetry
    assert np.all(np.diff(full[0, :3]) < 0)  # correlations decay with distance on a ferromagnet


# ---- density of states ----------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
def test_density_of_states_equals_enumerated_histogram(L):
    _, energy, magnetization = enumerate_states(L)
    levels_e, levels_m, g = density_of_states(L)
    histogram = np.zeros_like(g)
    np.add.at(histogram, (np.searchsorted(levels_e, energy), np.searchsorted(levels_m, magnetization)), 1)
    np.testing.assert_array_equal(g, histogram)


@pytest.mark.parametrize("L", [2, 3, 4, 5, 6])
def test_density_of_states_counts(L):
    levels_e, levels_m, g = density_of_states(L)
    assert g.sum() == 2 ** (L * L) and g.min() >= 0
    np.testing.assert_array_equal(g, g[:, ::-1])  # g(E, M) = g(E, −M)
    ground = levels_e == -2 * L * L
    assert g[ground].sum() == 2
    if L >= 3:
        # the lowest excitations are single spin flips, 4 broken bonds each: 2·L² states
        assert g[levels_e == -2 * L * L + 4].sum() == 0
        assert g[levels_e == -2 * L * L + 8].sum() == 2 * L * L


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("beta", BETAS)
def test_moments_match_enumeration(L, beta):
    def per_spin(s):
        s = s.astype(np.int64)
        energy = -(s * (np.roll(s, -1, axis=2) + np.roll(s, -1, axis=1))).sum(axis=(1, 2)) / L**2
        m = s.mean(axis=(1, 2))
        return np.stack([energy, energy**2, np.abs(m), m**2, m**4], axis=1)

    e, e2, abs_m, m2, m4 = exact_expectation(L, beta, per_spin)
    moments = exact_moments(L, beta)
    expected = {
        "e": e,
        "e2": e2,
        "abs_m": abs_m,
        "m2": m2,
        "m4": m4,
        "specific_heat": beta**2 * L**2 * (e2 - e**2),
        "binder": 1 - m4 / (3 * m2**2),
    }
    for key, value in expected.items():
        # e2 − e² loses ~3 digits to cancellation at β = 0.6; everything else is at round-off
        assert moments[key] == pytest.approx(value, rel=1e-10), key


@pytest.mark.parametrize("L", [3, 4])
@pytest.mark.parametrize("beta", BETAS)
def test_energy_distribution_matches_weighted_histogram(L, beta):
    _, energy, _ = enumerate_states(L)
    p = boltzmann_weights(L, beta)
    levels, probabilities = energy_distribution(L, beta)
    np.testing.assert_array_equal(levels, np.unique(energy))
    histogram = np.array([p[energy == level].sum() for level in levels])
    np.testing.assert_allclose(probabilities, histogram, rtol=1e-12)


def test_energy_distribution_five_by_five():
    levels, probabilities = energy_distribution(5, BETA_C)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all(probabilities > 0) and np.all(np.diff(levels) > 0)
    assert probabilities @ levels / 25 == pytest.approx(kaufman_energy(5, BETA_C), rel=1e-12)


def test_binder_limits():
    # ordered phase: m = ±1 gives U4 → 2/3; disordered: Gaussian m gives U4 → 0
    assert exact_moments(4, 5.0)["binder"] == pytest.approx(2 / 3, abs=1e-12)
    assert abs(exact_moments(6, 0.01)["binder"]) < 0.05


# ---- Kaufman's finite-lattice solution -------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("beta", BETAS)
def test_kaufman_matches_exact_small_lattices(L, beta):
    reference = enumerated_thermodynamics(L, beta) if L <= 4 else dos_thermodynamics(L, beta)
    kaufman = (kaufman_log_z(L, beta), kaufman_energy(L, beta), kaufman_specific_heat(L, beta))
    for name, got, want in zip(("ln Z", "e", "C"), kaufman, reference):
        assert got == pytest.approx(want, rel=1e-10), name


@settings(max_examples=60, deadline=None)
@given(L=st.sampled_from([2, 3, 4, 5]), beta=st.floats(0.02, 2.0), J=st.sampled_from([1.0, 0.5, 2.0]))
def test_kaufman_matches_density_of_states_at_any_temperature(L, beta, J):
    # Below βJ ≈ 0.02 Kaufman's derivatives lose ~1e−16/(βJ)² to cancellation; at βJ = 4 the
    # specific heat is ~1e−12 and only its absolute accuracy (~1e−13) is meaningful.
    assert kaufman_log_z(L, beta, J) == pytest.approx(exact_log_z(L, beta, J), rel=1e-12)
    assert kaufman_energy(L, beta, J) == pytest.approx(exact_moments(L, beta, J)["e"], rel=1e-10)
    c_exact = exact_moments(L, beta, J)["specific_heat"]
    assert kaufman_specific_heat(L, beta, J) == pytest.approx(c_exact, rel=1e-8, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(K=st.floats(0.01, 20.0))
def test_kaufman_two_by_two_closed_form(K):
    assert kaufman_log_z(2, K) == pytest.approx(two_by_two_log_z(K), rel=1e-13)


@pytest.mark.parametrize("L", [64, 512])
@pytest.mark.parametrize("beta", [0.4, BETA_C, 0.45])
def test_kaufman_derivatives_match_finite_differences(L, beta):
    # five-point stencil: truncation ~ (hL)^4 ≈ 1e−9 relative at the largest L, round-off ~1e−11
    h = 1e-5

    def stencil(f):
        return (-f(beta + 2 * h) + 8 * f(beta + h) - 8 * f(beta - h) + f(beta - 2 * h)) / (12 * h)

    energy = -stencil(lambda b: kaufman_log_z(L, b)) / L**2
    specific_heat = -(beta**2) * stencil(lambda b: kaufman_energy(L, b))
    assert kaufman_energy(L, beta) == pytest.approx(energy, rel=1e-8)
    assert kaufman_specific_heat(L, beta) == pytest.approx(specific_heat, rel=1e-7)


def test_onsager_energy_at_critical_point():
    assert onsager_energy(BETA_C) == pytest.approx(-np.sqrt(2), abs=1e-14)
    assert onsager_energy(BETA_C * (1 + 1e-9)) == pytest.approx(-np.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("beta", [0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
def test_kaufman_matches_onsager_off_critical(beta):
    # away from T_c finite-size corrections fall as exp(−L/ξ) with ξ ≲ 6, negligible at L = 256
    assert kaufman_energy(256, beta) == pytest.approx(onsager_energy(beta), abs=1e-8)


def test_kaufman_critical_energy_approaches_onsager_as_one_over_l():
    deviation = {L: kaufman_energy(L, BETA_C) + np.sqrt(2) for L in (128, 256, 512)}
    # e_L = −√2 + a/L + …: doubling L halves the deviation.  The remainder is O(L^−3) here
    # (relative 4e−6 at L = 256); a 1/L² or log L convergence would miss by far more than 1e−3.
    assert deviation[128] < deviation[256] < deviation[512] < 0
    assert deviation[128] / deviation[256] == pytest.approx(2.0, rel=1e-3)
    assert deviation[256] / deviation[512] == pytest.approx(2.0, rel=1e-3)


def test_kaufman_free_energy_at_critical_point():
    # Onsager: ln Z / N → ln 2 / 2 + 2G/π at T_c (G Catalan's constant); on the torus the
    # correction is a universal amplitude over L², so L²(ln Z/N − f_∞) is constant in L.
    f_inf = np.log(2) / 2 + 2 * float(mpmath.catalan) / np.pi
    amplitude = {L: kaufman_log_z(L, BETA_C) - L**2 * f_inf for L in (256, 512)}
    assert amplitude[256] == pytest.approx(amplitude[512], rel=1e-5)
    assert 0 < amplitude[512] < 1


def test_kaufman_specific_heat_diverges_logarithmically():
    # Ferdinand & Fisher (1969): C/N = (8β_c²/π) ln L + const + O(ln L / L) at T_c
    growth = kaufman_specific_heat(512, BETA_C) - kaufman_specific_heat(256, BETA_C)
    assert growth == pytest.approx(8 * BETA_C**2 / np.pi * np.log(2), abs=1e-3)


@pytest.mark.parametrize("beta", [0.05, BETA_C, 2.0])
def test_kaufman_large_lattice_is_finite_and_fast(beta):
    start = time.perf_counter()
    log_z = kaufman_log_z(1024, beta)
    e = kaufman_energy(1024, beta)
    c = kaufman_specific_heat(1024, beta)
    assert time.perf_counter() - start < 1.0
    assert np.isfinite(log_z) and 1024**2 * np.log(2) < log_z
    assert -2 < e < 0 and c > 0


# ---- input checks ---------------------------------------------------------------------------


def test_out_of_range_sizes_raise():
    for bad in (1, 5):
        with pytest.raises(ValueError):
            enumerate_states(bad)
    with pytest.raises(ValueError):
        density_of_states(7)
    with pytest.raises(ValueError):
        kaufman_log_z(8, 0.0)
