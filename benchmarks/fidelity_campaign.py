"""A controlled fidelity campaign: train and evaluate one SKILD model per row, print one table.

    python benchmarks/fidelity_campaign.py [CAMPAIGN.toml] [--rows a,b] [--jobs N --threads T]
                                           [--dry-run] [--table-only] [--out TABLE.md]

Every row trains from the campaign's reference settings with the changes the row names (and
those of the row it builds on, `base`), on the same training store and for the steps the
row states, and is evaluated with the same settings on the same held-out configurations
(`skild-phys evaluate`).  Nothing is rerun that finished: a killed training resumes
(`train --resume`), a killed evaluation continues its stores.  With --jobs N rows run N at a
time, each on --threads T cores (compute is counted in optimisation steps × batch, which
thread counts do not change; the train minutes in the table are wall time as run).

The table gives, per row, the exact `skild-phys train` command and, for super-resolution
(paired on the same truth configurations) and generation, the fidelity numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xarray as xr

from skild_phys.workflow import option_argv

DEFAULT = Path(__file__).with_name("fidelity_campaign.toml")
RUN_FILE = "campaign_run.json"


def argv(command: str, args: dict) -> list[str]:
    """skild-phys COMMAND with --key value options (lists repeat the option, True is a flag)."""
    return ["skild-phys", command] + option_argv(args)


def load(path) -> dict:
    """The campaign: output directory, data stores, reference train args, evaluation args, rows."""
    spec = tomllib.loads(Path(path).read_text())
    out = Path(spec["campaign"]["out"])
    data = {name: {**args, "out": str(out / "data" / f"{name}.zarr")} for name, args in spec["data"].items()}
    rows = {}
    for row in spec["rows"]:
        base = rows[row["base"]]["changes"] if "base" in row else {}
        changes = {**base, **row.get("train", {})}
        train = {"data": data["train"]["out"], "val_data": data["val"]["out"], **spec["reference"], **changes,
                 "out": str(out / "rows" / row["name"]), "quiet": True}
        evaluate = {"checkpoint": train["out"], "truth": data["test"]["out"], **spec["evaluate"],
                    **row.get("evaluate", {}), "out": str(out / "rows" / row["name"] / "eval"), "quiet": True}
        rows[row["name"]] = {"name": row["name"], "change": row["change"], "base": row.get("base"),
                             "changes": changes, "train": train, "evaluate": evaluate}
    return {"out": out, "data": data, "rows": rows}


def _run(cmd: list[str], threads: int | None) -> None:
    if threads is not None:
        cmd = cmd + ["--threads", str(threads)]
    print("$ " + shlex.join(cmd), flush=True)
    result = subprocess.run([sys.executable, "-m", "skild_phys"] + cmd[1:])
    if result.returncode != 0:
        raise SystemExit(f"failed (exit {result.returncode}): {shlex.join(cmd)}")


def run_row(row: dict, threads: int | None) -> None:
    """Train (or resume) and evaluate one row; records wall times in the run directory."""
    run = Path(row["train"]["out"])
    record_file = run / RUN_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    from skild_phys.checkpoint import read_log

    done = any(r.get("step") == row["train"]["steps"] and "loss" in r for r in read_log(run))
    if not done:
        resume = (run / "resume.pt").is_file()
        t0 = time.perf_counter()
        _run(argv("train", row["train"]) + (["--resume"] if resume else []), threads)
        record["train_wall_s"] = record.get("train_wall_s", 0.0) * resume + time.perf_counter() - t0
        record["train_threads"] = threads
        record["train_resumed"] = record.get("train_resumed", False) or resume
        record["train_command"] = shlex.join(argv("train", row["train"]))
    record.setdefault("train_command", shlex.join(argv("train", row["train"])))  # as trained, not as now
    (run / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    t0 = time.perf_counter()
    _run(argv("evaluate", row["evaluate"]), threads)
    record["evaluate_command"] = shlex.join(argv("evaluate", row["evaluate"]))
    record["evaluate_wall_s"] = time.perf_counter() - t0
    (run / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def kappa4_cell(excess: dict, sizes=(1, 2, 4, 8, 12)) -> str:
    """Paired κ4 excess in % at the given ℓ, with the largest error over ℓ: '+0.5 / +0.5 / ... (±2.1)'."""
    return (" / ".join(f"{100 * excess[l][0]:+.1f}" for l in sizes if l in excess)
            + f" (±{100 * max(e for _, e in excess.values()):.1f})")


def _pm(value, err, scale=1.0, fmt="+.1f") -> str:
    return f"{scale * value:{fmt}}({scale * err:.1f})" if fmt.endswith("1f") else f"{scale * value:{fmt}} ± {scale * err:.1g}"


def specific_heat_cells(s: dict) -> list[str]:
    """The specific heat C: super-resolution's paired change as a fraction of the truth's C on the same
    configurations ((C_model − C_truth) / C_truth), generation's value with its deviation from the whole
    truth in σ."""
    sr, gen = s.get("marginal"), s.get("generate")
    cells = []
    if sr and "d_specific_heat" in sr:
        (model, _, _), (diff, err) = sr["specific_heat"], sr["d_specific_heat"]
        truth = model - diff  # the truth's C on the same configurations
        cells.append(_pm(diff / truth, err / truth, fmt="+.3f"))
    else:
        cells.append("—")
    cells.append(f"{gen['specific_heat'][0]:.2f} ({gen['specific_heat'][2]:+.1f}σ)"
                 if gen and "specific_heat" in gen else "—")
    return cells


def table(campaign: dict, names: list[str]) -> str:
    """Markdown table of the finished rows (the others are listed as not run)."""
    from skild_phys.checkpoint import read_log
    from skild_phys.reports.evaluate import DATASET_FILE, summary

    lines = ["| row | change | samples seen | train min | SR κ4 excess % ℓ = 1 / 2 / 4 / 8 / 12 (paired) | "
             "SR Δ⟨e⟩ | SR ΔU4 | lowres κ4 excess % (range) | lowres Δ⟨e⟩ | gen U4 (σ) | gen ⟨\\|m\\|⟩ (σ) | "
             "gen ⟨e⟩ (σ) | SR ΔC / C (paired) | gen C (σ) | val loss |", "|---" * 15 + "|"]
    commands = []
    for name in names:
        row = campaign["rows"][name]
        run = Path(row["train"]["out"])
        nc = Path(row["evaluate"]["out"]) / DATASET_FILE
        rec = json.loads((run / RUN_FILE).read_text()) if (run / RUN_FILE).is_file() else {}
        commands.append(f"- `{name}`: `{rec.get('train_command', shlex.join(argv('train', row['train'])))}`")
        if not nc.is_file():
            lines.append(f"| {name} | {row['change']} | not run |" + " |" * 12)
            continue
        s = summary(xr.load_dataset(nc))
        seen = row["train"]["steps"] * row["train"]["batch"]
        log = read_log(run)
        minutes = rec.get("train_wall_s", log[-1]["time"] - log[0]["time"]) / 60
        val = [r for r in log if "val_loss" in r]
        cells = [name, row["change"], f"{seen / 1000:g}k", f"{minutes:.0f}"]
        sr = s.get("marginal")
        if sr and "kappa4_excess" in sr:
            cells.append(kappa4_cell(sr["kappa4_excess"]))
            cells += [_pm(*sr["d_e"], fmt="+.4f"), _pm(*sr["d_binder"], fmt="+.4f")]
        else:
            cells += ["—"] * 3
        lr = s.get("lowres")
        if lr and "kappa4_excess" in lr:
            values = [100 * v for v, _ in lr["kappa4_excess"].values()]
            cells += [f"{min(values):+.1f} … {max(values):+.1f}", _pm(*lr["d_e"], fmt="+.4f")]
        else:
            cells += ["—"] * 2
        gen = s.get("generate")
        if gen:
            cells += [f"{gen[m][0]:.3f} ({gen[m][2]:+.1f}σ)" for m in ("binder", "abs_m", "e")]
        else:
            cells += ["—"] * 3
        cells += specific_heat_cells(s)
        cells.append(f"{val[-1]['val_loss']:.4f}" if val else "—")
        lines.append("| " + " | ".join(cells) + " |")
    data = [f"- `{k}`: `{shlex.join(argv('simulate', {**v, 'quiet': True}))}`" for k, v in campaign["data"].items()]
    return "\n".join(lines + ["", "Data:", ""] + data + ["", "Training commands:", ""] + commands) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("campaign", nargs="?", default=str(DEFAULT))
    ap.add_argument("--rows", default=None, help="Comma-separated row names [default: all].")
    ap.add_argument("--jobs", type=int, default=1, help="Rows run at once.")
    ap.add_argument("--threads", type=int, default=None, help="Torch threads per job [default: torch's choice].")
    ap.add_argument("--dry-run", action="store_true", help="Print the commands and stop.")
    ap.add_argument("--table-only", action="store_true", help="Print the table of what has finished.")
    ap.add_argument("--out", default=None, help="Also write the table to this file.")
    args = ap.parse_args()
    campaign = load(args.campaign)
    names = list(campaign["rows"]) if args.rows is None else args.rows.split(",")
    unknown = [n for n in names if n not in campaign["rows"]]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}")
    if args.dry_run:
        for name in names:
            row = campaign["rows"][name]
            print(f"# {name}: {row['change']}\n{shlex.join(argv('train', row['train']))}\n"
                  f"{shlex.join(argv('evaluate', row['evaluate']))}")
        return
    if not args.table_only:
        for name, data in campaign["data"].items():
            if not (Path(data["out"]) / "zarr.json").is_file():
                _run(argv("simulate", {**data, "quiet": True}), None)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {n: pool.submit(run_row, campaign["rows"][n], args.threads) for n in names}
        failed = [n for n, f in futures.items() if f.exception() is not None]
        for n in failed:
            print(f"row {n} failed: {futures[n].exception()}", file=sys.stderr)
    text = table(campaign, names)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
