"""The reverse chain's noise and step placement at 100 steps, for one checkpoint: one evaluation per row, one table.

    python benchmarks/chain_noise.py [--checkpoint RUN] [--truth TEST.zarr] [--rows a,b] [--threads T]
                                     [--table-only] [--out TABLE.md]

Every row is one `skild-phys evaluate` of the same checkpoint on the same first 500 held-out
configurations (seed 0), differing from the reference row `posterior-100` (ancestral, 100
steps uniform in n, the posterior variance of q(X_m | X_n, X_0)) in the one thing its name
says: 250 steps, log-λ or ρ step placement, the deterministic DDIM step, or the forward
step's variance β (docs/theory.md, "Few-step sampling").  Each row writes RUN/eval-ROW (the
reference: RUN/eval, the campaign's own evaluation); a finished row is not rerun, an
interrupted one resumes.  docs/results/fidelity_campaign.md, "The chain's noise", is this
table for the campaign's fc-ema0.99 checkpoint (and three rows of it for fe-cosine).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import xarray as xr
from fidelity_campaign import _pm, kappa4_cell  # this directory: benchmarks/ runs as scripts

from skild_phys.workflow import option_argv

COMMON = {"samples": 500, "baseline": "none", "batch": 50}
SR = {"gen-samples": 0, "protocol": "marginal"}
ROWS = {  # name: (output directory under the checkpoint, evaluate options beyond COMMON)
    "posterior-100": ("eval", {"gen-samples": 250, "steps": 100, "protocol": ["marginal", "generate"],
                               "variance": "posterior"}),
    "posterior-250": ("eval-k250", {**SR, "steps": 250, "variance": "posterior"}),
    "posterior-100-loglam": ("eval-anc100-log-lambda", {**SR, "steps": 100, "spacing": "log-lambda",
                                                        "variance": "posterior"}),
    "posterior-100-rho": ("eval-anc100-rho", {**SR, "steps": 100, "spacing": "rho", "variance": "posterior"}),
    "ddim-50-loglam": ("eval-ddim50-loglam", {**SR, "steps": 50, "sampler": "ddim", "spacing": "log-lambda",
                                              "variance": "posterior"}),
    "ddim-50-loglam-lowres": ("eval-ddim50-loglam-lowres", {**SR, "protocol": "lowres", "steps": 50,
                                                            "sampler": "ddim", "spacing": "log-lambda",
                                                            "variance": "posterior"}),
    "forward-100": ("eval-anc100-forward", {**SR, "steps": 100, "variance": "forward"}),
    "forward-100-lowres": ("eval-anc100-forward-lowres", {**SR, "protocol": "lowres", "steps": 100,
                                                          "variance": "forward"}),
    "forward-250-lowres": ("eval-anc250-forward-lowres", {**SR, "protocol": "lowres", "steps": 250,
                                                          "variance": "forward"}),
    "forward-100-gen": ("eval-anc100-forward-gen", {"gen-samples": 250, "protocol": "generate", "steps": 100,
                                                    "variance": "forward"}),
}


def command(row: str, checkpoint: str, truth: str) -> list[str]:
    folder, options = ROWS[row]
    args = {"checkpoint": checkpoint, "truth": truth, **COMMON, **options, "out": str(Path(checkpoint) / folder),
            "quiet": True}
    return ["skild-phys", "evaluate"] + option_argv(args)


def table(rows: list[str], checkpoint: str, truth: str) -> str:
    from skild_phys.reports.evaluate import DATASET_FILE, summary

    lines = ["| row | protocol | sampler | spacing | variance | K | NFE | paired κ4 excess % ℓ = 1 / 2 / 4 / 8 / 12 | "
             "Δ⟨e⟩ | ΔU4 | gen U4 (σ) | gen ⟨\\|m\\|⟩ (σ) | gen ⟨e⟩ (σ) |", "|---" * 13 + "|"]
    for row in rows:
        folder, options = ROWS[row]
        nc = Path(checkpoint) / folder / DATASET_FILE
        head = [row, "", options.get("sampler", "ancestral"), options.get("spacing", "uniform"),
                options["variance"], str(options["steps"])]
        if not nc.is_file():
            lines.append("| " + " | ".join(head) + " | not run |" + " |" * 6)
            continue
        s = summary(xr.load_dataset(nc))
        for protocol, entry in s.items():
            cells = list(head)
            cells[1] = protocol
            cells.append(str(entry["nfe"]))
            if "kappa4_excess" in entry:
                cells.append(kappa4_cell(entry["kappa4_excess"]))
                cells += [_pm(*entry["d_e"], fmt="+.4f"), _pm(*entry["d_binder"], fmt="+.4f"), "—", "—", "—"]
            else:
                cells += ["—", "—", "—"]
                cells += [f"{entry[m][0]:.4f} ({entry[m][2]:+.1f}σ)" for m in ("binder", "abs_m", "e")]
            lines.append("| " + " | ".join(cells) + " |")
    commands = [f"- `{row}`: `{shlex.join(command(row, checkpoint, truth))}`" for row in rows]
    return "\n".join(lines + ["", "Commands:", ""] + commands) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/campaign/rows/fc-ema0.99")
    ap.add_argument("--truth", default="runs/campaign/data/test.zarr")
    ap.add_argument("--rows", default=None, help=f"Comma-separated rows [default: all: {','.join(ROWS)}].")
    ap.add_argument("--threads", type=int, default=None, help="Torch threads of each evaluation.")
    ap.add_argument("--table-only", action="store_true", help="Print the table of what has finished.")
    ap.add_argument("--out", default=None, help="Also write the table to this file.")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows is None else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not args.table_only:
        for row in rows:
            cmd = command(row, args.checkpoint, args.truth)
            cmd += ["--threads", str(args.threads)] if args.threads is not None else []
            print("$ " + shlex.join(cmd), flush=True)
            if subprocess.run([sys.executable, "-m", "skild_phys"] + cmd[1:]).returncode != 0:
                raise SystemExit(f"failed: {shlex.join(cmd)}")
    text = table(rows, args.checkpoint, args.truth)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
