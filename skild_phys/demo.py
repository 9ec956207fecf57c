"""The main job: the shipped checkpoint against fresh critical configurations it never saw.

    python -m skild_phys.demo [--var NAME=VALUE ...]

Runs `skild-phys run workflows/demo.toml`: simulates new critical L = 32 configurations with a
seed no training, validation or test store used, super-resolves them 4x (8 → 32) from the
forward marginal of each configuration at n0 and generates new ones from noise with
models/ising32_4x, then prints truth versus SKILD (and the Gaussian floor) for κ4(ℓ), ⟨e⟩ and
U4 and writes the figure.  Finished stages are skipped on a rerun, an interrupted one resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import xarray as xr

from skild_base.errors import InputError
from skild_phys.cli.workflow import parse_vars

DEMO = Path(__file__).resolve().parents[1] / "workflows" / "demo.toml"


def main(argv: list[str] | None = None) -> int:
    from skild_phys import workflow
    from skild_phys.reports.evaluate import DATASET_FILE, FIGURE_FILE, TABLE_FILE, format_headline

    argv = list(sys.argv[1:] if argv is None else argv)
    pairs = [v for flag, v in zip(argv[::2], argv[1::2]) if flag == "--var"]
    if len(pairs) * 2 != len(argv):
        print("usage: python -m skild_phys.demo [--var NAME=VALUE ...]", file=sys.stderr)
        return 2
    try:
        wf = workflow.load(DEMO, parse_vars(pairs))
        workflow.execute(wf)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    evaluation = wf.out / "evaluation"
    with xr.open_dataset(evaluation / DATASET_FILE) as ds:
        print("\n" + format_headline(ds.load()))
    print(f"\nfull table: {evaluation / TABLE_FILE}\nfigure: {evaluation / FIGURE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
