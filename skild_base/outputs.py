"""Outputs: what every command may replace, and one writer at a time.

Every output a command writes is one of the kinds below, and the toolkit recognises its own:
Zarr stores and Datasets by their `skild_phys_kind` attribute (older stores by the attributes
they always carried), run directories by their files, plots by the `skild-phys` tag in their
metadata, JSON files by their `skild_phys_kind` key.  `claim` is the one gate in front of a
write: it refuses an output path that is (or holds, or lies inside) an input of the same
command, data this toolkit did not write, or its output of another kind; with `replace` it
removes only an output of the requested kind.  `lock` holds an exclusive advisory lock
(`flock`, released by the kernel when the process dies, so a kill never leaves a stale lock)
on a hidden sibling file for as long as the output is being written; a second writer is
refused in one sentence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

from skild_base.errors import InputError

TAG = "skild-phys"  # written into the metadata of every plot
KIND_ATTR = "skild_phys_kind"

SIMULATION = "simulation store"
COARSE = "coarse store"
SAMPLES = "sample store"
RUN = "training run"
EVALUATION = "evaluation"
IMAGES = "image sample directory"
CORRELATORS = "correlators dataset"
PLOT = "plot"
METRICS = "metrics file"
WORKFLOW = "workflow state"

_LEGACY_MODELS = {"ising2d": SIMULATION, "ising2d-coarse": COARSE}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _zarr_kind(path: Path) -> str | None:
    meta = _read_json(path / "zarr.json")
    if not isinstance(meta, dict):
        return None
    attrs = meta.get("attributes") or {}
    if attrs.get(KIND_ATTR):
        return str(attrs[KIND_ATTR])
    if attrs.get("model") in _LEGACY_MODELS:
        return _LEGACY_MODELS[attrs["model"]]
    if "skild_phys_version" in attrs:
        if "checkpoint_digest" in attrs:
            return SAMPLES
        if "kappa4_definition" in attrs:
            return CORRELATORS
    return None


def kind_of(path) -> str | None:
    """The kind of skild-phys output at `path`, or None (absent, empty, or not written by skild-phys)."""
    p = Path(path)
    if p.is_dir():
        if (p / "zarr.json").is_file():
            return _zarr_kind(p)
        if (p / "evaluation.json").is_file():
            return EVALUATION
        config = _read_json(p / "config.json") if (p / "config.json").is_file() else None
        if isinstance(config, dict):
            if config.get(KIND_ATTR):
                return str(config[KIND_ATTR])
            if "train" in config and "net" in config:
                return RUN
            if "params" in config and "complete" in config:
                return IMAGES
        return None
    if not p.is_file():
        return None
    suffix = p.suffix.lower()
    if suffix in (".png", ".pdf"):
        with open(p, "rb") as fh:
            head = fh.read(1 << 20)
        return PLOT if TAG.encode() in head else None
    if suffix == ".json":
        obj = _read_json(p)
        return str(obj[KIND_ATTR]) if isinstance(obj, dict) and obj.get(KIND_ATTR) else None
    if suffix == ".nc":
        try:
            import netCDF4

            with netCDF4.Dataset(p) as nc:
                attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        except (OSError, ImportError):
            return None
        return str(attrs.get(KIND_ATTR) or (CORRELATORS if "kappa4_definition" in attrs else "")) or None
    return None


def _is_empty(p: Path) -> bool:
    return not p.exists() or (p.is_dir() and not any(p.iterdir()))


def _collides(out: Path, source: Path) -> bool:
    """Whether writing (or replacing) `out` can touch `source`: the same path, a folder holding it,
    or a path inside it when it is a store or file (a run directory may hold its evaluations)."""
    if out == source or out in source.parents:
        return True
    return source in out.parents and (source.is_file() or (source / "zarr.json").is_file())


def _local_path(source) -> Path | None:
    """The local path an input names: a path, or the PATH of an adapter spec `cifar10:PATH`; None for URLs."""
    text = str(source)
    if "://" in text:
        return None
    head, sep, rest = text.partition(":")
    if sep and head.isidentifier() and rest:
        text = rest
    return Path(text).resolve()


def check_not_input(out, inputs, what: str = "--out") -> None:
    """Refuse an output path that is or holds one of the command's local inputs, or lies inside an input store."""
    if "://" in str(out):
        return
    target = Path(out).resolve()
    for source in inputs:
        path = None if source is None else _local_path(source)
        if path is not None and _collides(target, path):
            raise InputError(f"{what} {out} is an input of this command ({source}); choose another {what}")


