"""The kappa4 kernel against a brute-force twin, and kappa4 of fields with known cumulants."""

import itertools
import math

import numba
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.correlation import pair_means
from analysis.cumulants import CORNER_TERMS, corner_means, expand_corner_means, kappa4, kappa4_from_means
from ising.measure import correlators

N_SIGMA = 4.0


def set_partitions(items):
    """All partitions of the list `items` into non-empty blocks."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


def joint_cumulant(moment, variables="abcd"):
    """kappa(a, b, c, d) = sum over partitions pi of (|pi| - 1)! (-1)^(|pi| - 1) prod_B E[prod_B] (Leonov-Shiryaev)."""
    total = 0.0
    for part in set_partitions(list(variables)):
        n = len(part)
        term = (-1) ** (n - 1) * math.factorial(n - 1)
        for block in part:
            term *= moment["".join(sorted(block))]
        total += term
    return total


def brute_force_kappa4(x, l):
    """kappa4(l) with explicit loops over samples and anchors, then the partition formula."""
    n, L, _ = x.shape
    sums = {"".join(c): 0.0 for r in range(1, 5) for c in itertools.combinations("abcd", r)}
    for s in range(n):
        for i in range(L):
            for j in range(L):
                corner = {"a": x[s, i, j], "b": x[s, (i + l) % L, j],
                          "c": x[s, i, (j + l) % L], "d": x[s, (i + l) % L, (j + l) % L]}
                for key in sums:
                    sums[key] += math.prod(float(corner[v]) for v in key)
    moment = {key: value / (n * L * L) for key, value in sums.items()}
    return joint_cumulant(moment), moment


def test_partition_formula_matches_written_out_formula():
    assert len(list(set_partitions(list("abcd")))) == 15  # Bell number B4
    rng = np.random.default_rng(0)
    M = rng.normal(size=15)
    moment = dict(zip(CORNER_TERMS, M))
    assert kappa4_from_means(M) == pytest.approx(joint_cumulant(moment), abs=1e-13)


@settings(max_examples=12, deadline=None)
@given(L=st.integers(2, 7), n=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_kernel_matches_brute_force_twin(L, n, seed):
    rng = np.random.default_rng(seed)
    # correlated values with non-zero mean, so every mean term of the cumulant matters
    x = 0.7 + rng.normal(size=(n, L, L)) + 0.5 * rng.normal(size=(n, 1, L))
    sizes = np.arange(L)
    fast = kappa4(x, sizes)
    means = expand_corner_means(corner_means(x, sizes).mean(axis=0))
    for p, l in enumerate(sizes):
        slow, moment = brute_force_kappa4(x, l)
        assert fast[p] == pytest.approx(slow, abs=1e-12, rel=1e-12)
        np.testing.assert_allclose(means[p], [moment[t] for t in CORNER_TERMS], rtol=1e-12, atol=1e-12)


def test_spin_dtypes_agree_and_threads_do_not_change_results():
    rng = np.random.default_rng(1)
    spins = np.where(rng.random((64, 16, 16)) < 0.55, 1, -1).astype(np.int8)
    sizes = [1, 2, 3, 8, 15]
    ref = corner_means(spins, sizes)
    np.testing.assert_array_equal(corner_means(spins.astype(np.float64), sizes), ref)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = corner_means(spins, sizes), pair_means(spins)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one[0], ref)
    for a, b in zip(one[1], pair_means(spins)):
        np.testing.assert_array_equal(a, b)


def test_sizes_outside_the_lattice_are_rejected():
    x = np.ones((2, 4, 4))
    for bad in ([4], [-1], []):
        with pytest.raises(ValueError):
            corner_means(x, bad)


def _samples(x):
    return xr.DataArray(x, dims=("sample", "y", "x"), name="field")


def test_gaussian_field_has_zero_kappa4():
    rng = np.random.default_rng(2)
    L, n = 16, 3000
    k = np.fft.fftfreq(L)
    filt = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) * 40.0)  # correlation length ~ 2 sites
    white = rng.normal(size=(n, L, L))
    field = 0.8 + 3.0 * np.fft.ifft2(np.fft.fft2(white) * filt).real
    ds = correlators([_samples(field)], sizes=[1, 2, 3, 5, 8], project="none", basis=None, progress=False)
    k4, err = ds.kappa4.values[0], ds.kappa4_err.values[0]
    assert np.all(err > 0)
    assert np.all(np.abs(k4) < N_SIGMA * err), (k4, err)
    # neighbouring corners are strongly correlated, so the vanishing cumulant is not trivial
    assert ds.G.values[0][1] > 0.3 * ds.G.values[0][0]


def test_independent_biased_spins_have_closed_form_cumulant():
    rng = np.random.default_rng(3)
    p_up, L, n = 0.7, 12, 2000
    mu = 2 * p_up - 1
    spins = np.where(rng.random((n, L, L)) < p_up, 1, -1).astype(np.int8)
    sizes = [0, 1, 2, 6]
    ds = correlators([_samples(spins)], sizes=sizes, basis=None, progress=False)
    k4, err = ds.kappa4.values[0], ds.kappa4_err.values[0]
    # l = 0: four copies of one +-1 spin of mean mu: E s^2 = E s^4 = 1, E s^3 = E s
    single_site = 1 - 4 * mu**2 - 3 + 12 * mu**2 - 6 * mu**4
    assert abs(k4[0] - single_site) < N_SIGMA * err[0] + 1e-12
    # distinct independent spins: every joint cumulant vanishes, although E[abcd] = mu^4 does not
    assert np.all(np.abs(k4[1:]) < N_SIGMA * err[1:]), (k4, err)
    means = expand_corner_means(corner_means(spins, [1]).mean(axis=0))[0]
    assert means[CORNER_TERMS.index("abcd")] == pytest.approx(mu**4, abs=0.01)
