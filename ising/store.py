"""Zarr v3 stores of lattice configurations (SPEC §5), readable as-is by `xarray.open_zarr`.

Layout: `spins` int8 (sample, y, x) chunked along sample; per-sample `energy`,
`magnetization` (per spin), `chain` and `sweep`; group attributes carry every parameter
needed to reproduce or extend the run.  Samples are ordered sample = round * chains + chain,
so a contiguous block of samples is a contiguous stretch of Monte Carlo time of every chain.

A store in progress keeps `_resume.npz` (lattices, RNG states, rounds done), replaced
atomically after every written block.  A store is a local directory or an fsspec URL
(`s3://bucket/run.zarr`, `file:///shared/run.zarr`, ...).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import fsspec
import numpy as np
import xarray as xr
import zarr
from zarr.storage import FsspecStore

from skild_phys.errors import InputError

RESUME_FILE = "_resume.npz"
CHUNK_BYTES = 4 * 2**20  # ~4 MiB of int8 spins per chunk


def chunk_rounds(L: int, chains: int) -> int:
    """Rounds per chunk (and per write block): about CHUNK_BYTES of spins, at least one round."""
    return max(1, CHUNK_BYTES // (chains * L * L))


def is_url(path) -> bool:
    """Whether `path` names a store by fsspec URL rather than a local directory."""
    return "://" in str(path)


def _storage_options(url: str) -> dict:
    # fsspec's local filesystem creates parent directories of new keys only when asked
    return {"auto_mkdir": True} if str(url).startswith("file://") else {}


def _fs(url: str):
    """(filesystem, path inside it) of a store URL."""
    return fsspec.core.url_to_fs(str(url), **_storage_options(url))


def zarr_store(path, read_only: bool = False):
    """What zarr opens for `path`: the local path itself, or an fsspec store for a URL."""
    if is_url(path):
        return FsspecStore.from_url(str(path), storage_options=_storage_options(path), read_only=read_only)
    return str(path)


def open_group(path, mode: str) -> zarr.Group:
    """The store's root group (mode "r", "r+" or "w")."""
    return zarr.open_group(zarr_store(path, read_only=mode == "r"), mode=mode, zarr_format=3)


def read_attrs(path: str | os.PathLike) -> dict | None:
    """Group attributes of an existing Zarr v3 store, or None if `path` is not one."""
    try:
        if is_url(path):
            fs, root = _fs(path)
            text = fs.cat_file(f"{root}/zarr.json")
        else:
            meta = Path(path) / "zarr.json"
            if not meta.is_file():
                return None
            text = meta.read_text()
        return json.loads(text).get("attributes", {})
    except (OSError, json.JSONDecodeError):
        return None


def _prepare_url(url: str, overwrite: bool) -> None:
    """prepare_path for a store URL: the same refusals, without local directory checks."""
    fs, root = _fs(url)
    if fs.isfile(root):
        raise InputError(f"{url} is a file, not a store; choose another --out")
    if fs.isdir(root) and fs.ls(root):
        if read_attrs(url) is None:
            raise InputError(f"{url} is not empty and not a Zarr store; refusing to touch it")
        if not overwrite:
            raise InputError(f"{url} already holds a store; pass --overwrite to replace it or choose another path")
        fs.rm(root, recursive=True)


def prepare_path(path: str | os.PathLike, overwrite: bool) -> None:
    """Check that `path` can hold a new store; with overwrite, remove an existing Zarr store there.

    Refuses (InputError) a path that is a file, a non-empty directory that is not a Zarr store,
    or a location that cannot be written.
    """
    if is_url(path):
        _prepare_url(str(path), overwrite)
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p} is a file, not a store directory; choose another --out path")
    if p.is_dir() and any(p.iterdir()):
        if read_attrs(p) is None:
            raise InputError(f"{p} is a non-empty directory that is not a Zarr store; refusing to touch it")
        if not overwrite:
            raise InputError(f"{p} already holds a store; pass --overwrite to replace it or choose another path")
        shutil.rmtree(p)
    parent = p.parent if p.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {parent}: {err.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent}")


