"""Where a reverse chain starts (SPEC §4): generation at n = N from the prior, super-resolution at
n0 (where the effective resolution equals the input's) from the forward marginal of a
high-resolution configuration (the paper protocol) or of a real low-resolution input.

A `StartSpec` is what every sampling driver runs from, whatever the method and the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ising.coarsen import block_mean_counts, draw_block_means
from skild_base.errors import InputError
from skild_phys.methods.skild import TrainedModel
from skild_phys.process.basis import Basis, embed_low_modes
from skild_phys.process.diffusion import rand, randn
from skild_phys.process.lowres import BlockMeanConditional
from skild_phys.process.transfer import transferred_process


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


LOWRES_STARTS = ("conditional", "spread", "embed", "sampled")


def block_spin_spread(model: TrainedModel, f: int, scale: float) -> float:
    """Variance of an f×f block mean around its typical size, E[bm²] − E|bm|², for ±1 block spins.

    E|bm| is the training data's (`scale`); E[bm²] is what the checkpoint's S0 gives the block mean
    on the training lattice (the diagonal of G), where S0 is the data's own spectrum: a local
    quantity, taken there also for a checkpoint carried to a larger lattice, whose carried S0 has
    no measured power below the training lattice's lowest wavenumber."""
    p = model.process
    transfer = getattr(model.config, "transfer", None)
    if transfer:
        p = transferred_process(p, transfer["trained_H"], transfer["trained_W"], transfer.get("exponent"))
    return max(BlockMeanConditional(p.basis, p.S0.cpu(), f).mean_square - scale**2, 0.0)


def superres_start(model: TrainedModel, dataset, factor: float, lowres: bool,
                   lowres_start: str = "conditional") -> StartSpec:
    """Super-resolution start at n0: forward marginal of the HR sample, or of a clean state built from the LR input.

    A real low-resolution input (block means; ±1 block spins stand for block means of the
    training data's typical size E|block mean|) becomes a clean state either by Gaussian
    conditioning on the block means under the process's S0 ("conditional", any basis, see
    skild_phys.process.lowres), the same with ±1 block spins observed with the spread
    E[bm²] − E|bm|² that S0 gives a block mean around its typical size ("spread"; block means
    are conditioned on exactly), the same with ±1 majority block spins replaced by block means drawn
    from their frequencies given the 3 × 3 neighbourhood of block spins, counted on a reference store
    (`model.config.data["block_mean_counts"]`, see `attach_block_reference`; "sampled"), or by placing
    its DCT coefficients in the low modes ("embed", DCT only).
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
        counts = None
        if dataset.kind == "spins" and lowres_start == "sampled":
            counts = model.config.data.get("block_mean_counts", {}).get(str(int(factor)))
            if counts is None:
                raise InputError(f"--lowres-start sampled needs block-mean counts for factor {factor:g}: "
                                 "pass a reference spin store with --block-reference")
            counts = np.asarray(counts, dtype=np.int64)
        elif dataset.kind == "spins":
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
            f = int(round(factor))
            spread = lowres_start == "spread" and dataset.kind == "spins"
            conditional = BlockMeanConditional(p.basis, p.S0.cpu(), f,
                                               noise_var=block_spin_spread(model, f, scale) if spread else 0.0)

            def to_modes(y, gens):
                z = randn((len(y), 1, H, model.config.W), gens, dtype=torch.float64, device=model.device)
                if counts is not None:
                    u = rand(tuple(y.shape), gens, dtype=torch.float64).numpy()
                    y = torch.from_numpy(draw_block_means(y.cpu().numpy()[:, 0], counts, u[:, 0])[:, None]).to(y)
                z_obs = None
                if conditional.noise_var > 0:
                    z_obs = randn(tuple(y.shape), gens, dtype=torch.float64, device=model.device)
                return conditional.sample(scale * y, z, z_obs)

    def clean_modes(idx, gens):
        x = torch.from_numpy(dataset.get(idx)).to(device=model.device, dtype=torch.float64)
        return to_modes(x, gens)

    return marginal_start(model, n0, clean_modes)


def attach_block_reference(model: TrainedModel, path, factors) -> TrainedModel:
    """The model with the block-mean counts (`ising.coarsen.block_mean_counts`) of the spin store at `path`
    for each factor in its data, which `--lowres-start sampled` draws from. The reference must be a spin
    store of the model the checkpoint was trained on, at the same coupling; one sentence if it is not."""
    from ising import store

    ds = store.open_store(path)
    if "spins" not in ds:
        raise InputError(f"{path} holds no `spins`; the block reference must be a spin store")
    trained = model.config.data.get("data_attrs", {})
    for key in ("model", "beta"):
        if key in trained and ds.attrs.get(key) is not None and ds.attrs.get(key) != trained[key]:
            raise InputError(f"{path} has {key} = {ds.attrs.get(key)}, the checkpoint's training data "
                             f"{trained[key]}: the block reference must come from the same model")
    if any(f != int(f) for f in factors):
        raise InputError("--lowres-start sampled needs whole factors")
    counts = {str(int(f)): 0 for f in factors}
    for start in range(0, ds["spins"].shape[0], 1024):  # in chunks: counts add up, memory stays bounded
        spins = ds["spins"][start:start + 1024].values
        counts = {k: c + block_mean_counts(spins, int(k)) for k, c in counts.items()}
    counts = {k: c.tolist() for k, c in counts.items()}
    data = {**model.config.data, "block_mean_counts": counts, "block_reference": str(path)}
    return dataclasses.replace(model, config=model.config.replace(data=data))


def marginal_start(model: TrainedModel, n0: int, clean_modes: Callable) -> StartSpec:
    """Start at n0 from the forward marginal of clean_modes(indices, generators) -> X_0 (B, C, H, W) in the model's basis."""
    p = model.process

    def state(idx, gens):
        X0 = clean_modes(idx, gens)
        eps = randn(X0.shape, gens, dtype=torch.float64, device=model.device)
        return p.marginal(X0, n0, eps)

    return StartSpec(n0, state, source_index=lambda idx: np.asarray(idx, dtype=np.int64))
