"""Data-parallel training under torchrun (2 gloo processes on CPU): loss curve and exact resumption."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from skild_phys import checkpoint
from skild_phys.cli import main

STEPS, BATCH, WINDOW = 60, 16, 20
N_SIGMA = 4.0


@pytest.fixture(scope="module")
def store8(make_store):
    return make_store("ddp8", L=8, n_samples=256, chains=4, seed=1)


def _args(store, out, steps):
    return ["train", "--data", str(store), "--out", str(out), "--steps", str(steps), "--batch", str(BATCH),
            "--lr", "2e-3", "--warmup", "5", "--checkpoint-every", "10", "--log-every", "1", "--threads", "1",
            "--device", "cpu", "--quiet", "--spectrum", "empirical",
            "--lr-decay", "none"]  # a constant rate: stopping at STEPS // 2 and extending is the uninterrupted run


def _torchrun(args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform == "linux" else {}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "skild_phys", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(run):
    return np.array([json.loads(line)["loss"] for line in (run / checkpoint.LOG_FILE).read_text().splitlines()])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, store8):
    out = tmp_path_factory.mktemp("ddp") / "run"
    _torchrun(_args(store8, out, STEPS))
    return out


def test_ddp_loss_curve_matches_single_process(tmp_path, store8, ddp_run):
    single = tmp_path / "single"
    r = CliRunner().invoke(main, _args(store8, single, STEPS))
    assert r.exit_code == 0, r.output
    a, b = _losses(single), _losses(ddp_run)
    assert len(a) == len(b) == STEPS
    # Same global batch, same initial weights, same learning rate: the expected loss at each step
    # is the same; the runs differ only in which samples and noise they draw.  Per window of
    # WINDOW steps the mean losses must agree within N_SIGMA standard errors, estimated from the
    # step-to-step scatter of both runs (each step's loss is a mean over 16 samples of a
    # heavy-tailed per-sample loss, so the scatter is large: about 0.1 per step, 0.02 per window).
    for lo in range(0, STEPS, WINDOW):
        x, y = a[lo:lo + WINDOW], b[lo:lo + WINDOW]
        se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        assert abs(x.mean() - y.mean()) < N_SIGMA * se, (lo, x.mean(), y.mean(), se)
    resume = checkpoint.load_resume(ddp_run)
    assert resume["world"] == 2 and len(resume["rank_data_rng"]) == 2
    assert resume["rank_data_rng"][0] != resume["rank_data_rng"][1]  # each rank draws its own samples


def test_ddp_stopped_and_resumed_equals_uninterrupted(tmp_path, store8, ddp_run):
    out = tmp_path / "resumed"
    _torchrun(_args(store8, out, STEPS // 2))
    done = _torchrun(_args(store8, out, STEPS) + ["--resume"])
    assert "resuming" in done.stderr
    a, b = checkpoint.load_resume(ddp_run), checkpoint.load_resume(out)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    np.testing.assert_array_equal(_losses(ddp_run), _losses(out))


def test_resume_refuses_another_number_of_processes(store8, ddp_run):
    r = CliRunner().invoke(main, _args(store8, ddp_run, STEPS + 2) + ["--resume"])
    assert r.exit_code == 2 and "same number" in r.output and "Traceback" not in r.output