def create_spin_store(path, n_samples: int, L: int, chains: int, attrs: dict) -> zarr.Group:
    """Create an empty spin store with the standard layout and attributes."""
    root = open_group(path, mode="w")
    rows = chunk_rounds(L, chains) * chains
    root.create_array("spins", shape=(n_samples, L, L), chunks=(min(rows, n_samples), L, L),
                      dtype="int8", dimension_names=["sample", "y", "x"], fill_value=0)
    for name, dtype in (("energy", "float64"), ("magnetization", "float64"), ("chain", "int32"), ("sweep", "float64")):
        root.create_array(name, shape=(n_samples,), chunks=(max(min(n_samples, 65536), 1),),
                          dtype=dtype, dimension_names=["sample"], fill_value=0)
    root["energy"].attrs.update({"long_name": "energy per spin", "units": "J"})
    root["magnetization"].attrs.update({"long_name": "magnetisation per spin"})
    root["chain"].attrs.update({"long_name": "Markov chain index"})
    root["sweep"].attrs.update({"long_name": "chain time at save", "units": "sweeps (L^2 flipped spins)"})
    root["spins"].attrs.update({"long_name": "Ising spins", "units": "1"})
    root.attrs.update(attrs)
    return root


def create_sample_store(path, n_samples: int, H: int, W: int, attrs: dict, field: bool = False,
                        spins: bool = True) -> zarr.Group:
    """Create a store for model outputs or coarse-grained data: the spin layout plus per-sample
    `seed` and `source_index` (-1 where not applicable), and optionally the raw float32 `field`."""
    root = open_group(path, mode="w")
    rows = max(1, min(n_samples, CHUNK_BYTES // (H * W)))
    if spins:
        root.create_array("spins", shape=(n_samples, H, W), chunks=(rows, H, W), dtype="int8",
                          dimension_names=["sample", "y", "x"], fill_value=0)
        root["spins"].attrs.update({"long_name": "spins (sign of the field)", "units": "1"})
    if field:
        root.create_array("field", shape=(n_samples, H, W), chunks=(max(1, rows // 4), H, W), dtype="float32",
                          dimension_names=["sample", "y", "x"], fill_value=0.0)
        root["field"].attrs.update({"long_name": "raw model output before projection"})
    per_sample = [("seed", "int64", "per-sample random seed"), ("source_index", "int64", "index in the source store")]
    if spins:
        per_sample += [("energy", "float64", "energy per spin"), ("magnetization", "float64", "magnetisation per spin")]
    for name, dtype, long_name in per_sample:
        root.create_array(name, shape=(n_samples,), chunks=(max(min(n_samples, 65536), 1),), dtype=dtype,
                          dimension_names=["sample"], fill_value=0)
        root[name].attrs["long_name"] = long_name
    root.attrs.update(attrs)
    return root


def write_samples(root: zarr.Group, start: int, arrays: dict) -> None:
    """Write samples [start, start + n) of each named per-sample array."""
    for name, values in arrays.items():
        root[name][start:start + len(values)] = values


def save_resume(path, **arrays) -> None:
    """Atomically replace the store's resume state (temp file + rename; one object write for a URL)."""
    if is_url(path):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        fs, root = _fs(path)
        fs.pipe_file(f"{root}/{RESUME_FILE}", buffer.getvalue())
        return
    final = Path(path) / RESUME_FILE
    tmp = final.with_name(RESUME_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def load_resume(path) -> dict | None:
    """The store's resume state, or None if none was saved yet."""
    if is_url(path):
        fs, root = _fs(path)
        if not fs.isfile(f"{root}/{RESUME_FILE}"):
            return None
        f = io.BytesIO(fs.cat_file(f"{root}/{RESUME_FILE}"))
    else:
        f = Path(path) / RESUME_FILE
        if not f.is_file():
            return None
    with np.load(f) as data:
        return {k: data[k] for k in data.files}


def remove_resume(path) -> None:
    """Delete the resume state of a finished store."""
    if is_url(path):
        fs, root = _fs(path)
        if fs.isfile(f"{root}/{RESUME_FILE}"):
            fs.rm(f"{root}/{RESUME_FILE}")
        return
    (Path(path) / RESUME_FILE).unlink(missing_ok=True)


def finalize(path, attrs: dict) -> None:
    """Record final attributes and consolidate metadata so xarray opens the store directly."""
    root = open_group(path, mode="r+")
    root.attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not yet part of the v3 spec
        zarr.consolidate_metadata(zarr_store(path))


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a configuration store (directory or URL) as an xarray Dataset (lazy, dask-backed chunks)."""
    if not is_url(path) and not Path(path).exists():
        raise InputError(f"store {path} does not exist")
    if read_attrs(path) is None:
        raise InputError(f"{path} is not a Zarr v3 store")
    with warnings.catch_warnings():
        # a store still being written is not consolidated and holds its resume file
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return xr.open_zarr(zarr_store(path, read_only=True), consolidated=None)
