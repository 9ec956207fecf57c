"""Block-spin coarse-graining of spin stores: majority rule, decimation, or block mean."""

from __future__ import annotations

import numpy as np
import zarr
from tqdm.auto import tqdm

from ising import store
from ising.lattice import block_mean
from ising.model import ISING
from skild_base import __version__, outputs
from skild_base.errors import InputError

RULES = ("majority", "decimate", "mean")


def coarsen_batch(spins: np.ndarray, factor: int, rule: str) -> np.ndarray:
    """Coarse-grain (n, L, L) spins by `factor`.

    majority: sign of the block sum, a tie decided by the block's top-left spin;
    decimate: the block's top-left spin; mean: the block mean (float32).
    """
    if rule == "decimate":
        return spins[:, ::factor, ::factor].copy()
    means = block_mean(spins.astype(np.float64), factor)
    if rule == "mean":
        return means.astype(np.float32)
    top_left = spins[:, ::factor, ::factor]
    return np.where(means > 0, 1, np.where(means < 0, -1, top_left)).astype(np.int8)


def coarsen_store(source, out, factor: int, rule: str, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the coarse-grained version of every configuration in `source` to the store `out`."""
    if rule not in RULES:
        raise InputError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    ds = store.open_store(source)
    if "spins" not in ds:
        raise InputError(f"{source} holds no `spins`; coarsening needs a spin store")
    n, L, W = ds["spins"].shape
    if factor < 2 or L % factor or W % factor:
        raise InputError(f"factor {factor} must be >= 2 and divide the lattice size {L}")
    store.prepare_path(out, overwrite, kind=outputs.COARSE, inputs=(source,))
    attrs = {"model": "ising2d-coarse", "L": L // factor, "factor": factor, "rule": rule, "source": str(source),
             "beta": ds.attrs.get("beta"), "J": ds.attrs.get("J", 1.0), "boundary": ds.attrs.get("boundary"),
             "source_attrs": {k: ds.attrs[k] for k in ("L", "seed", "chains") if k in ds.attrs},
             "skild_phys_version": __version__, "complete": False}
    is_spin = rule != "mean"
    root = store.create_sample_store(out, n, L // factor, W // factor, attrs, field=not is_spin, spins=is_spin,
                                     kind=outputs.COARSE)
    step = max(1, store.CHUNK_BYTES // (L * W))
    for start in tqdm(range(0, n, step), disable=not progress, unit="chunk", desc=f"coarsen x{factor}"):
        fine = ds["spins"][start:start + step].values
        coarse = coarsen_batch(fine, factor, rule)
        arrays = {"seed": np.full(len(fine), -1, dtype=np.int64),
                  "source_index": np.arange(start, start + len(fine), dtype=np.int64)}
        if is_spin:
            arrays.update(spins=coarse, **ISING.observables(coarse))
        else:
            arrays["field"] = coarse
        store.write_samples(root, start, arrays)
    store.finalize(out, {"complete": True})
    return dict(zarr.open_group(str(out), mode="r").attrs)
