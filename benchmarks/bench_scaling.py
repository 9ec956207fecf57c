"""Scaling beyond one process: Dask simulation ensembles and torchrun DDP training, timed end to end.

Each row runs the real command in a fresh process and reports wall time (cluster start-up and
Zarr writes included) or the training log's throughput.  Numbers belong to the machine it
runs on; docs/scaling.md records them for the 2-core development machine.

    python benchmarks/bench_scaling.py [--L 128] [--samples 8000] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def _timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def simulation(tmp: Path, L: int, samples: int, chains: int) -> None:
    """Wall time of one store: embedded (1 and all threads) and on local Dask clusters."""
    base = [PY, "-m", "skild_phys", "simulate", "--L", str(L), "--samples", str(samples), "--chains", str(chains),
            "--quiet", "--overwrite"]
    rows = [("embedded, --threads 1", ["--threads", "1"]), ("embedded, all threads", []),
            ("--workers 1", ["--workers", "1"]), ("--workers 2", ["--workers", "2"])]
    print(f"simulate --L {L} --samples {samples} --chains {chains} (2 sweeps apart, thermalisation included)")
    print(f"{'engine':<26}{'wall s':>8}{'samples/s':>11}")
    for name, extra in rows:
        dt = _timed(base + ["--out", str(tmp / "sim.zarr")] + extra)
        print(f"{name:<26}{dt:>8.1f}{samples / dt:>11.0f}")
    t0 = time.perf_counter()
    _timed([PY, "-c", "from ising.distributed import connect\nif __name__ == '__main__':\n"
                      "    with connect(workers=2) as c: pass"])
    print(f"{'(start + stop of a 2-worker LocalCluster)':<26}{time.perf_counter() - t0:>8.1f}")


def training(tmp: Path, L: int, steps: int, batch: int, net: str) -> None:
    """Training throughput (samples/s, from RUN/log.jsonl) in one process and under torchrun."""
    data = tmp / "train.zarr"
    _timed([PY, "-m", "skild_phys", "simulate", "--L", str(L), "--samples", "512", "--chains", "8", "--quiet",
            "--overwrite", "--out", str(data)])
    args = ["train", "--data", str(data), "--steps", str(steps), "--batch", str(batch), "--net", net,
            "--device", "cpu", "--quiet", "--spectrum", "empirical", "--checkpoint-every", str(steps),
            "--log-every", str(max(1, steps // 2))]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [PY, "-m", "torch.distributed.run", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    rows = [("1 process, 1 thread", [PY, "-m", "skild_phys"], ["--threads", "1"]),
            ("1 process, 2 threads", [PY, "-m", "skild_phys"], ["--threads", "2"]),
            ("torchrun 2 x 1 thread", torchrun + ["--nproc-per-node", "2", "-m", "skild_phys"], ["--threads", "1"])]
    print(f"\ntrain --net {net} on L={L}, global batch {batch}, {steps} steps (rate over the second half)")
    print(f"{'launch':<26}{'samples/s':>11}{'wall s':>8}")
    for name, launcher, extra in rows:
        run = tmp / "run"
        shutil.rmtree(run, ignore_errors=True)
        dt = _timed(launcher + args + ["--out", str(run)] + extra, env={"GLOO_SOCKET_IFNAME": "lo"})
        rate = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["samples_per_s"]
        print(f"{name:<26}{rate:>11.1f}{dt:>8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=128)
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--train-L", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--net", default="tiny")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulation(Path(tmp), a.L, a.samples, a.chains)
        training(Path(tmp), a.train_L, a.steps, a.batch, a.net)


if __name__ == "__main__":
    main()
