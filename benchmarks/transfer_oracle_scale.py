"""Diagnostic: a `skild-phys` command with the checkpoint's block-spin scale E|block mean| replaced by the data's.

    python benchmarks/transfer_oracle_scale.py --scale-from runs/transfer_L128/truth.zarr --factor 4 -- \
        superres --checkpoint models/ising32_4x --lowres runs/transfer_L128_diag/truth_maj32.zarr --factor 4 \
        --samples 32 --steps 100 --seed 3 --out runs/transfer_L128_diag/stage2_scale.zarr

±1 block spins enter super-resolution as block means of the typical size E|block mean| that the
checkpoint measured on its training data (skild_phys.methods.starts). On a torus that size
depends on L (E[bm²] is a sum of G(r) over the block, and G carries the finite-size offset), so a
checkpoint carried to a larger lattice scales its block spins by its training lattice's value.
This runs the command with that value measured on --scale-from, a store at the target size (an
oracle no user has: it isolates what the scale costs). Not a user-facing option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale-from", required=True, help="spin store at the target size")
    ap.add_argument("--factor", type=int, required=True, help="block side f of the coarse input")
    ap.add_argument("--samples", type=int, default=1000, help="configurations to measure E|block mean| on")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the skild-phys arguments")
    args = ap.parse_args()
    if not Path(args.scale_from).is_dir():
        ap.exit(2, f"{args.scale_from}: no such store\n")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    import dataclasses

    import numpy as np

    from ising.lattice import block_mean
    import skild_phys.methods.starts as starts
    from skild_phys.cli import main as cli
    from skild_phys.data.adapters import LatticeStore

    data = LatticeStore(args.scale_from)
    f = args.factor
    x = data.get(np.arange(min(args.samples, len(data))))[:, 0].astype(np.float64)
    n = len(x)
    scale = float(np.abs(block_mean(x, f)).mean())
    print(f"E|block mean| for {f}x{f} blocks of {args.scale_from} ({n} configurations): {scale:.4f}", file=sys.stderr)
    original = starts.superres_start

    def with_data_scale(model, dataset, factor, lowres, lowres_start="conditional"):
        data_attrs = {**model.config.data, "block_mean_abs": {**model.config.data.get("block_mean_abs", {}), str(f): scale}}
        model = dataclasses.replace(model, config=dataclasses.replace(model.config, data=data_attrs))
        return original(model, dataset, factor, lowres, lowres_start)

    starts.superres_start = with_data_scale
    sys.exit(cli(command, standalone_mode=True))


if __name__ == "__main__":
    main()
