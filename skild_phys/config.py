"""The run configuration: what a trained model is, as one typed object with one set of defaults.

A method's `resolve_config` makes it for a new run; `train` writes it (config.json and inside
every checkpoint) with `to_dict`; `load_model` reads it back with `from_dict`, which is the one
place that knows what a configuration written before a field existed meant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from skild_base.errors import InputError

# What a stored configuration that lacks a field was trained with (the field did not exist yet):
# ε-prediction (v came later), a SKILD model on lattice data.  New runs get the field defaults.
STORED_BEFORE_FIELD = {"model": "skild", "parameterization": "eps", "data_kind": "lattice"}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A run: method, grid, data, the process (preset, schedule, basis, S0 mode), network and training."""

    model: str = "skild"  # method name (skild_phys.methods): "skild" or "sr3"
    parameterization: str = "v"  # network output: "v" (velocity) or "eps" (the paper's ε)
    version: str = ""  # skild-phys version that made the run
    H: int  # grid height
    W: int  # grid width
    channels: int  # data channels (1 for a lattice)
    data_kind: str = "lattice"  # the adapter's kind: "spins" or "field" (lattice stores), "image"
    data: dict = field(default_factory=dict)  # provenance of the training data and block_mean_abs
    preset: str  # schedule preset name
    factor: float  # super-resolution factor the schedule reaches
    schedule: dict  # skild_phys.process.schedule.Schedule fields
    basis: str  # "dct", "fourier" or "identity" (SR3)
    spectrum: dict  # how S0 was made (mode, fit parameters)
    net: dict  # network: name, periodic, optional shape and cond_channels
    train: dict  # skild_phys.training.train.TrainSettings fields
    transfer: dict | None = None  # set when the model runs at another size than it was trained at

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A stored configuration; fields it predates take the values runs of its time were made with."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"run configuration has unknown fields {unknown}; it was written by another program "
                             "or a newer skild-phys")
        values = {**{k: v for k, v in STORED_BEFORE_FIELD.items() if k not in d}, **d}
        try:
            return cls(**values)
        except TypeError as err:
            raise InputError(f"run configuration is incomplete: {err}") from None

    def to_dict(self) -> dict:
        """The JSON form: every field in declaration order, `transfer` only when set."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["transfer"] is None:
            del out["transfer"]
        return out

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
