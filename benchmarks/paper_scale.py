"""Paper-scale SKILD on one GPU within a fixed wall-clock budget: L = 64 at 4× and 8× (one model),
L = 128 at 4×, the `base` network, evaluated by `skild-phys evaluate`.

    python benchmarks/paper_scale.py --out DIR [--work DIR] [--data DIR] [--deadline SECONDS]
                                     [--train-seconds 64=150,128=120] [--models L64,L128]
                                     [--device cuda] [--smoke]

Stages, in this order, each an ordinary `skild-phys` command (printed, logged, timed):

1. data: the four stores below, simulated unless --data already holds them (simulation
   depends on the seed only, so carried stores are the same data);
2. per lattice size: a 30-step probe of the training rate at the run's batch and precision,
   then `train` for as many steps as the size's --train-seconds allow at that rate (cosine
   learning-rate decay over exactly those steps), then `evaluate` on held-out configurations
   of a seed training never saw — at L = 64 once at 4× (with generation) and once at 8×;
3. OUT/summary.md: one table over the evaluations, the exact command of every stage, then
   each evaluation's full fidelity table; OUT/record.json; OUT/paper_scale_L64.tar.gz and
   _L128.tar.gz hold the run and evaluation directories without the network weights.

--deadline bounds the whole run: the L = 128 training is shortened to what is left after the
L = 64 stages and an estimate of its own evaluation, and a stage that would start past the
deadline is skipped (and listed as such).  The training steps are chosen from a measured rate,
so the record states them: rerunning the printed `train` command reproduces a row exactly.

--smoke runs the same stages on CPU at L = 16 and 32 with the `tiny` network in about three
minutes (a check of this script, not a result).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_campaign import _pm, kappa4_cell, specific_heat_cells  # noqa: E402

from skild_phys.checkpoint import read_log  # noqa: E402
from skild_phys.workflow import option_argv  # noqa: E402

FULL = {
    "data": {
        "train64": {"L": 64, "samples": 16000, "seed": 1, "sweeps_between": 2},
        "test64": {"L": 64, "samples": 1000, "seed": 1001, "sweeps_between": 6},
        "train128": {"L": 128, "samples": 6000, "seed": 1, "sweeps_between": 2},
        "test128": {"L": 128, "samples": 512, "seed": 1001, "sweeps_between": 6},
    },
    "models": {
        "L64": {"L": 64, "train": "train64", "test": "test64", "factor": 8, "batch": 64, "seconds": 150},
        "L128": {"L": 128, "train": "train128", "test": "test128", "factor": 4, "batch": 32, "seconds": 120},
    },
    "evals": [
        {"model": "L64", "factor": 4, "samples": 400, "gen_samples": 400, "batch": 200},
        {"model": "L64", "factor": 8, "samples": 400, "gen_samples": 0, "batch": 200},
        {"model": "L128", "factor": 4, "samples": 192, "gen_samples": 192, "batch": 96},
    ],
    "net": "base", "train_precision": "bf16", "eval_precision": "tf32", "steps": 100, "seed": 1,
}

SMOKE = {
    "data": {
        "train64": {"L": 16, "samples": 400, "seed": 1, "sweeps_between": 2},
        "test64": {"L": 16, "samples": 64, "seed": 1001, "sweeps_between": 6},
        "train128": {"L": 32, "samples": 400, "seed": 1, "sweeps_between": 2},
        "test128": {"L": 32, "samples": 64, "seed": 1001, "sweeps_between": 6},
    },
    "models": {
        "L64": {"L": 16, "train": "train64", "test": "test64", "factor": 4, "batch": 16, "seconds": 15},
        "L128": {"L": 32, "train": "train128", "test": "test128", "factor": 4, "batch": 16, "seconds": 15},
    },
    "evals": [
        {"model": "L64", "factor": 4, "samples": 32, "gen_samples": 16, "batch": 32},
        {"model": "L64", "factor": 2, "samples": 32, "gen_samples": 0, "batch": 32},
        {"model": "L128", "factor": 4, "samples": 16, "gen_samples": 16, "batch": 16},
    ],
    "net": "tiny", "train_precision": "fp32", "eval_precision": "fp32", "steps": 10, "seed": 1,
}

PROBE_STEPS = 30
EVAL_RESERVE_S = 15.0  # added to every evaluation's estimated wall time


class Runner:
    """Runs `skild-phys` commands against a deadline and keeps a record of each."""

    def __init__(self, deadline: float, log: Path):
        self.t0 = time.monotonic()
        self.deadline = deadline
        self.log = log
        self.stages: list[dict] = []

    def left(self) -> float:
        return self.deadline - (time.monotonic() - self.t0)

    def run(self, name: str, command: str, args: dict, timeout: float | None = None) -> dict:
        cmd = ["skild-phys", command] + option_argv(args)
        rec = {"stage": name, "command": shlex.join(cmd)}
        limit = self.left() if timeout is None else min(timeout, self.left())
        if limit < 5:
            rec.update(status="skipped (deadline)", wall_s=0.0)
            print(f"[{name}] skipped: {limit:.0f} s left", flush=True)
            self.stages.append(rec)
            return rec
        print(f"[{name}] $ {rec['command']}", flush=True)
        t = time.monotonic()
        with open(self.log, "a") as fh:
            fh.write(f"\n[{name}] $ {rec['command']}\n")
            fh.flush()
            proc = subprocess.Popen([sys.executable, "-m", "skild_phys"] + cmd[1:], stdout=fh,
                                    stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=limit)
                rec["status"] = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                # Ctrl-C: train saves its state at the step it is on, evaluate keeps its stores
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                rec["status"] = f"interrupted at its time limit ({limit:.0f} s)"
        rec["wall_s"] = time.monotonic() - t
        print(f"[{name}] {rec['status']} in {rec['wall_s']:.1f} s ({self.left():.0f} s left)", flush=True)
        self.stages.append(rec)
        return rec


def last_rate(run: Path) -> float | None:
    """Training samples/s of the last logged window of a run (None if it logged none)."""
    rates = [r["samples_per_s"] for r in read_log(run) if "samples_per_s" in r]
    return rates[-1] if rates else None


def train_model(runner: Runner, cfg: dict, name: str, m: dict, data: Path, work: Path, device: str,
                seconds: float) -> dict:
    """Probe the rate, then train for `seconds` worth of steps; returns the model's record."""
    common = {"data": str(data / f"{m['train']}.zarr"), "net": cfg["net"], "factor": m["factor"],
              "batch": m["batch"], "precision": cfg["train_precision"], "device": device, "seed": cfg["seed"],
              "quiet": True}
    probe = work / f"probe_{name}"
    runner.run(f"probe {name}", "train", {**common, "out": str(probe), "steps": PROBE_STEPS, "log_every": 10,
                                          "checkpoint_every": 10 ** 6, "overwrite": True}, timeout=180)
    rate = last_rate(probe)
    rec = {"model": name, "L": m["L"], "batch": m["batch"], "probe_samples_per_s": rate, "seconds": seconds}
    if not rate:
        rec["status"] = "probe failed"
        return rec
    steps = max(50, int(seconds * rate / m["batch"]) // 50 * 50)
    run = work / name
    stage = runner.run(f"train {name}", "train", {**common, "out": str(run), "steps": steps,
                                                  "val_data": str(data / f"{m['test']}.zarr"),
                                                  "val_every": max(50, steps // 4), "checkpoint_every": steps,
                                                  "overwrite": True}, timeout=seconds * 2.0 + 60)
    log = read_log(run)
    losses = [r for r in log if "loss" in r]
    vals = [r for r in log if "val_loss" in r]
    rec.update(steps=steps, status=stage["status"], wall_s=stage["wall_s"], run=str(run),
               final_step=losses[-1]["step"] if losses else 0,
               final_loss=losses[-1]["loss"] if losses else None,
               val_loss=vals[-1]["val_loss"] if vals else None,
               samples_per_s=float(sum(r["samples_per_s"] for r in losses[-5:]) / len(losses[-5:])) if losses else None,
               trained=(run / "model.pt").is_file())
    return rec


def evaluate(runner: Runner, cfg: dict, e: dict, m: dict, data: Path, work: Path, device: str) -> dict:
    out = work / f"eval_{e['model']}_x{e['factor']}"
    stage = runner.run(f"evaluate {e['model']} {e['factor']}x", "evaluate", {
        "checkpoint": str(work / e["model"]), "truth": str(data / f"{m['test']}.zarr"), "out": str(out),
        "samples": e["samples"], "gen_samples": e["gen_samples"], "steps": cfg["steps"], "factor": e["factor"],
        "baseline": "gaussian", "precision": cfg["eval_precision"], "batch": e["batch"], "device": device,
        "seed": cfg["seed"], "overwrite": True, "quiet": True})
    return {**e, "status": stage["status"], "wall_s": stage["wall_s"], "out": str(out)}


def row(e: dict, model: dict) -> str:
    """One line of the summary table from the evaluation's fidelity.nc."""
    import xarray as xr

    from skild_phys.reports.evaluate import DATASET_FILE, summary

    nc = Path(e["out"]) / DATASET_FILE
    head = [f"L = {model['L']}, {e['factor']}×", f"{model.get('steps', 0)} × {model['batch']}",
            f"{model.get('wall_s', 0) / 60:.1f}",
            f"{model['val_loss']:.4f}" if model.get("val_loss") is not None else "—"]
    if not nc.is_file():
        return "| " + " | ".join(head + [e["status"]] + ["—"] * 8) + " |"
    s = summary(xr.load_dataset(nc))
    cells = []
    for protocol in ("marginal", "lowres"):
        p = s.get(protocol)
        if p and "kappa4_excess" in p:
            cells += [kappa4_cell(p["kappa4_excess"], sizes=sorted(p["kappa4_excess"])),
                      _pm(*p["d_e"], fmt="+.4f")]
        else:
            cells += ["—", "—"]
    gen = s.get("generate")
    cells += [f"{gen[m][0]:.3f} ({gen[m][2]:+.1f}σ)" for m in ("binder", "abs_m", "e")] if gen else ["—"] * 3
    cells += specific_heat_cells(s)[:1]
    return "| " + " | ".join(head + [f"{e['samples']}"] + cells) + " |"


def write_summary(out: Path, record: dict) -> str:
    """OUT/summary.md: the table over the evaluations, the models, every command, then each full
    fidelity table; returns the part before the full tables."""
    from skild_phys.reports.evaluate import TABLE_FILE

    lines = ["# Paper-scale check", "", f"Device: {record.get('device', '?')}", "",
             "| model | steps × batch | train min | val loss | SR samples | marginal κ4 excess % per ℓ (paired) | "
             "marginal Δ⟨e⟩ | lowres κ4 excess % per ℓ | lowres Δ⟨e⟩ | gen U4 (σ) | gen ⟨\\|m\\|⟩ (σ) | gen ⟨e⟩ (σ) | "
             "marginal ΔC / C |", "|---" * 13 + "|"]
    for e in record["evals"]:
        lines.append(row(e, record["models"].get(e["model"], {"L": "?", "batch": "?"})))
    lines += ["", "| model | probe samples/s | training samples/s | steps | final loss | status |", "|---" * 6 + "|"]
    for name, m in record["models"].items():
        lines.append(f"| {name} | {m.get('probe_samples_per_s') or 0:.0f} | {m.get('samples_per_s') or 0:.0f} | "
                     f"{m.get('steps', '—')} | {m.get('final_loss') or float('nan'):.4f} | {m.get('status')} |")
    lines += ["", "Commands (in order, with status and wall time):", ""]
    lines += [f"- {s['stage']}: `{s['command']}` — {s['status']}, {s['wall_s']:.0f} s" for s in record["stages"]]
    head = "\n".join(lines) + "\n"
    for e in record["evals"]:
        table = Path(e["out"]) / TABLE_FILE
        if table.is_file():
            lines += ["", f"## L = {record['models'][e['model']]['L']}, {e['factor']}×", "", table.read_text()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return head


def archive(work: Path, out: Path, names: list[str], limit: int = 15 << 20) -> None:
    """One archive per model: its run and evaluation directories without network weights (*.pt);
    without the configuration stores too where they would pass `limit` bytes."""
    for name in names:
        parts = [p for p in sorted(work.iterdir()) if p.name == name or p.name.startswith(f"eval_{name}_")]
        dest = out / f"paper_scale_{name}.tar.gz"
        for keep_stores in (True, False):
            with tarfile.open(dest, "w:gz") as tar:
                for part in parts:
                    for p in sorted(part.rglob("*")):
                        in_store = any(q.suffix == ".zarr" for q in p.relative_to(work).parents)
                        if p.is_file() and p.suffix != ".pt" and (keep_stores or not in_store):
                            tar.add(p, arcname=str(p.relative_to(work)))
            if dest.stat().st_size <= limit:
                break


def device_line(device: str) -> str:
    """The device and the versions of the packages that compute."""
    import numba
    import numpy
    import torch
    import xarray
    import zarr

    versions = (f"torch {torch.__version__}, numpy {numpy.__version__}, numba {numba.__version__}, "
                f"xarray {xarray.__version__}, zarr {zarr.__version__}")
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; {versions}"
    return f"cpu ({torch.get_num_threads()} threads); {versions}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Directory for summary.md, record.json and the archives.")
    ap.add_argument("--work", default=None, help="Run and evaluation directories [default: OUT/work].")
    ap.add_argument("--data", default=None, help="Directory of the four stores [default: WORK/data].")
    ap.add_argument("--deadline", type=float, default=540.0, help="Seconds for the whole run.")
    ap.add_argument("--train-seconds", default=None, help="Training seconds per size, e.g. 64=150,128=120.")
    ap.add_argument("--models", default=None, help="Comma-separated subset of L64, L128 [default: both].")
    ap.add_argument("--device", default=None, help="torch device [default: cuda, cpu with --smoke].")
    ap.add_argument("--smoke", action="store_true", help="CPU check of the script at L = 16 and 32.")
    args = ap.parse_args()
    cfg = json.loads(json.dumps(SMOKE if args.smoke else FULL))
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.models:
        keep = args.models.split(",")
        unknown = sorted(set(keep) - set(cfg["models"]))
        if unknown:
            raise SystemExit(f"unknown models: {', '.join(unknown)} (known: {', '.join(cfg['models'])})")
        cfg["models"] = {k: v for k, v in cfg["models"].items() if k in keep}
        cfg["evals"] = [e for e in cfg["evals"] if e["model"] in keep]
    if args.train_seconds:
        for item in args.train_seconds.split(","):
            size, _, seconds = item.partition("=")
            if f"L{size}" not in cfg["models"] or not seconds:
                raise SystemExit(f"--train-seconds {item!r}: expected SIZE=SECONDS, SIZE one of {', '.join(m[1:] for m in cfg['models'])}")
            cfg["models"][f"L{size}"]["seconds"] = float(seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else work / "data"
    runner = Runner(args.deadline, out / "stages.log")
    record = {"device": device_line(args.device), "config": cfg, "models": {}, "evals": [], "stages": runner.stages}
    print(f"device: {record['device']}", flush=True)

    for name, d in cfg["data"].items():
        if not (data / f"{name}.zarr" / "zarr.json").is_file():
            runner.run(f"simulate {name}", "simulate", {**d, "chains": 8, "out": str(data / f"{name}.zarr"),
                                                        "quiet": True})

    eval_wall = {}  # measured evaluation wall time per (model, factor), to plan what follows
    for name, m in cfg["models"].items():
        evals = [e for e in cfg["evals"] if e["model"] == name]
        seconds = m["seconds"]
        if eval_wall:
            # the later size's evaluations, estimated from the earlier ones' by lattice area × samples
            ref_e, ref_wall = next(iter(eval_wall.values()))
            ref_L = cfg["models"][ref_e["model"]]["L"]
            need = sum(ref_wall * (m["L"] / ref_L) ** 2 * (e["samples"] * 2 + e["gen_samples"])
                       / (ref_e["samples"] * 2 + ref_e["gen_samples"]) + EVAL_RESERVE_S for e in evals)
            seconds = max(10.0, min(seconds, runner.left() - need - 30 - 15))  # 30: probe, 15: start-up
            print(f"[plan {name}] {seconds:.0f} s of training (evaluations estimated at {need:.0f} s)", flush=True)
        rec = train_model(runner, cfg, name, m, data, work, args.device, seconds)
        record["models"][name] = rec
        if not rec.get("trained"):
            continue
        for e in evals:
            r = evaluate(runner, cfg, e, m, data, work, args.device)
            record["evals"].append(r)
            if r["status"] == "ok":
                eval_wall.setdefault((e["model"], e["factor"]), (e, r["wall_s"]))
        (out / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    (out / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    try:
        print(write_summary(out, record), flush=True)
    except Exception as exc:  # the record and the archive still come back
        print(f"summary failed: {exc!r}", flush=True)
    archive(work, out, list(cfg["models"]))
    print(f"wrote {out}/summary.md, record.json, paper_scale_*.tar.gz ({runner.left():.0f} s of the deadline left)")


if __name__ == "__main__":
    main()
