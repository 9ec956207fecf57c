"""Thermodynamic moments per spin: <e>, <|m|>, <m^2>, <m^4>, Binder U4, specific heat, susceptibility.

All are functions of the means of five per-sample primitives (e, e^2, |m|, m^2, m^4), so they
stream and jackknife like kappa4.
"""

from __future__ import annotations

import numpy as np

MOMENT_NAMES = ("e", "abs_m", "m2", "m4", "binder", "specific_heat", "susceptibility")
"""Estimates returned by `moment_estimates`, in order."""

MOMENT_ATTRS = {
    "e": {"long_name": "energy per spin <e>", "units": "J"},
    "abs_m": {"long_name": "<|m|>, m = magnetisation per spin"},
    "m2": {"long_name": "<m^2>"},
    "m4": {"long_name": "<m^4>"},
    "binder": {"long_name": "Binder cumulant U4 = 1 - <m^4>/(3<m^2>^2)"},
    "specific_heat": {"long_name": "specific heat per spin beta^2 N (<e^2> - <e>^2)"},
    "susceptibility": {"long_name": "susceptibility per spin beta N (<m^2> - <|m|>^2)"},
}


def energy_magnetization(site: np.ndarray, pairs: np.ndarray, J: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample e = -J sum_<ij> s_i s_j / L^2 and m from `analysis.correlation.pair_means` output."""
    # pairs[:, 1] averages the right and down neighbour products; there are 2 L^2 bonds
    return -2.0 * J * pairs[:, 1], site


def moment_primitives(e: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-sample primitives (e, e^2, |m|, m^2, m^4), shape (n, 5)."""
    e = np.asarray(e, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    m2 = m * m
    return np.stack([e, e * e, np.abs(m), m2, m2 * m2], axis=-1)


def moment_estimates(mean: np.ndarray, beta: float, N: int) -> np.ndarray:
    """MOMENT_NAMES estimates from the primitive means (last axis 5); N = number of spins."""
    me, me2, mabs, m2, m4 = np.moveaxis(np.asarray(mean, dtype=np.float64), -1, 0)
    return np.stack([me, mabs, m2, m4, 1.0 - m4 / (3.0 * m2 * m2),
                     beta**2 * N * (me2 - me * me), beta * N * (m2 - mabs * mabs)], axis=-1)
