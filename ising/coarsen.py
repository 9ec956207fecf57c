"""Block-spin coarse-graining of spin stores (majority rule, decimation, or block mean), and block means
drawn given majority block spins."""

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


def _neighbourhood_codes(s: np.ndarray) -> np.ndarray:
    """(n, l, w) ±1 block spins -> (n, l, w) ints: bit 3i + j set where the periodic 3 × 3 neighbourhood's
    cell (i, j) (the block itself at (1, 1)) is +1."""
    code = np.zeros(s.shape, dtype=np.int64)
    for i in range(3):
        for j in range(3):
            code |= (np.roll(s, (1 - i, 1 - j), axis=(1, 2)) > 0).astype(np.int64) << (3 * i + j)
    return code


def neighbourhood_classes() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 512 ±1 3 × 3 patterns (bit 3i + j = cell (i, j) is +1): its class under the
    square lattice's 8 rotations and reflections and the global spin flip (51 classes, numbered 0 … 50),
    and the sign that turns its centre to +1."""
    bits = (np.arange(512)[:, None] >> np.arange(9)) & 1
    pats = (2 * bits - 1).reshape(512, 3, 3)
    centre = pats[:, 1, 1].copy()
    norm = pats * centre[:, None, None]
    images = [np.rot90(t, r, axes=(1, 2)) for t in (norm, norm[:, :, ::-1]) for r in range(4)]
    codes = np.stack([((im.reshape(512, 9) > 0) << np.arange(9)).sum(1) for im in images]).min(0)
    return np.unique(codes, return_inverse=True)[1].reshape(512), centre


def block_mean_counts(spins: np.ndarray, factor: int) -> np.ndarray:
    """How often each block mean goes with each majority-spin neighbourhood, counted on (n, L, L) spins.

    Returns (51, factor² + 1) counts: row = the class (`neighbourhood_classes`) of the 3 × 3 majority
    block spins around a block (periodic), column = the block sum times the class's centre sign, from
    −factor² to factor² in steps of 2 (column 0 = −factor²)."""
    n, L, W = spins.shape
    if factor < 2 or L % factor or W % factor or min(L, W) // factor < 3:
        raise InputError(f"block-mean counts need a factor >= 2 dividing the lattice ({L}x{W}) into at least "
                         f"3 blocks per side; factor {factor} does not")
    classes, centre = neighbourhood_classes()
    s = coarsen_batch(spins, factor, "majority")
    sums = np.rint(block_mean(spins.astype(np.float64), factor) * factor * factor).astype(np.int64)
    code = _neighbourhood_codes(s)
    column = (sums * centre[code] + factor * factor) // 2
    counts = np.zeros((classes.max() + 1, factor * factor + 1), dtype=np.int64)
    np.add.at(counts, (classes[code].ravel(), column.ravel()), 1)
    return counts


def draw_block_means(block_spins: np.ndarray, counts: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Block means for (n, l, w) ±1 block spins, each drawn from the frequencies `counts`
    (`block_mean_counts`) of its 3 × 3 neighbourhood's class, by the uniforms u in [0, 1) of the same
    shape: independent across blocks given the block spins. A block spin keeps its sign (a block mean
    of 0 is a tie the block spin decided). A neighbourhood the counts never saw is an InputError."""
    classes, centre = neighbourhood_classes()
    ff = counts.shape[1] - 1
    code = _neighbourhood_codes(block_spins)
    rows = counts[classes[code]]
    total = rows.sum(-1)
    if (total == 0).any():
        raise InputError("a block-spin neighbourhood of the input never occurs in the reference counts; "
                         "count on a larger reference store")
    cdf = np.cumsum(rows, -1) / total[..., None]
    column = np.minimum((u[..., None] >= cdf).sum(-1), ff)
    return centre[code] * (2 * column - ff) / ff


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
