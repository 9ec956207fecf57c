"""Training data adapters: a uniform view of lattice stores and image sets as (C, H, W) float32.

Every adapter answers len(), get(indices) -> float32 (n, C, H, W), `augment` (its exact
symmetries, drawn from a torch.Generator), `periodic` and `provenance()`.  `open_dataset`
selects one from a spec string: a Zarr store path, or `KIND:PATH` for registered kinds
(image adapters register `cifar10` and `imagefolder`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ising.model import ISING
from skild_base.errors import InputError

_ADAPTERS: dict[str, Callable] = {}


def register_adapter(kind: str):
    """Decorator: make `open_dataset("KIND:PATH", size=...)` call the decorated factory."""

    def deco(factory):
        _ADAPTERS[kind] = factory
        return factory

    return deco


def open_dataset(spec: str, size: int | None = None):
    """Dataset from a spec: `PATH.zarr` (lattice store) or `KIND:PATH` (e.g. cifar10:DIR, imagefolder:DIR)."""
    kind, sep, rest = str(spec).partition(":")
    if sep and kind in _ADAPTERS:
        return _ADAPTERS[kind](rest, size=size)
    if sep and len(kind) > 1 and not Path(spec).exists():
        raise InputError(f"unknown data kind {kind!r}; use a store path or one of {', '.join(sorted(_ADAPTERS))}")
    return LatticeStore(spec)


def _random_d4_translate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one random torus translation and one of the 8 square symmetries to each sample."""
    B, _, H, W = x.shape
    out = []
    draws = torch.randint(0, 2**31 - 1, (B, 4), generator=generator)
    for i in range(B):
        y = torch.roll(x[i], shifts=(int(draws[i, 0]) % H, int(draws[i, 1]) % W), dims=(-2, -1))
        if H == W:
            y = torch.rot90(y, k=int(draws[i, 2]) % 4, dims=(-2, -1))
            if int(draws[i, 3]) % 2:
                y = y.transpose(-2, -1)
        out.append(y)
    return torch.stack(out)


class LatticeStore:
    """Spin (or field) store written by `simulate`, `coarsen` or a model, held in memory as int8/float32."""

    periodic = True
    kind = "spins"

    def __init__(self, path):
        from ising import store

        ds = store.open_store(path)
        if "spins" in ds:
            self.array = ds["spins"].values  # int8, compact
        elif "field" in ds:
            self.array = ds["field"].values.astype(np.float32)
            self.kind = "field"
        else:
            raise InputError(f"{path} holds neither `spins` nor `field`; not a lattice store")
        if self.array.shape[0] == 0:
            raise InputError(f"{path} holds no samples")
        self.path = str(path)
        self.attrs = dict(ds.attrs)
        self.channels, self.height, self.width = 1, self.array.shape[1], self.array.shape[2]

    def __len__(self) -> int:
        return self.array.shape[0]

    def get(self, indices) -> np.ndarray:
        """Samples at `indices` as float32 (n, 1, H, W)."""
        return self.array[np.asarray(indices)].astype(np.float32)[:, None]

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exact symmetries of the lattice model (ising.model): translations with the 8 square
        symmetries, and the global flip of a model with spin-flip symmetry."""
        y = _random_d4_translate(x, generator)
        if "spin flip" not in ISING.symmetries:
            return y
        flips = torch.randint(0, 2, (x.shape[0],), generator=generator).to(y) * 2 - 1
        return y * flips.view(-1, 1, 1, 1)

    def provenance(self) -> dict:
        """Where the data came from (path, size, parameters, content digest of the first samples)."""
        head = np.ascontiguousarray(self.array[: min(len(self), 64)])
        keys = ("model", "L", "beta", "T", "seed", "chains")
        return {"data": self.path, "samples": len(self), "shape": [self.channels, self.height, self.width],
                "data_attrs": {k: self.attrs[k] for k in keys if k in self.attrs},
                "data_digest": hashlib.sha256(head.tobytes()).hexdigest()[:16]}


def iterate(dataset, batch: int = 256):
    """All samples in order, as float32 batches (n, C, H, W)."""
    for start in range(0, len(dataset), batch):
        yield dataset.get(np.arange(start, min(start + batch, len(dataset))))

