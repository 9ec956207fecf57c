"""Generation and super-resolution of lattices: the sampling driver into configuration stores.

Both run one chain of `samplers.sample_chain` (ancestral by default); they differ only in the start step and the start state
(SPEC §4): generation starts at n = N from the prior, super-resolution at n0 (where the
effective resolution equals the input's) from the forward marginal of a high-resolution
configuration (paper protocol) or of a real low-resolution input embedded in the low modes.
Every sample has its own seed, so a sample does not depend on the batch it was drawn in;
runs resume sample-exactly after interruption.
"""

from __future__ import annotations

import json

import numpy as np

from ising import store
from ising.model import ISING
from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import __version__
from skild_phys.data.adapters import LatticeStore
from skild_phys.methods import at_data_size, superres_start_for, upscaled_size
from skild_phys.methods.skild import TrainedModel
from skild_phys.methods.starts import StartSpec, generation_start
from skild_phys.sampling.driver import chain_steps_for, drive
from skild_phys.sampling.samplers import check_choice, choice_params, network_evaluations


def run_sampler(out, model: TrainedModel, start: StartSpec, n_samples: int, attrs: dict, steps: int | None,
                seed: int = 0, batch: int = 16, keep_field: bool = False, variance: str = "posterior",
                overwrite: bool = False, progress: bool = True, log=print, sampler: str = "ancestral",
                eta: float = 0.0, spacing: str = "uniform") -> dict:
    """Run the reverse chain for samples 0..n_samples-1 into the store `out` (resumable)."""
    if n_samples < 1 or batch < 1:
        raise InputError("--samples and --batch must be at least 1")
    check_choice(sampler, eta, spacing)
    chain_steps = chain_steps_for(start, steps, spacing, model.process)
    params = {"checkpoint": model.digest, "n_samples": n_samples, "seed": seed, "start_step": chain_steps[0],
              "reverse_steps": len(chain_steps) - 1, "variance": variance, "keep_field": keep_field,
              **{k: attrs[k] for k in ("source", "factor", "mode", "input") if k in attrs},
              **choice_params(sampler, eta, spacing)}
    params = json.loads(json.dumps(params))
    inputs = (attrs.get("source"), attrs.get("checkpoint"))
    existing = store.read_attrs(out)
    status = outputs.begin(out, outputs.SAMPLES, params, existing, overwrite, inputs, prepare=_prepare_store)
    if status == "complete":
        log(f"{out} is already complete; nothing to do")
        return existing
    state = store.load_resume(out) if status == "resume" else None
    done = int(state["samples_done"]) if state is not None else 0
    if done == 0:
        if status == "resume":  # interrupted before its first batch: start it again
            _prepare_store(out, outputs.SAMPLES, True, inputs)
        H, W, C = model.config.H, model.config.W, model.config.channels
        if C != 1:
            raise InputError("lattice stores hold one channel; use the image commands for RGB models")
        data_attrs = model.config.data.get("data_attrs", {})
        full = {"model": attrs.get("mode", "skild"), "L": H, "beta": data_attrs.get("beta"), "J": 1.0,
                "boundary": "periodic" if model.config.net["periodic"] else "open",
                "checkpoint_digest": model.digest, "start_step": chain_steps[0], "reverse_steps": len(chain_steps) - 1,
                "variance": variance, "seed": seed, "params": params, "skild_phys_version": __version__,
                "sampler": sampler, "network_evaluations": network_evaluations(sampler, len(chain_steps) - 1),
                "complete": False, **attrs}
        store.create_sample_store(out, n_samples, H, W, full, field=keep_field)
    else:
        log(f"resuming {out} at sample {done} of {n_samples}")
    sink = StoreSink(out, start, done, keep_field)
    drive(model, start, np.arange(done, n_samples), chain_steps, sink, seed, batch, variance, sampler, eta,
          total=n_samples, progress=progress, log=log)
    store.remove_resume(out)
    store.finalize(out, {"complete": True})
    return store.read_attrs(out)


def _prepare_store(out, kind: str, overwrite: bool, inputs) -> None:
    store.prepare_path(out, overwrite=overwrite, kind=kind, inputs=inputs)


class StoreSink:
    """Final samples into a configuration store: the model's states (sign projection), their energy and
    magnetisation, seeds and source indices (and the raw field with keep_field); resumable per batch."""

    def __init__(self, out, start: StartSpec, done: int, keep_field: bool):
        self.out, self.start, self.done, self.keep_field = out, start, done, keep_field
        self.root = store.open_group(out, mode="r+")

    def write(self, idx, seeds, x) -> None:
        x = x[:, 0].cpu().numpy()
        spins = ISING.project(x)
        arrays = {"spins": spins, **ISING.observables(spins),
                  "seed": np.array(seeds, dtype=np.int64), "source_index": self.start.source_index(idx)}
        if self.keep_field:
            arrays["field"] = x.astype(np.float32)
        store.write_samples(self.root, self.done, arrays)
        self.done += len(idx)
        store.save_resume(self.out, samples_done=self.done)


