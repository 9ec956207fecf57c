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
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import FsspecStore

from ising.model import ISING
from skild_base import outputs
from skild_base.errors import InputError

RESUME_FILE = "_resume.npz"
CHUNK_BYTES = 4 * 2**20  # ~4 MiB of int8 spins per chunk
# every chunk is compressed and then carries a CRC-32C of its bytes: damage is detected, not decoded
CODECS = (ZstdCodec(level=3), Crc32cCodec())
# every chunk is written even where it equals the fill value, so a missing chunk is always damage
WRITE_ALL_CHUNKS = {"array.write_empty_chunks": True}


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


def _prepare_url(url: str, overwrite: bool, kind: str) -> None:
    """prepare_path for a store URL: the same refusals, without local directory checks."""
    fs, root = _fs(url)
    if fs.isfile(root):
        raise InputError(f"{url} is a file, not a store; choose another --out")
    if fs.isdir(root) and fs.ls(root):
        attrs = read_attrs(url)
        found = None if attrs is None else attrs.get(outputs.KIND_ATTR)
        if attrs is None or (found is not None and found != kind):
            raise InputError(f"{url} holds {'a ' + found if found else 'data skild-phys did not write'}, "
                             f"not a {kind}; refusing to touch it")
        if not overwrite:
            raise InputError(f"{url} already holds a {kind}; pass --overwrite to replace it or choose another path")
        fs.rm(root, recursive=True)


def prepare_path(path: str | os.PathLike, overwrite: bool, kind: str, inputs=()) -> None:
    """Check that `path` can hold a new store of `kind`; with overwrite, remove that kind of store there.

    Refuses (InputError) an input of the command, a file, data skild-phys did not write, a
    skild-phys output of another kind, an existing store without overwrite, and a location
    that cannot be written (`outputs.claim`).
    """
    if is_url(path):
        _prepare_url(str(path), overwrite, kind)
        return
    if outputs.claim(path, kind, overwrite=overwrite, inputs=inputs) == "existing":
        outputs.replace(path, kind)


def _array(root: zarr.Group, name: str, shape, chunks, dtype, fill_value=0) -> zarr.Array:
    """A per-sample array (sample,) or a lattice array (sample, y, x), checksummed."""
    dims = ["sample", "y", "x"] if len(shape) == 3 else ["sample"]
    return root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims,
                             fill_value=fill_value, compressors=CODECS)


def create_spin_store(path, n_samples: int, L: int, chains: int, attrs: dict) -> zarr.Group:
    """Create an empty spin store with the standard layout and attributes."""
    root = open_group(path, mode="w")
    rows = chunk_rounds(L, chains) * chains
    _array(root, "spins", (n_samples, L, L), (min(rows, n_samples), L, L), "int8")
    for name, dtype in (("energy", "float64"), ("magnetization", "float64"), ("chain", "int32"), ("sweep", "float64")):
        _array(root, name, (n_samples,), (max(min(n_samples, 65536), 1),), dtype)
    root["energy"].attrs.update({"long_name": "energy per spin", "units": "J"})
    root["magnetization"].attrs.update({"long_name": "magnetisation per spin"})
    root["chain"].attrs.update({"long_name": "Markov chain index"})
    root["sweep"].attrs.update({"long_name": "chain time at save", "units": "sweeps (L^2 flipped spins)"})
    root["spins"].attrs.update({"long_name": "Ising spins", "units": "1"})
    root.attrs.update({**attrs, outputs.KIND_ATTR: outputs.SIMULATION})
    return root


