"""Fixed-seed pipeline outputs reduced to SHA-256 digests of their contents.

    python -m tests.golden            # print the digests of this checkout as JSON
    python -m tests.golden --write    # record them as the reference set (drops other CPUs' sets)
    python -m tests.golden --add-cpu  # record them as this CPU's set, beside the reference

The pipeline is the whole chain on tiny sizes: a Wolff store, its block-mean coarsening, a
SKILD and an SR3 network trained a few steps, super-resolved and generated lattice stores, a
tiny image model's generated PNGs, and the correlators Dataset of truth against model.  A
digest covers what the output *means* (every array's bytes, dtype and shape; every attribute
that is not a time stamp, a version or a path), so a restructuring that changes no result
leaves every digest unchanged, and tests/test_golden.py holds the code to that.

Trained weights are reproducible on one kind of CPU, not across kinds: MKL and oneDNN pick
other kernels (and summation orders) on another vendor or instruction set, and the last bits
of a trained weight move.  The reference set was recorded on the first machine; a machine
whose CPU gives other float digests records its own set with --add-cpu (under "_cpus", keyed
by `cpu()`), and the test holds each CPU to its own set.  The Wolff store and its coarsening
(`CPU_INDEPENDENT`) must match the reference everywhere.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

DIGESTS = Path(__file__).with_name("golden_digests.json")
VOLATILE = {"checkpoint_digest", "created", "version", "skild_phys_version", "source", "sources", "truth", "checkpoint", "data",
            "lowres", "path", "paths", "command", "argv", "wall_s", "seconds", "time", "date"}


CPU_INDEPENDENT = ("simulate", "coarsen")  # integer and Numba work: the same bytes on every CPU

_WORK: list[str] = []  # the pipeline's working directory, replaced in metadata strings


def _clean(value):
    """JSON-able metadata without time stamps, versions and machine paths."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if k not in VOLATILE and not k.endswith("_s")}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(_clean(json.loads(value)), sort_keys=True)
        except json.JSONDecodeError:
            pass
    if isinstance(value, str) and _WORK:
        return value.replace(_WORK[0], "<work>")
    return value


def _update_array(h, name: str, a: np.ndarray) -> None:
    if a.dtype.kind in "OUS":
        h.update(f"{name}|{a.shape}|".encode() + json.dumps(_clean([str(v) for v in a.ravel()])).encode())
        return
    a = np.ascontiguousarray(a)
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())


def zarr_digest(path: Path) -> str:
    """Every array of a Zarr store (values, dtype, shape) and its cleaned attributes."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    h = hashlib.sha256()
    h.update(json.dumps(_clean(dict(group.attrs)), sort_keys=True, default=str).encode())
    for name in sorted(group.array_keys()):
        arr = group[name]
        _update_array(h, name, arr[...])
        h.update(json.dumps(_clean(dict(arr.attrs)), sort_keys=True, default=str).encode())
    return h.hexdigest()


def checkpoint_digest(run: Path) -> str:
    """The usable checkpoint's tensors and the run's cleaned configuration."""
    from skild_phys.checkpoint import load_use

    art = load_use(run)
    h = hashlib.sha256()

    def walk(obj, prefix=""):
        if hasattr(obj, "detach"):
            _update_array(h, prefix, obj.detach().cpu().numpy())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                if str(key) not in VOLATILE and str(key) != "content_digest":
                    walk(obj[key], f"{prefix}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                walk(item, f"{prefix}/{i}")
        else:
            h.update(f"{prefix}={obj!r}|".encode())

    walk(art)
    h.update(json.dumps(_clean(json.loads((run / "config.json").read_text())), sort_keys=True).encode())
    return h.hexdigest()


def dataset_digest(path: Path) -> str:
    """Every variable and coordinate of a NetCDF Dataset (values, dims) and the cleaned attributes."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        h = hashlib.sha256()
        h.update(json.dumps(_clean(dict(ds.attrs)), sort_keys=True, default=str).encode())
        for name in sorted(list(ds.coords) + list(ds.data_vars)):
            var = ds[name]
            h.update(f"{name}{var.dims}".encode())
            _update_array(h, name, var.values)
            h.update(json.dumps(_clean(dict(var.attrs)), sort_keys=True, default=str).encode())
    return h.hexdigest()


def folder_digest(path: Path) -> str:
    """The pixel arrays of every PNG of a folder tree (file names relative to it)."""
    from PIL import Image

    h = hashlib.sha256()
    for png in sorted(path.rglob("*.png")):
        if "grid" in png.name or "factors" in png.name:
            continue
        with Image.open(png) as im:
            _update_array(h, str(png.relative_to(path)), np.asarray(im))
    return h.hexdigest()


def _cli(args: list[str]) -> None:
    from click.testing import CliRunner

    from skild_phys.cli import main

    result = CliRunner().invoke(main, args + ["--quiet"])
    if result.exit_code != 0:
        raise RuntimeError(f"skild-phys {' '.join(args)} failed: {result.output}{result.exception!r}")


def _image_folder(folder: Path, n: int = 8, side: int = 16) -> str:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        y, x = np.mgrid[:side, :side]
        img = (127 + 100 * np.sin(x / (1 + i % 3)) * np.cos(y / 2.0) + rng.normal(0, 10, (side, side)))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return f"imagefolder:{folder}"