def claim(out, kind: str, overwrite: bool = False, inputs=(), what: str = "--out", resume: bool = False,
          hint: str = "pass --overwrite to replace it") -> str:
    """Check, before any work, that `out` may receive a new `kind` output; returns "new" or "existing".

    "existing": `out` holds a skild-phys output of this kind and overwrite or resume was asked
    (the caller decides which: `replace` removes it).  Refused in one sentence: an input of the
    command, a file where a directory is expected (or the reverse), data skild-phys did not
    write, its output of another kind, an existing output without --overwrite/--resume, and
    an unwritable location.
    """
    check_not_input(out, inputs, what)
    if "://" in str(out):
        return "new"
    p = Path(out)
    if not _is_empty(p):
        found = kind_of(p)
        if found is None:
            noun = "file" if p.is_file() else "directory"
            raise InputError(f"{what} {p} is a {noun} that skild-phys did not write; refusing to replace it "
                             f"(choose another {what})")
        if found != kind:
            raise InputError(f"{what} {p} holds a {found}, not a {kind}; refusing to replace it "
                             f"(choose another {what})")
        if not (overwrite or resume):
            raise InputError(f"{what} {p} already holds a {kind}; {hint} or choose another {what}")
        return "existing"
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {parent} for {what} {p}: {err.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} ({what} {p})")
    return "new"


def read_record(path) -> dict | None:
    """The JSON record an output keeps of what made it (None where there is none); damaged: one sentence."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{p} is damaged; remove the directory or choose another --out") from None


def begin(out, kind: str, params: dict, record: dict | None, overwrite: bool = False, inputs=(),
          prepare=None, what: str = "--out", hint: str = "pass --overwrite to replace it") -> str:
    """The one resume rule of every command whose output its parameters determine (superres,
    generate, image sampling, evaluate): returns "complete", "resume" or "fresh".

    `record` is what OUT holds now ({"params": ..., "complete": ...}) or None.  The same
    parameters continue: "complete" (nothing to do) or "resume" (the caller carries on where
    its output ends).  Anything else starts afresh: OUT is claimed (`claim`: never an input,
    never data skild-phys did not write, never another kind, an existing one only with
    --overwrite) and cleared by `prepare(out, kind, overwrite, inputs)` (default: `replace`).
    """
    check_not_input(out, inputs, what)
    if record is not None and record.get("params") == params and not overwrite:
        return "complete" if record.get("complete") else "resume"
    if prepare is not None:
        prepare(out, kind, overwrite, inputs)
    elif claim(out, kind, overwrite=overwrite, inputs=inputs, what=what, hint=hint) == "existing":
        replace(out, kind, what)
    return "fresh"


def replace(out, kind: str, what: str = "--out") -> None:
    """Remove the skild-phys output of `kind` at `out` (checked again here); nothing else is ever removed."""
    p = Path(out)
    if _is_empty(p):
        return
    found = kind_of(p)
    if found != kind:
        raise InputError(f"{what} {p} holds {'a ' + found if found else 'data skild-phys did not write'}, "
                         f"not a {kind}; refusing to replace it")
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()


def check_file(path, suffixes, what: str, overwrite: bool, kind: str = PLOT, inputs=()) -> Path:
    """An output file: its extension, its directory, and `claim` (an existing one only with --overwrite)."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InputError(f"{what} {p} must end in {' or '.join(suffixes)}")
    if not p.parent.exists():
        raise InputError(f"directory {p.parent} does not exist")
    claim(p, kind, overwrite=overwrite, inputs=inputs, what=what)
    return p


def plot_metadata(path) -> dict:
    """savefig metadata that tags a plot as written by skild-phys (PNG Software, PDF Creator)."""
    return {"Creator": TAG} if str(path).lower().endswith(".pdf") else {"Software": TAG}


def _lock_path(out: Path) -> Path:
    out = out.absolute()
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def lock(out, what: str = "--out"):
    """Exclusive lock on writing `out` for the duration of the block (local paths; URLs are not locked).

    Refused in one sentence if another process holds it.  The lock is a hidden sibling file
    `.NAME.lock`, removed on release; the kernel drops it if the process is killed.
    """
    if "://" in str(out):
        yield
        return
    path = _lock_path(Path(out))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {path.parent} for {what} {out}: {err.strerror}") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"cannot write to {path.parent} ({what} {out}): {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(f"{what} {out} is being written by another skild-phys process; "
                                 f"wait for it to finish or choose another {what}") from None
            raise
        # the holder before us may have removed the file between our open and our lock
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