def create_sample_store(path, n_samples: int, H: int, W: int, attrs: dict, field: bool = False,
                        spins: bool = True, kind: str = outputs.SAMPLES) -> zarr.Group:
    """Create a store for model outputs or coarse-grained data: the spin layout plus per-sample
    `seed` and `source_index` (-1 where not applicable), and optionally the raw float32 `field`."""
    root = open_group(path, mode="w")
    rows = max(1, min(n_samples, CHUNK_BYTES // (H * W)))
    if spins:
        _array(root, "spins", (n_samples, H, W), (rows, H, W), "int8")
        root["spins"].attrs.update({"long_name": "spins (sign of the field)", "units": "1"})
    if field:
        _array(root, "field", (n_samples, H, W), (max(1, rows // 4), H, W), "float32", fill_value=0.0)
        root["field"].attrs.update({"long_name": "raw model output before projection"})
    per_sample = [("seed", "int64", "per-sample random seed"), ("source_index", "int64", "index in the source store")]
    if spins:
        per_sample += [("energy", "float64", "energy per spin"), ("magnetization", "float64", "magnetisation per spin")]
    for name, dtype, long_name in per_sample:
        _array(root, name, (n_samples,), (max(min(n_samples, 65536), 1),), dtype)
        root[name].attrs["long_name"] = long_name
    root.attrs.update({**attrs, outputs.KIND_ATTR: kind})
    return root


def write_samples(root: zarr.Group, start: int, arrays: dict) -> None:
    """Write samples [start, start + n) of each named per-sample array (every chunk, fill-valued or not)."""
    with zarr.config.set(WRITE_ALL_CHUNKS):
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


_VERIFIED: dict = {}  # (path, zarr.json signature) of stores verified in this process


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__


def verify(path, attrs: dict | None = None) -> None:
    """Refuse (InputError, one sentence) a configuration store that is not what it promises.

    Checked: finished (`complete`, which every skild-phys store records), at least one sample, every chunk present (every array of a
    checksummed store; the data arrays of an older one), every chunk decodable and matching
    its CRC-32C, spins all ±1, fields and per-sample numbers finite, and each stored energy and
    magnetisation equal to the one its spins give.
    """
    attrs = read_attrs(path) if attrs is None else attrs
    if not attrs.get("complete", True):  # skild-phys stores say; a store from elsewhere is checked as it is
        raise InputError(f"store {path} is unfinished (its writer was interrupted or is still running); "
                         "rerun the command that made it to finish it")
    try:
        root = open_group(path, mode="r")
        arrays = dict(root.arrays())
    except Exception as err:  # damaged metadata: any zarr/JSON error
        raise InputError(f"store {path} has unreadable metadata ({_short(err)})") from None
    main = arrays.get("spins", arrays.get("field"))
    if main is None:
        raise InputError(f"store {path} holds neither `spins` nor `field`")
    n = main.shape[0]
    if n == 0:
        raise InputError(f"store {path} holds no samples")
    checksummed = _checksummed(main)
    required = arrays if checksummed else {k: v for k, v in arrays.items()
                                           if k in ("spins", "field", "energy", "magnetization")}
    for name, arr in required.items():
        if arr.shape[:1] != (n,):
            raise InputError(f"store {path}: `{name}` has {arr.shape[0]} samples, the store {n}")
        have, want = arr.nchunks_initialized, arr.nchunks
        if have < want:
            raise InputError(f"store {path} is damaged: {want - have} of {want} chunks of `{name}` are missing")
    J = float(attrs.get("J") or 1.0) if attrs.get("model") == ISING.name else 1.0  # coarse/model stores: J = 1
    rows = main.chunks[0]
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        chunk = {}
        for name, arr in arrays.items():
            if arr.shape[:1] != (n,):
                continue
            try:
                chunk[name] = arr[start:stop]
            except Exception as err:  # a corrupted chunk: checksum mismatch, codec error, truncation
                raise InputError(f"store {path} is damaged: `{name}` samples {start}-{stop - 1} cannot be read "
                                 f"({_short(err)})") from None
        for name, values in chunk.items():
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise InputError(f"store {path} is damaged: `{name}` holds non-finite values "
                                 f"(samples {start}-{stop - 1})")
        if "spins" in chunk:
            spins = chunk["spins"]
            bad = np.flatnonzero(~ISING.valid(spins))
            if bad.size:
                raise InputError(f"store {path} is damaged: spins of sample {start + bad[0]} are not all "
                                 f"{ISING.values_text}")
            expected = ISING.observables(spins, J)
            for name in expected:
                if name in chunk:
                    off = np.flatnonzero(np.abs(chunk[name] - expected[name]) > 1e-9)
                    if off.size:
                        raise InputError(f"store {path} is damaged: the stored {name} of sample {start + off[0]} "
                                         f"is not the one its spins give")


def _checksummed(arr: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in arr.compressors)


def has_checksums(path) -> bool:
    """Whether the store's chunks carry CRC-32C checksums (stores written since checksums exist)."""
    arrays = dict(open_group(path, mode="r").arrays())
    main = arrays.get("spins", arrays.get("field"))
    return main is not None and _checksummed(main)


def _signature(path):
    if is_url(path):
        return None
    try:
        st = (Path(path) / "zarr.json").stat()
    except OSError:
        return None
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def open_store(path: str | os.PathLike, check: bool = True) -> xr.Dataset:
    """Open a configuration store (directory or URL) as an xarray Dataset (lazy, dask-backed chunks).

    With check (the default) the store is first verified (`verify`): an unfinished, empty,
    incomplete or damaged store is refused in one sentence instead of read as data.
    """
    if not is_url(path) and not Path(path).exists():
        raise InputError(f"store {path} does not exist")
    attrs = read_attrs(path)
    if attrs is None:
        raise InputError(f"{path} is not a Zarr v3 store")
    if check:
        key = _signature(path)
        if key is None or key not in _VERIFIED:
            verify(path, attrs)
            if key is not None:
                _VERIFIED[key] = True
    with warnings.catch_warnings():
        # a store still being written is not consolidated and holds its resume file
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return xr.open_zarr(zarr_store(path, read_only=True), consolidated=None)
