"""Generation and super-resolution from a checkpoint: the reverse-chain core and its sink into configuration stores.

Both run one chain of `samplers.sample_chain` (ancestral by default); they differ only in the start step and the start state
(SPEC §4): generation starts at n = N from the prior, super-resolution at n0 (where the
effective resolution equals the input's) from the forward marginal of a high-resolution
configuration (paper protocol) or of a real low-resolution input embedded in the low modes.
Every sample has its own seed, so a sample does not depend on the batch it was drawn in;
runs resume sample-exactly after interruption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ising import store
from ising.model import ISING
from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import __version__
from skild_phys.methods.skild import TrainedModel
from skild_phys.process.basis import Basis, embed_low_modes
from skild_phys.process.diffusion import per_sample_generators, randn, respaced_steps
from skild_phys.process.lowres import BlockMeanConditional
from skild_phys.sampling.samplers import check_choice, choice_params, network_evaluations, placed_steps, sample_chain


def sample_seeds(seed: int, indices) -> list[int]:
    """Per-sample 63-bit seeds derived from (seed, sample index) only."""
    out = []
    for i in np.asarray(indices):
        words = np.random.SeedSequence(seed, spawn_key=(int(i),)).generate_state(2, dtype=np.uint32)
        out.append(int((int(words[0]) << 31) ^ int(words[1])) & (2**63 - 1))
    return out


@dataclass
class StartSpec:
    """Where a reverse chain starts: the step and a function giving the start state of a batch."""

    n_start: int
    state: Callable  # (indices, generators) -> X_start (B, C, H, W) float64 on the model device
    source_index: Callable = lambda idx: np.full(len(idx), -1, dtype=np.int64)
    cond: Callable | None = None  # (indices) -> conditioning input of the batch (conditional baselines)


def generation_start(model: TrainedModel) -> StartSpec:
    """Generation: n = N, X_N = √((1−ᾱ_N) S0) z."""
    sch = model.config.schedule
    if model.config.model != "skild":
        raise InputError(f"a {model.config.model} checkpoint is a conditional super-resolution model; "
                         "use `superres` with it, not `generate`")
    if sch["k_c"] <= 0:
        raise InputError("this checkpoint's schedule has k_c = 0: the DC mode is never noised, so it cannot "
                         "generate from noise; train with --k-c > 0 (the auto preset uses k_c = pi)")
    p = model.process
    shape = (model.config.channels, model.config.H, model.config.W)

    def state(idx, gens):
        return p.prior((len(idx),) + shape, gens, dtype=torch.float64, device=model.device)

    return StartSpec(p.N, state)


def start_step_for_factor(model: TrainedModel, factor: float) -> int:
    """n0 where the effective resolution reaches H / factor; one-sentence error if unreachable."""
    H = model.config.H
    if not factor > 1:
        raise InputError(f"--factor must be above 1 (it is the ratio of output to input side), got {factor:g}")
    if H / factor < 1:
        raise InputError(f"factor {factor:g} leaves a coarse grid of {H / factor:g} pixels per side; "
                         f"this {H}x{H} checkpoint super-resolves factors up to {H}")
    try:
        return model.process.schedule.start_step(model.config.H / factor)
    except ValueError as err:
        raise InputError(f"factor {factor:g} is not reachable with this checkpoint: {err}") from None


LOWRES_STARTS = ("conditional", "embed")


def superres_start(model: TrainedModel, dataset, factor: float, lowres: bool,
                   lowres_start: str = "conditional") -> StartSpec:
    """Super-resolution start at n0: forward marginal of the HR sample, or of a clean state built from the LR input.

    A real low-resolution input (block means; ±1 block spins stand for block means of the
    training data's typical size E|block mean|) becomes a clean state either by Gaussian
    conditioning on the block means under the process's S0 ("conditional", any basis, see
    skild_phys.process.lowres) or by placing its DCT coefficients in the low modes ("embed", DCT only).
    """
    H = model.config.H
    n0 = start_step_for_factor(model, factor)
    p = model.process
    if dataset.channels != model.config.channels:
        raise InputError(f"data have {dataset.channels} channels, the checkpoint expects {model.config.channels}")
    if lowres_start not in LOWRES_STARTS:
        raise InputError(f"unknown low-resolution start {lowres_start!r}; choose one of {', '.join(LOWRES_STARTS)}")
    if not lowres:
        if (dataset.height, dataset.width) != (H, model.config.W):
            raise InputError(f"data are {dataset.height}x{dataset.width} but the checkpoint was trained at "
                             f"{H}x{model.config.W}; pass the coarse input with --lowres instead")

        def to_modes(x, gens):
            return p.basis.forward(x)
    else:
        h = dataset.height
        if h * factor != H or dataset.width * factor != model.config.W:
            raise InputError(f"low-resolution data are {h}x{dataset.width}; factor {factor:g} needs "
                             f"{H / factor:g}x{model.config.W / factor:g} for this checkpoint")
        # ±1 block spins estimate the block mean up to its typical size E|block mean| (training data)
        scale = 1.0
        if dataset.kind == "spins":
            scale = model.config.data.get("block_mean_abs", {}).get(str(int(factor)))
            if scale is None:
                raise InputError(f"the checkpoint has no block-spin scale for factor {factor:g}; coarsen with --rule mean")
        if lowres_start == "embed":
            if p.basis.name != "dct":
                raise InputError("the 'embed' low-resolution start needs a DCT-basis checkpoint; use 'conditional'")
            lr_basis = Basis.named("dct", h, dataset.width)

            def to_modes(y, gens):
                return embed_low_modes(lr_basis.forward(scale * y), H, model.config.W)
        else:
            conditional = BlockMeanConditional(p.basis, p.S0.cpu(), int(round(factor)))

            def to_modes(y, gens):
                z = randn((len(y), 1, H, model.config.W), gens, dtype=torch.float64, device=model.device)
                return conditional.sample(scale * y, z)

    def clean_modes(idx, gens):
        x = torch.from_numpy(dataset.get(idx)).to(device=model.device, dtype=torch.float64)
        return to_modes(x, gens)

    return marginal_start(model, n0, clean_modes)


def marginal_start(model: TrainedModel, n0: int, clean_modes: Callable) -> StartSpec:
    """Start at n0 from the forward marginal of clean_modes(indices, generators) -> X_0 (B, C, H, W) in the model's basis."""
    p = model.process

    def state(idx, gens):
        X0 = clean_modes(idx, gens)
        eps = randn(X0.shape, gens, dtype=torch.float64, device=model.device)
        return p.marginal(X0, n0, eps)

    return StartSpec(n0, state, source_index=lambda idx: np.asarray(idx, dtype=np.int64))


