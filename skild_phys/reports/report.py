"""Markdown report of a workflow run: κ4 figure and table, G(r), moments, settings, wall times, commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.moments import MOMENT_NAMES
from analysis.observables import deviation_sigma, paired_sigma
from skild_base.errors import InputError
from skild_phys.workflow import RECORD_DIR

REPORT_FILE = "report.md"


def _records(run_dir: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in sorted((run_dir / RECORD_DIR).glob("*.json"))]
    return sorted(recs, key=lambda r: r.get("started") or 0)


def _rel(path, base: Path) -> str:
    return os.path.relpath(Path(path), base)


def _kappa4_table(ds: xr.Dataset) -> list[str]:
    labels = [str(s) for s in ds.source.values]
    dev = deviation_sigma(ds).values
    head = "| ℓ | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 1)]
    for i, l in enumerate(ds.patch_size.values):
        cells = []
        for s in range(len(labels)):
            cell = f"{ds.kappa4.values[s, i]:+.3e} ± {ds.kappa4_err.values[s, i]:.1e}"
            if s > 0:
                cell += f" ({dev[s, i]:+.1f}σ{_paired_note(ds, 'kappa4', s, i)})"
            cells.append(cell)
        lines.append(f"| {int(l)} | " + " | ".join(cells) + " |")
    return lines


def _paired_note(ds: xr.Dataset, name: str, s: int, i: int) -> str:
    """'; paired zσ' where the source records its truth configurations, else ''."""
    z = paired_sigma(ds, name)
    if z is None or not np.isfinite(z.values[s, i]):
        return ""
    return f"; paired {z.values[s, i]:+.1f}σ"


def _per_source_table(ds: xr.Dataset, names, fmt="+.5f") -> list[str]:
    labels = [str(s) for s in ds.source.values]
    lines = ["| | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for name in names:
        if name not in ds:
            continue
        ref, ref_err = ds[name].values[0], ds[name + "_err"].values[0]
        cells = []
        for s in range(len(labels)):
            v, e = ds[name].values[s], ds[name + "_err"].values[s]
            cell = f"{v:{fmt}} ± {e:.2g}"
            if s > 0:
                paired = _paired_note(ds, "moments", s, MOMENT_NAMES.index(name)) if name in MOMENT_NAMES else ""
                cell += f" ({(v - ref) / np.hypot(e, ref_err):+.1f}σ{paired})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _G_table(ds: xr.Dataset) -> list[str]:
    labels = [str(s) for s in ds.source.values]
    rs = [r for r in (1, 2, 4, 8, 16, 32, 64) if r <= int(ds.r.max())]
    lines = ["| r | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for r in rs:
        i = int(np.nonzero(ds.r.values == r)[0][0])
        lines.append(f"| {r} | " + " | ".join(f"{ds.G.values[s, i]:.4f} ± {ds.G_err.values[s, i]:.1g}"
                                             for s in range(len(labels))) + " |")
    return lines


def _train_summary(rec: dict) -> list[str]:
    from skild_phys.checkpoint import read_log  # imports torch: only where a training stage is reported

    run = Path(rec["out"])
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        return [f"- `{rec['stage']}`: no config.json in {run}"]
    cfg = json.loads(cfg_file.read_text())
    log = read_log(run)
    losses = [r for r in log if "loss" in r]  # validation lines carry val_loss only
    last = losses[-1] if losses else {}
    vals = [r for r in log if "val_loss" in r]
    t = cfg["train"]
    s = cfg["schedule"]
    return [f"- `{rec['stage']}` ({cfg['model']}): {cfg['net']['name']} U-Net, "
            f"{'periodic' if cfg['net']['periodic'] else 'zero'} padding; {t['steps']} steps × batch {t['batch']}, "
            f"lr {t['lr']:g} ({t.get('lr_decay', 'none')} decay), EMA {t['ema_decay']}; schedule {s['kind']} "
            f"(λ_i {s['lam_i']:.4g}, λ_f {s['lam_f']:.4g}, θ {s['theta']}, k_c {s['k_c']:.4g}, τ {s['tau']:g}); "
            f"basis {cfg['basis']}, S0 {cfg['spectrum'].get('mode')}; {cfg.get('parameterization', 'eps')}-prediction; "
            f"final loss {last.get('loss', float('nan')):.4f}"
            + (f", validation loss {vals[-1]['val_loss']:.4f}" if vals else "")
            + f", {last.get('samples_per_s', float('nan')):.0f} samples/s"]


def make_report(run_dir, title: str | None = None) -> Path:
    """Write RUN_DIR/report.md from the workflow records and the correlator outputs; returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORD_DIR).is_dir():
        raise InputError(f"{run_dir} holds no workflow records ({RECORD_DIR}/); run a workflow into it first")
    recs = _records(run_dir)
    lines = [f"# {title or run_dir.name}: truth vs models", ""]
    for rec in [r for r in recs if r["run"] == "correlators" and r.get("finished")]:
        ds = xr.load_dataset(rec["out"]) if str(rec["out"]).endswith(".nc") else xr.open_zarr(rec["out"]).load()
        plot = rec["args"].get("plot")
        lines += [f"## κ4(ℓ) — `{rec['stage']}`", ""]
        if plot and Path(plot).exists():
            lines += [f"![kappa4]({_rel(plot, run_dir)})", ""]
        n = ", ".join(f"{s}: {int(v)}" for s, v in zip(ds.source.values, ds.n_samples.values))
        lines += [f"L = {ds.attrs['L']}; configurations analysed — {n}. Errors: {ds.attrs['error_method']}.",
                  "Deviations are (model − truth)/√(σ²_model + σ²_truth), as for independent ensembles. "
                  "Where a model store records the truth configuration each sample was made from (super-resolution), "
                  "'paired' is model − truth on those same configurations over its joint-jackknife error: the "
                  "sharper test, since the shared coarse structure cancels.", ""]
        lines += _kappa4_table(ds) + [""]
        lo, hi = ds.attrs["kappa4_window"]
        lines += [f"Power-law fits of |κ4| over {lo:g} ≤ ℓ ≤ {hi:g} (expect −1/2 = −4Δσ in the scaling regime):", ""]
        lines += _per_source_table(ds, ["kappa4_slope", "kappa4_exponent"], "+.3f") + [""]
        lines += ["### Moments", ""] + _per_source_table(ds, MOMENT_NAMES) + [""]
        lines += ["### Two-point function G(r) along the axes", ""] + _G_table(ds) + [""]
        if "spectrum_alpha" in ds:
            lines += ["### Spectrum fit (2α, expect 1.75)", ""]
            two = ds.assign({"2α": 2 * ds.spectrum_alpha, "2α_err": 2 * ds.spectrum_alpha_err})
            lo, hi = ds.attrs["k_window"]
            lines += [f"C (k² + k0²)^−α over {lo / np.pi:g} ≤ |k|/π ≤ {hi / np.pi:g}, "
                      f"{ds.attrs['spectrum_basis']} basis.", ""]
            lines += _per_source_table(two, ["2α"], ".3f") + [""]
    for rec in [r for r in recs if r["run"] == "evaluate" and r.get("finished")]:
        table = Path(rec["out"]) / "fidelity.md"
        if table.is_file():
            lines += [f"## Fidelity — `{rec['stage']}` (skild-phys evaluate)", "",
                      f"![fidelity]({_rel(Path(rec['out']) / 'fidelity.png', run_dir)})", "",
                      table.read_text().strip(), ""]
    trains = [r for r in recs if r["run"] == "train"]
    if trains:
        lines += ["## Models", ""] + sum((_train_summary(r) for r in trains), []) + [""]
    lines += ["## Stages, wall times and commands", "", "| stage | wall time | command |", "|---|---|---|"]
    for rec in recs:
        if rec["run"] == "report":
            wall = "this page"
        else:
            wall = f"{rec['wall_s']:.0f} s" if rec.get("wall_s") is not None else "unfinished"
        if rec.get("resumed"):
            wall += " (resumed run only)"
        lines.append(f"| {rec['stage']} | {wall} | `{rec['command']}` |")
    out = run_dir / REPORT_FILE
    out.write_text("\n".join(lines) + "\n")
    return out