def generate_lattices(out, model: TrainedModel, n_samples: int, steps: int | None, checkpoint: str, **options) -> dict:
    """`generate` for a lattice checkpoint: n_samples configurations from noise into the store `out`."""
    start = generation_start(model)
    if steps is not None and steps > start.n_start:
        raise InputError(f"--steps {steps} exceeds the checkpoint's {start.n_start} diffusion steps")
    attrs = {"mode": "generate", "source": None, "checkpoint": checkpoint}
    return run_sampler(out, model, start, n_samples, attrs, steps, **options)


def superres_lattices(out, model: TrainedModel, source: str, lowres: bool, factor: float, n_samples: int | None,
                      steps: int | None, checkpoint: str, lowres_start: str = "conditional",
                      cascade: dict | None = None, **options) -> tuple[int, int]:
    """`superres` for a lattice checkpoint: the first n_samples configurations of `source` (a truth store, or
    with lowres a coarse one) super-resolved by `factor` into the store `out`; returns (samples, start step).
    A larger lattice than the checkpoint's runs in lattice units (`methods.at_data_size`)."""
    dataset = LatticeStore(source)
    n = len(dataset) if n_samples is None else n_samples
    if not 1 <= n <= len(dataset):
        raise InputError(f"--samples must be between 1 and {len(dataset)}")
    model = at_data_size(model, dataset, factor, lowres=lowres)
    start = superres_start_for(model, dataset, factor, lowres=lowres, lowres_start=lowres_start)
    attrs = {"mode": "superres", "source": str(source), "factor": factor, "checkpoint": checkpoint,
             "input": f"lowres-{lowres_start}" if lowres else "forward-marginal",
             **({"block_reference": model.config.data["block_reference"]}
                if lowres and lowres_start == "sampled" and dataset.kind == "spins" else {}),
             **({"trained_L": model.config.transfer["trained_H"]} if model.config.transfer else {}),
             **({"window": model.window} if model.config.transfer and model.window != "global" else {}),
             **({"cascade": cascade} if cascade else {})}
    run_sampler(out, model, start, n, attrs, steps, **options)
    return n, start.n_start


def cascade_paths(out, sizes: list[int]) -> list[str]:
    """Where a cascade writes: one store per stage, the last at `out`, the others beside it named by their
    side (`x128.zarr` from 8 -> 32 -> 128 keeps `x128.L32.zarr`)."""
    text = str(out).rstrip("/")
    stem = text[:-5] if text.endswith(".zarr") else text
    return [f"{stem}.L{size}.zarr" for size in sizes[:-1]] + [str(out)]


def cascade_lattices(out, model: TrainedModel, source: str, factors, n_samples: int | None, steps: int | None,
                     checkpoint: str, seed: int = 0, lowres_start: str = "conditional",
                     **options) -> list[tuple[str, int, int]]:
    """`superres --cascade`: the coarse store `source` climbs the factors one at a time, each stage's output
    the next stage's coarse input (`--lowres`), every stage with the same checkpoint (in lattice units where
    the lattice outgrows it). Stage j (from 0) samples with seed + j; the first takes the first n_samples
    inputs. Each stage is its own resumable store (`cascade_paths`); returns (path, side, start step) per stage."""
    import contextlib

    from skild_phys.methods.skild import at_size

    log = options.get("log", print)
    if len(factors) < 2:
        raise InputError("--cascade climbs several factors: repeat --factor (e.g. --factor 4 --factor 4)")
    side = LatticeStore(source).height
    sizes = []
    for f in factors:
        side = upscaled_size(side, side, f)[0]
        sizes.append(side)
    for size in sizes:  # every stage's lattice is one the checkpoint can serve, before the first chain runs
        at_size(model, size, size)
    paths = cascade_paths(out, sizes)
    if len(set(paths)) != len(paths) or str(source) in paths:
        raise InputError(f"--out {out} would overwrite the cascade's input or one of its stages; choose another name")
    stages = []
    with contextlib.ExitStack() as stack:
        for path in paths[:-1]:  # the final store is held by the command itself
            stack.enter_context(outputs.lock(path, "--out (cascade stage)"))
        stage_input = source
        for j, (f, path) in enumerate(zip(factors, paths)):
            log(f"cascade stage {j + 1} of {len(factors)}: x{f:g} to {sizes[j]}x{sizes[j]} -> {path}")
            stage = {"factors": list(factors), "stage": j + 1, "source": str(source)}
            _, n_start = superres_lattices(path, model, stage_input, True, f, n_samples if j == 0 else None, steps,
                                           checkpoint=checkpoint, lowres_start=lowres_start, seed=seed + j,
                                           cascade=stage, **options)
            stages.append((path, sizes[j], n_start))
            stage_input = path
    return stages