def chain_steps_for(start: StartSpec, steps: int | None, spacing: str = "uniform", process=None) -> list[int]:
    """Reverse-chain steps from the start step down to 0: all of them, or K placed ones
    (uniform in n, uniform in log λ or ρ-spaced: `samplers.placed_steps`)."""
    if steps is not None and steps < 1:
        raise InputError("--steps must be at least 1")
    if spacing == "uniform":
        return respaced_steps(start.n_start, steps or start.n_start)
    return placed_steps(process, start.n_start, steps or start.n_start, spacing)


def final_samples(model: TrainedModel, start: StartSpec, indices, chain_steps: list[int], seed: int = 0,
                  batch: int = 16, variance: str = "posterior", sampler: str = "ancestral", eta: float = 0.0):
    """Yield (indices, seeds, x) batch by batch: the reverse chain's final samples x (B, C, H, W) in pixels, float64.

    Sample i uses only the seed derived from (seed, i), so x does not depend on `batch`.
    """
    indices = np.asarray(indices)
    for lo in range(0, len(indices), batch):
        idx = indices[lo:lo + batch]
        seeds = sample_seeds(seed, idx)
        gens = per_sample_generators(seeds)
        with torch.no_grad():
            cond = None if start.cond is None else start.cond(idx)
            X = sample_chain(model.process, lambda x, n: model.eps_hat(x, n, cond), start.state(idx, gens),
                             chain_steps, gens, sampler=sampler, eta=eta, variance=variance)
            x = model.process.basis.inverse(X)
        yield idx, seeds, x


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
    outputs.check_not_input(out, inputs)
    existing = store.read_attrs(out)
    done = 0
    if existing is not None and existing.get("params") == params and not overwrite:
        if existing.get("complete"):
            log(f"{out} is already complete; nothing to do")
            return existing
        state = store.load_resume(out)
        done = int(state["samples_done"]) if state is not None else 0
    if done == 0:
        same = existing is not None and existing.get("params") == params
        store.prepare_path(out, overwrite=overwrite or same, kind=outputs.SAMPLES, inputs=inputs)
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
    root = store.open_group(out, mode="r+")
    bar = tqdm(total=n_samples, initial=done, unit="sample", disable=not progress, dynamic_ncols=True)
    with bar:
        for idx, seeds, x in final_samples(model, start, np.arange(done, n_samples), chain_steps, seed, batch,
                                           variance, sampler, eta):
            x = x[:, 0].cpu().numpy()
            spins = ISING.project(x)
            arrays = {"spins": spins, **ISING.observables(spins),
                      "seed": np.array(seeds, dtype=np.int64), "source_index": start.source_index(idx)}
            if keep_field:
                arrays["field"] = x.astype(np.float32)
            store.write_samples(root, done, arrays)
            done += len(idx)
            store.save_resume(out, samples_done=done)
            bar.update(len(idx))
    store.remove_resume(out)
    store.finalize(out, {"complete": True})
    return store.read_attrs(out)
