"""Dask ensembles: byte-identical to the embedded run, loopback only, survive killed workers and drivers."""

import filecmp
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
from click.testing import CliRunner

from ising import store
from ising.distributed import DaskChains, connect
from ising.simulate import SimulationParams, run_simulation
from ising.sweep import sweep_points
from skild_phys.cli import main


@pytest.fixture(scope="module")
def client():
    with connect(workers=2) as c:
        yield c


def _assert_same_store(a, b):
    """Every file byte for byte, except the creation time in the group attributes."""
    a, b = Path(a), Path(b)
    files = sorted(str(f.relative_to(a)) for f in a.rglob("*") if f.is_file())
    assert files == sorted(str(f.relative_to(b)) for f in b.rglob("*") if f.is_file())
    for name in files:
        if name == "zarr.json":
            meta_a, meta_b = (json.loads((s / name).read_text()) for s in (a, b))
            for meta in (meta_a, meta_b):
                meta["attributes"].pop("created")
                meta.get("consolidated_metadata", {}).pop("created", None)
            assert meta_a == meta_b
        else:
            assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_local_cluster_listens_on_loopback_only(client):
    info = client.scheduler_info()
    addresses = [info["address"], *info["workers"]]
    assert len(info["workers"]) == 2
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses


@pytest.mark.parametrize("url", [False, True])
def test_two_workers_write_the_embedded_store(tmp_path, make_store, client, url):
    args = dict(L=32, n_samples=9000, chains=5, seed=3)
    reference = make_store("dist_reference", **args)
    out = tmp_path / "dist.zarr"
    # tiny tasks: several blocks, uneven groups of chains (3 + 2)
    engine = functools.partial(DaskChains, client, task_flips=1)
    target = f"file://{out}" if url else out
    run_simulation(target, SimulationParams(**args), progress=False, log=lambda m: None, engine=engine)
    assert 2 * store.chunk_rounds(32, 5) * 5 < args["n_samples"]  # more than one block was written
    _assert_same_store(reference, out)


def test_sweep_names_one_store_per_point(tmp_path):
    points = sweep_points(str(tmp_path / "s.zarr"), {"L": [8, 16], "T": [2.2, 2.3]})
    assert [Path(p).name for _, p in points] == ["s_L8_T2.2.zarr", "s_L8_T2.3.zarr", "s_L16_T2.2.zarr",
                                                 "s_L16_T2.3.zarr"]
    assert sweep_points("s3://b/run.zarr", {"L": [8], "beta": [0.44]}) == [({"L": 8, "beta": 0.44}, "s3://b/run.zarr")]


def test_cli_sweep_on_local_cluster(tmp_path, make_store):
    out = tmp_path / "sweep.zarr"
    r = CliRunner().invoke(main, ["simulate", "--L", "8,10", "--samples", "60", "--chains", "3", "--seed", "4",
                                  "--workers", "2", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    for L in (8, 10):
        _assert_same_store(make_store(f"sweep{L}", L=L, n_samples=60, chains=3, seed=4), tmp_path / f"sweep_L{L}.zarr")


def test_cli_refuses_both_cluster_options(tmp_path):
    r = CliRunner().invoke(main, ["simulate", "--L", "8", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                                  "--out", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2 and "exactly one" in r.output and "Traceback" not in r.output


def _rounds_done(out):
    try:
        return int(store.load_resume(out)["rounds_done"]) if (out / store.RESUME_FILE).exists() else -1
    except (OSError, ValueError, KeyError, EOFError):  # caught while being replaced
        return -1


def _wait(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.005)
    return condition()


def test_killed_worker_then_killed_run_completes_without_loss_or_duplicates(tmp_path, make_store):
    args = dict(L=64, n_samples=16384, chains=4, seed=5)
    reference = make_store("dist_kill_reference", **args)
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "skild_phys", "simulate", "--L", "64", "--samples", "16384", "--chains", "4",
           "--seed", "5", "--workers", "2", "--task-flips", "1", "--out", str(out), "--quiet"]
    # its own session, so the driver and its cluster can be killed together as one group
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait(lambda: _rounds_done(out) > 0, proc), "no block was stored"
        at_worker_kill = _rounds_done(out)
        workers = [p for p in psutil.Process(proc.pid).children() if any("spawn_main" in a for a in p.cmdline())]
        assert workers, "no worker process found"
        workers[0].send_signal(signal.SIGKILL)
        # the run goes on without the lost worker ...
        assert _wait(lambda: _rounds_done(out) > at_worker_kill, proc), "no progress after a worker was killed"
        # ... and a run killed as a whole continues when the command is run again
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not store.read_attrs(out).get("complete"), "the run finished before it could be killed"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    _assert_same_store(reference, out)
    ra, rb = xr.open_zarr(reference), xr.open_zarr(out)
    np.testing.assert_array_equal(ra.sweep.values, rb.sweep.values)
