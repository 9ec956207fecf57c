"""Diagnostic: a `skild-phys` command with the carried S0 replaced by the data's own per-mode variance.

    python benchmarks/transfer_oracle_s0.py --spectrum-from runs/transfer_L128/truth.zarr -- \
        superres --checkpoint models/ising32_4x --lowres runs/transfer_L128_diag/truth_maj32.zarr --factor 4 \
        --samples 32 --steps 100 --seed 3 --out runs/transfer_L128_diag/stage2_oracle.zarr

A checkpoint carried to a larger lattice uses the S0 that `skild_phys.process.transfer` extrapolates
from the training lattice (docs/theory.md, "Lattice units"), which `benchmarks/transfer_spectrum.py`
finds too weak at L = 128. This runs the command with the carried schedule unchanged and S0 set to
the per-mode variance of --spectrum-from in the process's basis, measured as `train` measures a
checkpoint's empirical S0 (an oracle no user has: it isolates what the carried spectrum costs);
with --band LO,HI only the modes with LO ≤ q < HI (wavenumber per lattice spacing) are replaced,
the rest keep the carried S0. Not a user-facing option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spectrum-from", required=True, help="spin store at the target size")
    ap.add_argument("--samples", type=int, default=1000, help="configurations to measure the spectrum on")
    ap.add_argument("--band", default="0,inf", help="LO,HI: replace only the modes with LO <= q < HI")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the skild-phys arguments")
    args = ap.parse_args()
    if not Path(args.spectrum_from).is_dir():
        ap.exit(2, f"{args.spectrum_from}: no such store\n")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        lo, hi = (float(v) for v in args.band.split(","))
    except ValueError:
        ap.exit(2, f"--band {args.band!r}: expected two numbers LO,HI\n")

    import torch

    import skild_phys.methods.skild as skild
    from skild_phys.cli import main as cli
    from skild_phys.data.adapters import LatticeStore
    from skild_phys.process.diffusion import Process
    from skild_phys.process.transfer import transferred_process

    data = LatticeStore(args.spectrum_from)

    def with_measured_s0(process, H, W, exponent=None):
        carried = transferred_process(process, H, W, exponent)
        if (H, W) != (data.height, data.width):
            return carried
        # the per-mode variance, estimated as `train` estimates a checkpoint's empirical S0
        S0, _ = skild.estimate_spectrum(data, "empirical", carried.basis.name, max_samples=args.samples)
        S0 = torch.as_tensor(S0).reshape(carried.S0.shape).to(carried.S0.dtype)
        q = carried.basis.k.reshape(carried.S0.shape) / H  # wavenumber per lattice spacing
        band = (q >= lo) & (q < hi)
        S0 = torch.where(band, S0, carried.S0.cpu())
        return Process(carried.basis, carried.schedule, S0).to(carried.S0.device)

    skild.transferred_process = with_measured_s0
    sys.exit(cli(command, standalone_mode=True))


if __name__ == "__main__":
    main()
