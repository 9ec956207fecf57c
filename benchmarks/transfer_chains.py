"""Which reverse chain, and which network window, at L = 128 with the L = 32 checkpoint: paired tables.

    python benchmarks/transfer_chains.py                       # run the missing rows, print both tables
    python benchmarks/transfer_chains.py --table-only          # tables of the rows already run
    python benchmarks/transfer_chains.py --rows ancestral-20,ancestral-100 --threads 1

Every row is one `skild-phys evaluate` of the shipped checkpoint on the workflow's L = 128 Wolff truth
(`workflows/transfer_L128.toml`: seed 4128), direct 4x from the forward marginal at n0 (the paper
protocol), chain seed 1, so every row super-resolves the same configurations from the same start
and noise stream. Two tables:

1. against the truth: paired κ4 excess κ4(model)/κ4(truth) − 1 per ℓ, Δ⟨e⟩, Δ⟨|m|⟩, ΔU4;
2. against the reference row (`--against`, the longest chain): row − reference on the configurations
   both ran, jackknifed over the truth's Monte Carlo blocks. Sharing the start and the first
   configurations, this difference is what decides "the same answer".
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

OUT = Path("runs/transfer_check")
TRUTH = OUT / "truth.zarr"
TRUTH_COMMAND = ("skild-phys simulate --L 128 --samples 2000 --seed 4128 --sweeps-between 5 "
                 f"--out {TRUTH} --quiet")
SIZES = (1, 2, 4, 8, 16, 32, 48)

# name: (samples, extra evaluate arguments)
ROWS = {
    "heun-13": (64, ["--steps", "13", "--sampler", "heun", "--spacing", "log-lambda"]),
    "ancestral-250": (32, ["--steps", "250"]),
    "ancestral-100": (64, ["--steps", "100"]),
    "ancestral-50": (64, ["--steps", "50"]),
    "ancestral-20": (128, ["--steps", "20"]),
    "ancestral-20-loglam": (64, ["--steps", "20", "--spacing", "log-lambda"]),
    "ancestral-20-rho": (64, ["--steps", "20", "--spacing", "rho"]),
    "ancestral-20-window": (128, ["--steps", "20", "--window", "train"]),
}
# the evaluation directories of the rows (the first two predate this script's names)
DIRS = {"heun-13": "direct", "ancestral-250": "direct_ancestral250", "ancestral-100": "direct_ancestral",
        "ancestral-50": "direct_ancestral50", "ancestral-20": "direct_ancestral20",
        "ancestral-20-loglam": "direct_ancestral20_loglam", "ancestral-20-rho": "direct_ancestral20_rho",
        "ancestral-20-window": "direct_ancestral20_window"}


def command(args, name: str) -> list[str]:
    samples, extra = ROWS[name]
    return ["skild-phys", "evaluate", "--checkpoint", args.checkpoint, "--truth", str(TRUTH),
            "--samples", str(samples), "--gen-samples", "0", "--batch", "16", "--protocol", "marginal",
            "--baseline", "none", "--factor", "4", "--seed", "1", "--threads", str(args.threads),
            *extra, "--out", str(OUT / DIRS[name])]


def truth_table(names) -> str:
    from skild_phys.reports.evaluate import DATASET_FILE, summary

    lines = [f"| row | n | NFE | paired κ4 excess %, ℓ = {' / '.join(map(str, SIZES))} | worst \\|excess\\|/σ | "
             "Δ⟨e⟩ | Δ⟨\\|m\\|⟩ | ΔU4 |", "|---" * 8 + "|"]
    for name in names:
        nc = OUT / DIRS[name] / DATASET_FILE
        if not nc.is_file():
            lines.append(f"| {name} | not run |" + " |" * 6)
            continue
        s = summary(xr.load_dataset(nc))["marginal"]
        ex = s["kappa4_excess"]
        worst = max((abs(v) / e, l) for l, (v, e) in ex.items())
        lines.append(f"| {name} | {s['n']} | {s['nfe']} | " + " / ".join(f"{100 * ex[l][0]:+.1f}" for l in SIZES)
                     + f" (±{100 * max(ex[l][1] for l in SIZES):.1f}) | {worst[0]:.1f} (ℓ = {worst[1]}) | "
                     + " | ".join(f"{s[k][0]:+.4f} ± {s[k][1]:.4f}" for k in ("d_e", "d_abs_m", "d_binder")) + " |")
    return "\n".join(lines)


def against_table(names, reference: str) -> str:
    """row − reference on the configurations both super-resolved (the first min(n) of the truth)."""
    from analysis.moments import MOMENT_NAMES
    from ising.measure import open_source, paired_with_reference
    from skild_phys.reports.evaluate import DATASET_FILE

    def store(name):
        return OUT / DIRS[name] / "model_marginal.zarr"

    if not (OUT / DIRS[reference] / DATASET_FILE).is_file():
        raise SystemExit(f"reference row {reference} has not been run")
    truth, ref = open_source(TRUTH), open_source(store(reference))
    # differences relative to the reference's κ4 (its evaluation, all its configurations)
    ref_k4 = xr.load_dataset(OUT / DIRS[reference] / DATASET_FILE).kappa4.sel(
        source="model/marginal", patch_size=list(SIZES)).values
    mi = {m: i for i, m in enumerate(MOMENT_NAMES)}
    lines = [f"| row − {reference} | n | κ4 difference %, ℓ = {' / '.join(map(str, SIZES))} | worst \\|diff\\|/σ | "
             "Δ⟨e⟩ | Δ⟨\\|m\\|⟩ | ΔU4 |", "|---" * 7 + "|"]
    for name in names:
        if name == reference or not (OUT / DIRS[name] / DATASET_FILE).is_file():
            continue  # not run, or not finished
        src = open_source(store(name))
        est = paired_with_reference(truth, ref, src, SIZES)
        n = min(src.n, ref.n)
        d, de = est["kappa4_paired"]
        rel, rel_e = d / ref_k4, np.abs(de / ref_k4)
        dm, dme = est["moments_paired"]
        worst = int(np.argmax(np.abs(rel) / rel_e))
        lines.append(f"| {name} | {n} | " + " / ".join(f"{100 * v:+.1f}" for v in rel)
                     + f" (±{100 * rel_e.max():.1f}) | {abs(rel[worst]) / rel_e[worst]:.1f} (ℓ = {SIZES[worst]}) | "
                     + " | ".join(f"{dm[mi[k]]:+.4f} ± {dme[mi[k]]:.4f}" for k in ("e", "abs_m", "binder")) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="models/ising32_4x")
    ap.add_argument("--rows", default=",".join(ROWS), help="Comma-separated rows to run and show.")
    ap.add_argument("--against", default="ancestral-100", help="Reference row of the second table.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true", help="Do not run missing rows.")
    args = ap.parse_args()
    names = [r for r in args.rows.split(",") if r]
    unknown = set(names) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    if not args.table_only:
        if not (TRUTH / "zarr.json").is_file():
            subprocess.run([sys.executable, "-m", "skild_phys"] + shlex.split(TRUTH_COMMAND)[1:], check=True)
        for name in names:  # an evaluation already complete returns at once
            subprocess.run([sys.executable, "-m", "skild_phys"] + command(args, name)[1:], check=True)
    print("Against the truth (paired, same configurations):\n")
    print(truth_table(names))
    print(f"\nPaired with {args.against} (same configurations, same start and noise):\n")
    print(against_table(names, args.against))
    print("\nCommands:\n")
    print(f"- truth: `{TRUTH_COMMAND}`")
    for name in names:
        print(f"- `{name}`: `{shlex.join(command(args, name))}`")


if __name__ == "__main__":
    sys.exit(main())
