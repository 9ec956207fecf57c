"""The compiled Wolff kernel and RNG against their plain-Python twins (tests/naive.py)."""

import numpy as np
import pytest
from numba import njit

from ising import exact, wolff
from ising.rng import chain_states, probability_threshold, xoshiro_next
from tests import naive


@njit
def _draw(state, n):
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i], s0, s1, s2, s3 = xoshiro_next(s0, s1, s2, s3)
    return out


def test_xoshiro_reference_vector():
    # xoshiro256** reference implementation, state {1, 2, 3, 4}
    expected = [11520, 0, 1509978240, 1215971899390074240]
    assert [int(v) for v in _draw(np.array([1, 2, 3, 4], dtype=np.uint64), 4)] == expected
    twin = naive.Xoshiro256([1, 2, 3, 4])
    assert [twin.next() for _ in range(4)] == expected


def test_compiled_rng_matches_twin_on_random_states():
    state = chain_states(123, 3)[2]
    twin = naive.Xoshiro256(state)
    assert [int(v) for v in _draw(state.copy(), 1000)] == [twin.next() for _ in range(1000)]


def test_chain_states_depend_on_seed_and_chain_only():
    a, b = chain_states(7, 4), chain_states(7, 6)
    np.testing.assert_array_equal(a, b[:4])
    assert len({tuple(row) for row in b}) == 6
    assert not np.array_equal(chain_states(8, 4), a)


@pytest.mark.parametrize("L,beta", [(2, exact.BETA_C), (5, 0.3), (8, exact.BETA_C), (11, 0.6)])
def test_cluster_updates_identical_to_naive_twin(L, beta):
    rng = np.random.default_rng(L)
    spins = rng.choice(np.array([-1, 1], dtype=np.int8), size=(L, L))
    state = chain_states(L, 1)[0]
    threshold = probability_threshold(exact.p_add(beta))
    twin_spins, twin_rng = spins.copy(), naive.Xoshiro256(state)
    stack = np.empty(L * L, np.int32)
    for _ in range(300):
        flipped = wolff.cluster_updates(spins, state, threshold, 1, stack)
        assert flipped == naive.wolff_update(twin_spins, twin_rng, int(threshold))
        np.testing.assert_array_equal(spins, twin_spins)
    assert [int(v) for v in state] == twin_rng.s


def test_energy_magnetization_matches_roll():
    rng = np.random.default_rng(0)
    for L in (2, 3, 7, 16):
        s = rng.choice(np.array([-1, 1], dtype=np.int8), size=(L, L))
        assert wolff.energy_magnetization(s, 1.0) == naive.energy_magnetization(s)


def test_threshold_probability():
    assert probability_threshold(0.0) == 0
    assert probability_threshold(1.0) == 2**64 - 1
    assert abs(int(probability_threshold(0.25)) - 2**62) <= 1
    with pytest.raises(ValueError):
        probability_threshold(1.5)
