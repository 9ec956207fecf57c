"""The main job on the embedded default: simulate a critical lattice and print its validated summary.

    python -m skild_phys.demo [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from ising.exact import BETA_C
from ising.simulate import SimulationParams, run_simulation
from ising.summary import format_summary, summarize


def main(out_dir: str = "demo-output") -> None:
    """Simulate L = 32 at beta_c (resumable, reused if present) and compare with Kaufman's exact energy."""
    path = Path(out_dir) / "ising32.zarr"
    params = SimulationParams(L=32, n_samples=10000, beta=BETA_C, seed=0)
    print(f"skild-phys demo: {params.n_samples} critical Ising configurations, L={params.L}, into {path}")
    run_simulation(path, params)
    print(format_summary(summarize(path)))


if __name__ == "__main__":
    main(*sys.argv[1:])
