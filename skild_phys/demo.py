"""The main job on the embedded default: the quickstart workflow, then its κ4 table.

    python -m skild_phys.demo [--var NAME=VALUE ...]

Runs `skild-phys run workflows/quickstart.toml` (simulate → train SKILD and SR3 → super-resolve
→ correlators → report; finished stages are skipped on a rerun, an interrupted one resumes) and
prints the truth-vs-model table of the run's correlator dataset.
"""

from __future__ import annotations

import sys
from pathlib import Path

import xarray as xr

from analysis.observables import format_table
from skild_phys.cli.workflow import parse_vars
from skild_phys.errors import InputError

QUICKSTART = Path(__file__).resolve().parents[1] / "workflows" / "quickstart.toml"


def main(argv: list[str] | None = None) -> int:
    from skild_phys import workflow
    from skild_phys.report import REPORT_FILE

    argv = list(sys.argv[1:] if argv is None else argv)
    pairs = [v for flag, v in zip(argv[::2], argv[1::2]) if flag == "--var"]
    if len(pairs) * 2 != len(argv):
        print("usage: python -m skild_phys.demo [--var NAME=VALUE ...]", file=sys.stderr)
        return 2
    try:
        wf = workflow.load(QUICKSTART, parse_vars(pairs))
        workflow.execute(wf)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with xr.open_dataset(wf.out / "kappa4.nc") as ds:
        print("\n" + format_table(ds.load()))
    print(f"\nfigure: {wf.out / 'kappa4.png'}\nreport: {wf.out / REPORT_FILE}")
    print("(smoke scale: every stage runs, but a 400-step tiny model is not expected to match the truth; "
          "see docs/results/ising_sr_cpu.md for the CPU-scale comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
