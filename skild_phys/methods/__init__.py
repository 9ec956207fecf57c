"""The diffusion methods a run can train and sample: SKILD (and baselines), chosen by name.

A method supplies how a run's configuration is resolved, its training objective, how a
checkpoint becomes a sampler, and how super-resolution starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from skild_base.errors import InputError
from skild_phys import checkpoint


@dataclass(frozen=True)
class Method:
    """One trainable method."""

    name: str
    resolve_config: Callable
    objective: Callable  # config -> per-sample training loss, or None for the SKILD loss of train.train
    load: Callable  # (run, device) -> model with .config, .process, .eps_hat
    superres_start: Callable  # (model, dataset, factor, lowres, lowres_start) -> methods.starts.StartSpec


def _skild() -> Method:
    from skild_phys.methods.skild import load_model, resolve_config
    from skild_phys.methods.starts import superres_start

    return Method("skild", resolve_config, lambda config: None, load_model, superres_start)


def _sr3() -> Method:
    from skild_phys.methods import sr3
    from skild_phys.methods.skild import load_model

    return Method("sr3", sr3.resolve_config, lambda config: sr3.make_objective(config.factor, config.parameterization), load_model,
                  sr3.superres_start)


_METHODS = {"skild": _skild, "sr3": _sr3}


def get_method(name: str) -> Method:
    """Method by name."""
    if name not in _METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}")
    return _METHODS[name]()


def load_trained(run, device: str = "auto", precision: str = "fp32", compile: bool = False, window: str = "global"):
    """Load a checkpoint with the method it was trained with (network precision: `skild_phys.networks.precision.accelerate`;
    window: `skild_phys.methods.skild.load_model`)."""
    name = checkpoint.load_use(run)["config"].get("model", "skild")
    return get_method(name).load(run, device, precision, compile, window)


def default_variance(config, generate: bool = False) -> str:
    """The reverse-step noise a chain uses unless told (docs/results/fidelity_campaign.md, "The chain's noise"
    and "The v-sr loss at twice the steps").

    SKILD lattice checkpoints super-resolve with `forward` (σ² = β, exact for Gaussian data at any
    respacing): at 100 steps from n0 the posterior chain over-orders by about as much as going to 250
    steps removes, the forward one lands where the 250-step chain does.  They generate with `split`,
    the posterior variance down to the super-resolution start n0 and the forward one from there:
    with the default network (v-sr, 8000 steps) at 100 steps the posterior chain over-orders ⟨e⟩
    by 3.6σ, the forward one under-orders κ4 by up to 2.8σ, and split has every observable within
    1.9σ (κ4 within 0.7σ); below 100 steps too it is the better one (docs/results/samplers.md).
    Images and SR3 keep `posterior` (the paper's).
    """
    if config.model != "skild" or config.data_kind == "image":
        return "posterior"
    return "split" if generate else "forward"


def resolve_variance(model, variance: str | None, generate: bool = False) -> str:
    """The reverse-step noise a chain of `model` runs with: `variance`, or the default; "split"
    becomes "split:n0", the posterior variance above the checkpoint's super-resolution start n0
    (its training factor) and the forward one from n0 down (`process.diffusion.reverse_chain`)."""
    from skild_phys.methods.starts import start_step_for_factor

    variance = variance or default_variance(model.config, generate=generate)
    if variance != "split":
        return variance
    if model.config.model != "skild":
        raise InputError(f"--variance split needs a SKILD checkpoint (this one is {model.config.model})")
    return f"split:{start_step_for_factor(model, model.config.factor)}"


def superres_start_for(model, dataset, factor: float, lowres: bool, lowres_start: str = "conditional"):
    """The super-resolution start of the model's method (lowres_start: how SKILD embeds a real coarse input)."""
    return get_method(model.config.model).superres_start(model, dataset, factor, lowres, lowres_start)


def upscaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """The lattice a coarse height x width input becomes at `factor`; one sentence if it is not whole."""
    H, W = height * factor, width * factor
    if abs(H - round(H)) > 1e-9 or abs(W - round(W)) > 1e-9:
        raise InputError(f"low-resolution data of {height}x{width} times factor {factor:g} is not a whole lattice")
    return int(round(H)), int(round(W))


def at_data_size(model, dataset, factor: float, lowres: bool):
    """The model on the grid the data call for: the training grid, or (lattice SKILD checkpoints) a larger
    one in lattice units (`skild_phys.process.transfer`), e.g. a 32x32 checkpoint super-resolving 32 -> 128."""
    from skild_phys.methods.skild import at_size

    if model.config.data_kind == "image":
        return model
    H, W = upscaled_size(dataset.height, dataset.width, factor) if lowres else (dataset.height, dataset.width)
    if (H, W) == (model.config.H, model.config.W):
        return model
    return at_size(model, H, W)
