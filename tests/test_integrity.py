"""Fault injection: damaged and unfinished inputs are refused, outputs never destroy what a
command did not make, one writer at a time, and every user mistake is one sentence.

Each test breaks something on purpose (a flipped byte in a chunk, a truncated or deleted
chunk, an unfinished or zero-filled store, a foreign directory at --out, an input named as
--out, a second writer) and checks the command's exit code 2, its single line without a
traceback, and that nothing it was not asked to touch changed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from click.testing import CliRunner

from ising import store
from ising.simulate import SimulationParams, run_simulation
from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import checkpoint
from skild_phys.cli import main

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def _tree(path: Path) -> dict:
    """Every file under path with its bytes: what a refused command must leave unchanged."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def _fresh_store(tmp_path, name="s.zarr", **kw) -> Path:
    params = {"L": 8, "n_samples": 48, "chains": 2, "seed": 3, **kw}
    path = tmp_path / name
    run_simulation(path, SimulationParams(**params), progress=False, log=lambda m: None)
    return path


def _chunk_files(path: Path, array: str) -> list[Path]:
    return sorted(p for p in (path / array / "c").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def run16(tiny_run16):
    """A tiny trained run, enough for the commands that read a checkpoint."""
    return tiny_run16[0]


# ---- 1. inputs are checked when opened ---------------------------------------------------- #

def test_new_stores_carry_chunk_checksums(tmp_path):
    import zarr
    from zarr.codecs import Crc32cCodec

    root = zarr.open_group(str(_fresh_store(tmp_path)), mode="r")
    for name, arr in root.arrays():
        assert any(isinstance(c, Crc32cCodec) for c in arr.compressors), name
        assert arr.nchunks_initialized == arr.nchunks, name  # fill-valued chunks are written too


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_spins_chunk_is_refused_by_every_reader(tmp_path, damage):
    path = _fresh_store(tmp_path)
    chunk = _chunk_files(path, "spins")[0]
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(data))
    elif damage == "truncate":
        chunk.write_bytes(bytes(data[: len(data) // 2]))
    else:
        chunk.unlink()
    for args in (("info", path), ("coarsen", path, "--factor", 2, "--out", tmp_path / "c.zarr", "--quiet"),
                 ("correlators", path, "--out", tmp_path / "k.nc", "--quiet"),
                 ("train", "--data", path, "--out", tmp_path / "run", "--net", "tiny", "--steps", 1, "--quiet",
                  "--device", "cpu")):
        msg = _one_line_error(_cli(*args))
        assert str(path) in msg and "damaged" in msg, (args[0], msg)
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / "k.nc").exists()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_missing_energy_chunk_is_not_reported_as_zero_energy(tmp_path):
    path = _fresh_store(tmp_path)
    _chunk_files(path, "energy")[0].unlink()
    msg = _one_line_error(_cli("info", path))
    assert "chunks of `energy` are missing" in msg


def test_energy_that_does_not_match_the_spins_is_refused(tmp_path):
    import zarr

    path = _fresh_store(tmp_path)
    root = zarr.open_group(str(path), mode="r+")
    energy = root["energy"][:]
    energy[7] += 0.25  # a well-formed chunk with a wrong number in it
    with zarr.config.set(store.WRITE_ALL_CHUNKS):
        root["energy"][:] = energy
    msg = _one_line_error(_cli("info", path))
    assert "energy of sample 7" in msg


def test_unfinished_store_is_refused(tmp_path, run16):
    # exactly what an interrupted `simulate` leaves: the layout, complete = False, rounds missing
    path = tmp_path / "unfinished.zarr"
    store.create_spin_store(path, 16, 16, 2, {"model": "ising2d", "L": 16, "complete": False})
    for args in (("info", path), ("coarsen", path, "--factor", 2, "--out", tmp_path / "c.zarr"),
                 ("superres", "--checkpoint", run16, "--data", path, "--factor", 4, "--out", tmp_path / "o.zarr",
                  "--quiet", "--device", "cpu")):
        assert "unfinished" in _one_line_error(_cli(*args)), args[0]


def test_zero_filled_store_is_refused(tmp_path):
    # a store that claims to be complete but whose spins were never written (all fill value 0)
    path = tmp_path / "zeros.zarr"
    store.create_spin_store(path, 16, 8, 2, {"model": "ising2d", "L": 8, "complete": True})
    msg = _one_line_error(_cli("info", path))
    assert "missing" in msg
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    with zarr.config.set(store.WRITE_ALL_CHUNKS):  # chunks present, but zeros: still not ±1 spins
        for name in ("spins", "energy", "magnetization", "chain", "sweep"):
            root[name][:] = 0
    assert "not all ±1" in _one_line_error(_cli("info", path))


def test_empty_store_is_refused(tmp_path):
    path = tmp_path / "empty.zarr"
    store.create_spin_store(path, 0, 8, 2, {"model": "ising2d", "L": 8, "complete": True})
    assert "holds no samples" in _one_line_error(_cli("info", path))


def test_damaged_checkpoint_is_refused(tmp_path, run16):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run16, run)
    data = bytearray((run / checkpoint.USE_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a weight tensor: torch.load alone would not notice
    (run / checkpoint.USE_FILE).write_bytes(bytes(data))
    msg = _one_line_error(_cli("generate", "--checkpoint", run, "--samples", 2, "--out", tmp_path / "g.zarr",
                               "--quiet", "--device", "cpu"))
    assert "damaged" in msg
    (run / checkpoint.USE_FILE).unlink()
    assert "does not exist" in _one_line_error(_cli("generate", "--checkpoint", run, "--samples", 2, "--out",
                                                    tmp_path / "g.zarr", "--quiet", "--device", "cpu"))


def test_checkpoint_checksum_covers_every_tensor_and_value():
    import torch

    state = {"config": "{}", "ema": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3}
    digest = checkpoint.content_digest(state)
    assert checkpoint.content_digest({**state, "step": 4}) != digest
    changed = {**state, "ema": {"w": torch.arange(6.0).reshape(2, 3).clone()}}
    assert checkpoint.content_digest(changed) == digest
    changed["ema"]["w"][1, 2] = 5.000001
    assert checkpoint.content_digest(changed) != digest
    assert checkpoint.content_digest({**state, "ema": {"w": torch.arange(6.0).reshape(3, 2)}}) != digest


# ---- 2. outputs never destroy what the command did not make -------------------------------- #

def _foreign(tmp_path, name="notes") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "thesis.tex").write_text("years of work")
    return d


def test_overwrite_never_deletes_a_foreign_directory(tmp_path, run16):
    data = _fresh_store(tmp_path, L=16, n_samples=8)
    commands = {
        "simulate": ("simulate", "--L", 8, "--samples", 8, "--quiet"),
        "coarsen": ("coarsen", data, "--factor", 2, "--quiet"),
        "correlators": ("correlators", data, "--quiet"),
        "train": ("train", "--data", data, "--net", "tiny", "--steps", 1, "--quiet", "--device", "cpu"),
        "generate": ("generate", "--checkpoint", run16, "--samples", 2, "--quiet", "--device", "cpu"),
        "superres": ("superres", "--checkpoint", run16, "--data", data, "--factor", 4, "--quiet", "--device", "cpu"),
        "evaluate": ("evaluate", "--checkpoint", run16, "--truth", data, "--samples", 4, "--quiet", "--device", "cpu"),
    }
    for name, args in commands.items():
        target = _foreign(tmp_path, f"{name}.zarr" if name != "correlators" else "k.zarr")
        before = _tree(target)
        msg = _one_line_error(_cli(*args, "--out", target, "--overwrite"))
        assert "did not write" in msg, (name, msg)
        assert _tree(target) == before, name


def test_overwrite_never_replaces_an_output_of_another_kind(tmp_path, run16):
    before = _tree(run16)
    msg = _one_line_error(_cli("simulate", "--L", 8, "--samples", 8, "--out", run16, "--overwrite", "--quiet"))
    assert "holds a training run, not a simulation store" in msg
    assert _tree(run16) == before
    data = _fresh_store(tmp_path)
    before = _tree(data)
    msg = _one_line_error(_cli("train", "--data", _fresh_store(tmp_path, "t.zarr", L=16, n_samples=8), "--out", data,
                               "--overwrite", "--net", "tiny", "--steps", 1, "--quiet", "--device", "cpu"))
    assert "holds a simulation store, not a training run" in msg
    assert _tree(data) == before


def test_an_input_is_never_its_own_output(tmp_path, run16):
    data = _fresh_store(tmp_path, L=16, n_samples=8)
    before = _tree(data)
    for args in (("correlators", data, "--out", data, "--overwrite", "--quiet"),
                 ("coarsen", data, "--factor", 2, "--out", data, "--overwrite", "--quiet"),
                 ("superres", "--checkpoint", run16, "--data", data, "--factor", 4, "--out", data, "--overwrite",
                  "--quiet", "--device", "cpu"),
                 ("train", "--data", data, "--out", data / "run", "--overwrite", "--net", "tiny", "--steps", 1,
                  "--quiet", "--device", "cpu"),
                 ("evaluate", "--checkpoint", run16, "--truth", data, "--out", run16, "--samples", 4, "--overwrite",
                  "--quiet", "--device", "cpu")):
        msg = _one_line_error(_cli(*args))
        assert "is an input of this command" in msg, (args[0], msg)
    assert _tree(data) == before


def test_overwrite_replaces_its_own_output(tmp_path):
    data = _fresh_store(tmp_path)
    out = tmp_path / "k.nc"
    assert _cli("correlators", data, "--out", out, "--quiet", "--sizes", "1,2").exit_code == 0
    assert "already holds" in _one_line_error(_cli("correlators", data, "--out", out, "--quiet"))
    r = _cli("correlators", data, "--out", out, "--quiet", "--sizes", "1", "--overwrite")
    assert r.exit_code == 0, r.output
    assert list(xr.open_dataset(out).patch_size.values) == [1]
    foreign = tmp_path / "paper.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(foreign)
    assert "did not write" in _one_line_error(_cli("correlators", data, "--out", foreign, "--overwrite", "--quiet"))


def test_plot_and_metrics_files_are_replaced_only_if_ours(tmp_path):
    png = tmp_path / "figure.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n someone's figure")
    msg = _one_line_error(_cli("schedule", "--preset", "ising128_4x", "--size", 16, "--plot", png, "--overwrite"))
    assert "did not write" in msg and png.read_bytes().endswith(b"someone's figure")
    ours = tmp_path / "ours.png"
    assert _cli("schedule", "--preset", "ising128_4x", "--size", 16, "--plot", ours).exit_code == 0
    assert outputs.kind_of(ours) == outputs.PLOT
    assert "already holds" in _one_line_error(_cli("schedule", "--preset", "ising128_4x", "--size", 16, "--plot", ours))
    assert _cli("schedule", "--preset", "ising128_4x", "--size", 16, "--plot", ours, "--overwrite").exit_code == 0
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    msg = _one_line_error(_cli("metrics", "--pred", f"imagefolder:{tmp_path}", "--out", notes, "--overwrite"))
    assert "did not write" in msg and notes.read_text() == '{"mine": true}'


def test_image_outputs_replace_only_image_sample_directories(tmp_path):
    folder = _foreign(tmp_path, "photos")
    with pytest.raises(InputError, match="did not write"):
        outputs.claim(folder, outputs.IMAGES, overwrite=True)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.json").write_text(json.dumps({outputs.KIND_ATTR: outputs.IMAGES, "params": {}, "complete": True}))
    assert outputs.claim(ours, outputs.IMAGES, overwrite=True) == "existing"
    outputs.replace(ours, outputs.IMAGES)
    assert not ours.exists() and (folder / "thesis.tex").is_file()


def test_workflow_does_not_overwrite_data_it_did_not_produce(tmp_path):
    out = tmp_path / "wf"
    foreign = _foreign(out, "data.zarr")
    spec = tmp_path / "w.toml"
    spec.write_text(f'[workflow]\nname = "w"\nout = "{out}"\n\n[[stages]]\nname = "data"\nrun = "simulate"\n'
                    'args = { L = 8, samples = 8, out = "{out}/data.zarr", quiet = true }\n')
    before = _tree(foreign)
    msg = _one_line_error(_cli("run", spec))
    assert "this workflow did not write it" in msg
    assert _tree(foreign) == before


def test_workflow_unknown_variable_is_one_sentence(tmp_path):
    spec = tmp_path / "w.toml"
    spec.write_text('[workflow]\nname = "w"\nout = "{root}/wf"\n\n[[stages]]\nname = "a"\nrun = "simulate"\n'
                    'args = { L = 8, out = "{out}/a.zarr" }\n')
    assert "unknown placeholder {root}" in _one_line_error(_cli("run", spec, "--dry-run"))
    spec.write_text('[workflow]\nname = "w"\nout = "wf"\n\n[[stages]]\nname = "a"\nrun = "simulate"\n'
                    'args = { L = "{size}", out = "{out}/a.zarr" }\n')
    assert "unknown placeholder {size}" in _one_line_error(_cli("run", spec, "--dry-run"))


# ---- 3. one writer at a time ---------------------------------------------------------------- #

def _skild(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "skild_phys", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent, **kw)


def _wait_for(path: Path, proc, timeout=120.0):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_second_simulate_on_one_path_is_refused(tmp_path):
    out = tmp_path / "s.zarr"
    # a long first writer (minutes of sampling), killed at the end
    first = _skild("simulate", "--L", 64, "--samples", 200000, "--chains", 2, "--seed", 1, "--out", out, "--quiet",
                   "--threads", 1)
    try:
        _wait_for(out / store.RESUME_FILE, first)
        second = subprocess.run([sys.executable, "-m", "skild_phys", "simulate", "--L", "32", "--samples", "100",
                                 "--seed", "2", "--out", str(out), "--overwrite", "--quiet"], capture_output=True,
                                text=True, cwd=Path(__file__).parent.parent)
        assert second.returncode == 2, second.stderr
        assert "being written by another skild-phys process" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first writer was not disturbed ...
        assert store.read_attrs(out)["seed"] == 1 and store.read_attrs(out)["L"] == 64  # ... nor its store
    finally:
        first.kill()
        first.wait()


def test_lock_of_a_killed_writer_is_released_and_the_run_resumes(tmp_path):
    out = tmp_path / "s.zarr"
    args = ("simulate", "--L", 32, "--samples", 6000, "--chains", 2, "--seed", 1, "--out", out, "--quiet",
            "--threads", 1)
    proc = _skild(*args)
    _wait_for(out / store.RESUME_FILE, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with outputs.lock(out):  # the kernel dropped the dead writer's lock
        pass
    assert subprocess.run([sys.executable, "-m", "skild_phys", *map(str, args)], capture_output=True,
                          cwd=Path(__file__).parent.parent).returncode == 0
    assert store.read_attrs(out)["complete"]
    store.verify(out)


def test_second_train_in_one_directory_is_refused(tmp_path, tiny_run16):
    data = tiny_run16[1]
    run = tmp_path / "run"
    with outputs.lock(run):  # another process's lock: flock excludes every other open file description
        msg = _one_line_error(_cli("train", "--data", data, "--out", run, "--net", "tiny", "--steps", 1, "--quiet",
                                   "--device", "cpu"))
    assert "being written by another skild-phys process" in msg
    assert not run.exists() or not any(run.iterdir())


def test_lock_refuses_within_and_across_processes(tmp_path):
    target = tmp_path / "x.zarr"
    with outputs.lock(target):
        with pytest.raises(InputError, match="being written"):
            with outputs.lock(target):
                pass
        code = ("import sys\nfrom skild_base import outputs\nfrom skild_base.errors import InputError\n"
                f"try:\n    outputs.lock({str(target)!r}).__enter__()\nexcept InputError:\n    sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 3
    with outputs.lock(target):  # released
        pass


# ---- 5. every user mistake is one sentence, before the work --------------------------------- #

@pytest.mark.parametrize("args", [
    ("simulate", "--L", 8, "--T", "nan", "--out", "x.zarr"),
    ("simulate", "--L", 8, "--thermalize", "inf", "--out", "x.zarr"),
    ("train", "--data", "x.zarr", "--out", "r", "--lr", "nan"),
    ("train", "--data", "x.zarr", "--out", "r", "--factor", "inf"),
    ("schedule", "--preset", "ising128_4x", "--size", 16, "--resolution", "nan"),
    ("correlators", "x.zarr", "--out", "k.nc", "--kappa4-window", "1,inf"),
])
def test_non_finite_numbers_are_refused(tmp_path, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _cli(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "finite" in r.output or "LO < HI" in r.output, r.output
    assert not any(tmp_path.iterdir())


def test_unwritable_output_is_refused_before_the_work(tmp_path, run16):
    data = _fresh_store(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for args in (("correlators", data, "--out", blocker / "k.nc", "--quiet"),
                 ("simulate", "--L", 8, "--samples", 8, "--out", blocker / "s.zarr", "--quiet"),
                 ("train", "--data", data, "--out", blocker / "run", "--net", "tiny", "--steps", 1, "--quiet",
                  "--device", "cpu"),
                 ("superres", "--checkpoint", run16, "--data", _fresh_store(tmp_path, "d16.zarr", L=16, n_samples=4),
                  "--factor", 4, "--out", blocker / "o.zarr", "--quiet", "--device", "cpu")):
        msg = _one_line_error(_cli(*args))
        assert "cannot" in msg or "does not exist" in msg, (args[0], msg)
    assert blocker.read_text() == "not a directory"


def test_one_resume_rule_for_every_parameter_determined_output(tmp_path):
    """outputs.begin: same parameters continue (complete / resume), other parameters need --overwrite
    and replace only the toolkit's own output of that kind; foreign data and inputs are never touched."""
    out = tmp_path / "images"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({outputs.KIND_ATTR: outputs.IMAGES, "params": {"a": 1},
                                                 "complete": True}))
    record = json.loads((out / "config.json").read_text())
    assert outputs.begin(out, outputs.IMAGES, {"a": 1}, record) == "complete"
    assert outputs.begin(out, outputs.IMAGES, {"a": 1}, {**record, "complete": False}) == "resume"
    with pytest.raises(InputError, match="already holds"):
        outputs.begin(out, outputs.IMAGES, {"a": 2}, record)
    assert outputs.begin(out, outputs.IMAGES, {"a": 2}, record, overwrite=True) == "fresh" and not out.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="did not write"):
        outputs.begin(foreign, outputs.IMAGES, {"a": 1}, None, overwrite=True)
    with pytest.raises(InputError, match="is an input"):
        outputs.begin(foreign, outputs.IMAGES, {"a": 1}, None, overwrite=True, inputs=(foreign,))
    assert (foreign / "notes.txt").read_text() == "keep"
    (tmp_path / "record.json").write_text('{"params": {"a": 1}, "compl')  # a record cut short by a crash
    with pytest.raises(InputError, match="is damaged"):
        outputs.read_record(tmp_path / "record.json")
    assert outputs.read_record(tmp_path / "none.json") is None


def test_raw_weights_become_a_checkpoint_without_overwriting(tmp_path, tiny_run16):
    """benchmarks/raw_weights.py: the raw weights of resume.pt, not the EMA, in a new use artifact that
    loads as a checkpoint; an existing output directory is refused in one line and left untouched."""
    import torch

    from skild_phys.methods import load_trained

    run, out = tiny_run16[0], tmp_path / "raw"
    script = [sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "raw_weights.py"), str(run), str(out)]
    assert subprocess.run(script, capture_output=True).returncode == 0
    raw, resume, ema = checkpoint.load_use(out), checkpoint.load_resume(run), checkpoint.load_use(run)
    assert raw["config"] == ema["config"] and raw["step"] == ema["step"] and torch.equal(raw["S0"], ema["S0"])
    assert raw["ema"].keys() == resume["model"].keys()
    assert all(torch.equal(raw["ema"][k], resume["model"][k]) for k in raw["ema"])
    assert any(not torch.equal(raw["ema"][k], ema["ema"][k]) for k in raw["ema"] if raw["ema"][k].is_floating_point())
    load_trained(out)
    before = (out / checkpoint.USE_FILE).read_bytes()
    second = subprocess.run(script, capture_output=True, text=True)
    assert second.returncode == 2 and second.stderr.strip().count("\n") == 0 and "already exists" in second.stderr
    assert (out / checkpoint.USE_FILE).read_bytes() == before
