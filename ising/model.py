"""The lattice model a store holds, described once: state values and storage type, symmetries,
the per-sample observables stored next to the states, and the projection of a continuous field.

Every layer that writes, checks or produces configurations asks this description (`simulate`,
`coarsen`, `store.verify`, the sampling driver, the training data adapter) instead of assuming
±1 spins in int8.  A second critical model (Potts, XY on a clock, ...) is a new `LatticeModel`
in `MODELS`, with its own energy; see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ising.lattice import energy_per_spin
from skild_base.errors import InputError


@dataclass(frozen=True)
class LatticeModel:
    """A classical lattice model with discrete site values, as far as stores and samplers need it."""

    name: str  # the `model` attribute of its simulation stores
    values: tuple  # allowed site values
    dtype: str  # storage type of the states
    symmetries: tuple  # of the critical ensemble, used to augment training data
    energy_fn: Callable  # (states (n, H, W), J) -> energy per site of each configuration
    values_text: str  # the allowed values as a message says them

    def observables(self, states: np.ndarray, J: float = 1.0) -> dict[str, np.ndarray]:
        """Per-configuration numbers stored next to the states: energy and magnetisation per site."""
        return {"energy": self.energy_fn(states, J), "magnetization": states.mean(axis=(1, 2))}

    def project(self, field: np.ndarray) -> np.ndarray:
        """The configuration a continuous field stands for: each site to its nearest value (ties up)."""
        values = np.asarray(self.values, dtype=np.float64)
        edges = (values[1:] + values[:-1]) / 2
        index = np.where(np.isnan(field), 0, np.searchsorted(edges, field, side="right"))  # NaN: the lowest value
        return values[index].astype(self.dtype)

    def valid(self, states: np.ndarray) -> np.ndarray:
        """Per configuration: every site holds an allowed value."""
        return np.isin(states, self.values).all(axis=tuple(range(1, states.ndim)))

    def random_states(self, rng: np.random.Generator, shape) -> np.ndarray:
        """Independent uniform site values (the infinite-temperature start of a chain)."""
        return np.where(rng.random(shape) < 0.5, self.values[-1], self.values[0]).astype(self.dtype)


ISING = LatticeModel(name="ising2d", values=(-1, 1), dtype="int8",
                     symmetries=("spin flip", "translations", "dihedral D4"), energy_fn=energy_per_spin, values_text="±1")
MODELS = {ISING.name: ISING}


def get_model(name: str = ISING.name) -> LatticeModel:
    """The lattice model of this name (a store's `model` attribute)."""
    if name not in MODELS:
        raise InputError(f"unknown lattice model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]
