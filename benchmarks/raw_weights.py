"""A run's raw (not averaged) weights as a checkpoint directory that `--checkpoint` accepts.

    python benchmarks/raw_weights.py RUN OUT

A training run ships the EMA of its weights (RUN/model.pt); its resume artifact (RUN/resume.pt)
also holds the optimiser's current weights.  This writes OUT/model.pt with those raw weights in
place of the EMA — same configuration, same S0, same step — and OUT/config.json, so every
instrument that takes a checkpoint (evaluate, superres, benchmarks/energy_variance.py) can
measure what the averaging contributes, paired against the EMA checkpoint on the same starts.
OUT must not exist yet: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from skild_base.errors import InputError
from skild_phys import checkpoint


def raw_use_artifact(run) -> dict:
    """The use artifact of RUN with the raw weights of its resume artifact in place of the EMA."""
    resume = checkpoint.load_resume(run)
    if "model" not in resume:
        raise InputError(f"{checkpoint.resolve(run) / checkpoint.RESUME_FILE} holds no raw weights")
    use = checkpoint.load_use(run)
    if resume.get("step") != use.get("step"):
        raise InputError(f"{run}: resume.pt (step {resume.get('step')}) and model.pt (step {use.get('step')}) "
                         "are from different steps")
    return {"config": json.dumps(resume["config"]), "S0": torch.as_tensor(resume["S0"], dtype=torch.float64),
            "step": resume["step"], "ema": resume["model"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="Training run directory (with model.pt and resume.pt).")
    ap.add_argument("out", help="New checkpoint directory to write (must not exist).")
    args = ap.parse_args(argv)
    try:
        out = Path(args.out)
        if out.exists():
            raise InputError(f"{out} already exists; choose a new directory")
        art = raw_use_artifact(args.run)
        out.mkdir(parents=True)
        checkpoint.write_json(json.loads(art["config"]), out / checkpoint.CONFIG_FILE)
        checkpoint.atomic_save(art, out / checkpoint.USE_FILE)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / checkpoint.USE_FILE}: the raw weights of {args.run} at step {art['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
