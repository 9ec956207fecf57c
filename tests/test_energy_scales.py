"""benchmarks/energy_scales.py: the energies against a loop over bonds, and the split of Var e
against a closed-form Gaussian case."""

import importlib.util
import math
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("energy_scales", Path(__file__).parent.parent / "benchmarks" / "energy_scales.py")
energy_scales = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(energy_scales)


def _energy_loop(s):
    L = s.shape[0]
    return -sum(s[i, j] * (s[(i + 1) % L, j] + s[i, (j + 1) % L]) for i in range(L) for j in range(L)) / L**2


def test_energies_match_the_loop_over_bonds():
    rng = np.random.default_rng(3)
    spins = rng.choice(np.array([-1, 1], dtype=np.int8), size=(3, 8, 8))
    e, e_b = energy_scales.energies(spins, 2)
    for k in range(3):
        assert math.isclose(e[k], _energy_loop(spins[k].astype(float)), abs_tol=1e-12)
        c = spins[k].astype(float).reshape(4, 2, 4, 2).mean(axis=(1, 3))
        assert math.isclose(e_b[k], _energy_loop(c), abs_tol=1e-12)


def test_split_of_a_linear_gaussian_model():
    # e = a e_b + f with e_b ~ N(0, sb²) and f ~ N(0, sf²) independent: the coarse part of
    # Var e is a² sb², the fine part sf².
    rng = np.random.default_rng(5)
    n, a, sb, sf, scale = 40000, 0.4, 0.25, 0.03, 100.0
    e_b = rng.normal(-1.0, sb, n)
    e = a * e_b + rng.normal(0.0, sf, n)
    r = energy_scales.split(e, e_b, scale, 25)
    for key, expected in (("C", scale * (a**2 * sb**2 + sf**2)), ("C_coarse", scale * a**2 * sb**2),
                          ("C_fine", scale * sf**2), ("sd_e_b", sb)):
        value, err = r[key]
        assert abs(value - expected) < 4 * err, (key, value, expected, err)