def compute(workdir: Path) -> dict[str, str]:
    """Run the fixed-seed pipeline in `workdir` and return {output: digest}."""
    w = Path(workdir)
    _WORK[:] = [str(w)]
    common = ["--device", "cpu", "--threads", "1"]
    _cli(["simulate", "--L", "16", "--samples", "24", "--chains", "2", "--seed", "7", "--threads", "1",
          "--out", str(w / "truth.zarr")])
    _cli(["coarsen", str(w / "truth.zarr"), "--factor", "4", "--rule", "mean", "--out", str(w / "coarse.zarr")])
    _cli(["train", "--data", str(w / "truth.zarr"), "--out", str(w / "skild"), "--net", "tiny", "--steps", "4",
          "--batch", "4", "--seed", "3", *common])
    _cli(["train", "--data", str(w / "truth.zarr"), "--out", str(w / "sr3"), "--model", "sr3", "--net", "tiny",
          "--steps", "3", "--batch", "4", "--seed", "3", "--factor", "4", *common])
    _cli(["superres", "--checkpoint", str(w / "skild"), "--data", str(w / "truth.zarr"), "--factor", "4",
          "--samples", "6", "--steps", "6", "--batch", "4", "--seed", "5", "--keep-field",
          "--out", str(w / "sr_marginal.zarr"), *common])
    _cli(["superres", "--checkpoint", str(w / "skild"), "--lowres", str(w / "coarse.zarr"), "--factor", "4",
          "--samples", "4", "--steps", "5", "--batch", "3", "--seed", "5", "--sampler", "heun",
          "--out", str(w / "sr_lowres.zarr"), *common])
    _cli(["superres", "--checkpoint", str(w / "sr3"), "--data", str(w / "truth.zarr"), "--factor", "4",
          "--samples", "4", "--steps", "4", "--batch", "4", "--seed", "5", "--out", str(w / "sr3.zarr"), *common])
    _cli(["generate", "--checkpoint", str(w / "skild"), "--samples", "4", "--steps", "6", "--batch", "3",
          "--seed", "9", "--out", str(w / "generated.zarr"), *common])
    _cli(["correlators", str(w / "truth.zarr"), str(w / "sr_marginal.zarr"), "--label", "truth",
          "--label", "model", "--threads", "1", "--out", str(w / "correlators.nc")])
    images = _image_folder(w / "images")
    _cli(["train", "--data", images, "--out", str(w / "image_run"), "--size", "16", "--net", "tiny", "--steps", "3",
          "--batch", "4", "--seed", "3", "--factor", "2", *common])
    _cli(["generate", "--checkpoint", str(w / "image_run"), "--samples", "3", "--steps", "4", "--batch", "2",
          "--seed", "9", "--out", str(w / "image_gen"), *common])
    _cli(["superres", "--checkpoint", str(w / "image_run"), "--data", images, "--factor", "2", "--samples", "3",
          "--steps", "4", "--batch", "2", "--seed", "5", "--out", str(w / "image_sr"), *common])
    return {
        "simulate": zarr_digest(w / "truth.zarr"),
        "coarsen": zarr_digest(w / "coarse.zarr"),
        "train_skild": checkpoint_digest(w / "skild"),
        "train_sr3": checkpoint_digest(w / "sr3"),
        "superres_marginal": zarr_digest(w / "sr_marginal.zarr"),
        "superres_lowres_heun": zarr_digest(w / "sr_lowres.zarr"),
        "superres_sr3": zarr_digest(w / "sr3.zarr"),
        "generate": zarr_digest(w / "generated.zarr"),
        "correlators": dataset_digest(w / "correlators.nc"),
        "train_image": checkpoint_digest(w / "image_run"),
        "generate_image": folder_digest(w / "image_gen"),
        "superres_image": folder_digest(w / "image_sr"),
    }


def cpu() -> dict[str, str]:
    """What decides the float kernels of this machine: the CPU's vendor and model, torch's vector capability."""
    import platform

    import torch

    info = {"vendor": "", "model": ""}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id" and not info["vendor"]:
                info["vendor"] = value.strip()
            if key.strip() == "model name" and not info["model"]:
                info["model"] = value.strip()
    except OSError:
        info["model"] = platform.processor()
    return {**info, "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "machine": platform.machine()}


def recorded_sets(recorded: dict) -> list[tuple[dict | None, dict]]:
    """(cpu or None for the reference, digests) of every set in a golden_digests.json."""
    reference = {k: v for k, v in recorded.items() if not k.startswith("_")}
    return [(None, reference)] + [(entry["cpu"], entry["digests"]) for entry in recorded.get("_cpus", [])]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        digests = compute(Path(tmp))
    if "--add-cpu" in argv:
        recorded = json.loads(DIGESTS.read_text())
        here = cpu()
        others = [e for e in recorded.get("_cpus", []) if e["cpu"] != here]
        recorded["_cpus"] = others + [{"cpu": here, "digests": digests}]
        DIGESTS.write_text(json.dumps(recorded, indent=2) + "\n")
    import platform

    import torch

    digests["_environment"] = {"torch": torch.__version__, "machine": platform.machine()}
    text = json.dumps(digests, indent=2) + "\n"
    if "--write" in argv:
        DIGESTS.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
