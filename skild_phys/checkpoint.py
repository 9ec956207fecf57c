"""Checkpoint artifacts of a training run directory, written atomically, loaded without unpickling code.

RUN/
  config.json   resolved configuration (human-readable, also embedded in the artifacts)
  model.pt      "use" artifact: EMA weights, config, spectrum S0 — all a sampler needs
  resume.pt     "resume" artifact: raw and EMA weights, optimiser, LR schedule, step, RNG states
  log.jsonl     append-only training log
Both artifacts hold only tensors and plain Python values and load with weights_only=True,
and carry a SHA-256 `checksum` of their contents (every tensor's dtype, shape and bytes, every
value), verified on load: a damaged artifact is refused instead of loaded as weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from skild_base.errors import InputError

USE_FILE = "model.pt"
RESUME_FILE = "resume.pt"
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"


def content_digest(obj) -> str:
    """SHA-256 of a checkpoint's contents: dict keys in order, tensors by dtype, shape and raw bytes."""
    h = hashlib.sha256()

    def visit(value):
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            h.update(b"D%d" % len(value))
            for key in sorted(value, key=repr):
                h.update(repr(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(b"L%d" % len(value))
            for item in value:
                visit(item)
        else:
            h.update(repr(value).encode())

    visit(obj)
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    """torch.save (with the contents' checksum) to a temporary file, fsync, then rename over `path`."""
    obj = {**obj, "checksum": content_digest(obj)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(obj, path: Path) -> None:
    """Write JSON atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_log(run: Path, record: dict) -> None:
    """Append one JSON line to RUN/log.jsonl."""
    with open(Path(run) / LOG_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_log(run) -> list[dict]:
    """The records of RUN/log.jsonl in order ([] without a log); a line torn by a kill is skipped.

    Training lines carry `loss`, validation lines `val_loss`.
    """
    path = Path(run) / LOG_FILE
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _load(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"checkpoint file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise InputError(f"checkpoint {path} is corrupted or not a skild-phys checkpoint ({type(err).__name__})") from None
    if not isinstance(obj, dict) or "config" not in obj:
        raise InputError(f"checkpoint {path} is not a skild-phys checkpoint")
    stored = obj.pop("checksum", None)  # artifacts from before checksums load unverified
    if stored is not None and stored != content_digest(obj):
        raise InputError(f"checkpoint {path} is damaged: its contents do not match their checksum")
    try:
        obj["config"] = json.loads(obj["config"])
    except (TypeError, json.JSONDecodeError):
        raise InputError(f"checkpoint {path} is damaged: its configuration is not valid JSON") from None
    for name, value in _tensors(obj):
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise InputError(f"checkpoint {path} holds non-finite values in {name}")
    return obj


def _tensors(obj, prefix=""):
    """(name, tensor) of every tensor in a nested checkpoint."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "tensor", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")


def resolve(run) -> Path:
    """RUN directory (or a model.pt inside it) -> the directory; one-sentence error if absent."""
    p = Path(run)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise InputError(f"checkpoint directory {run} does not exist")
    return p


def load_use(run) -> dict:
    """The "use" artifact: {"ema": state_dict, "S0": tensor, "config": dict, ...}."""
    return _load(resolve(run) / USE_FILE)


def load_resume(run) -> dict:
    """The "resume" artifact."""
    return _load(resolve(run) / RESUME_FILE)


def file_digest(run) -> str:
    """SHA-256 (first 16 hex digits) of the use artifact: the checkpoint's identity in provenance."""
    h = hashlib.sha256()
    with open(resolve(run) / USE_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
