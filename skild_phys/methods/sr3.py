"""SR3-style conditional DDPM baseline (Saharia et al. 2021) on the same backbone family.

White-noise DDPM with a cosine schedule (Nichol & Dhariwal 2021): in SKILD's language, the
identity basis, S0 = 1 and ᾱ_n the same for every mode, so the process, loss and reverse
chain are the ones of `skild_phys.process.diffusion`.  The network additionally sees the
low-resolution input: the f×f block mean, upsampled to the full grid by repetition,
concatenated to x_n.  Super-resolution starts from pure noise at n = N.
"""

from __future__ import annotations

import numpy as np
import torch

from skild_base.errors import InputError
from skild_phys.config import RunConfig
from skild_phys.process.schedule import Schedule

COSINE_OFFSET = 0.008  # s of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17)


def condition(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Block mean over factor×factor blocks, repeated back to the full grid (the SR3 conditioning image)."""
    from ising.lattice import block_mean

    return block_mean(x, factor).repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat a low-resolution image back to the full grid."""
    return y.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def resolve_config(dataset, preset, factor, k_c, net, periodic, basis, spectrum, settings, parameterization="v",
                   shape=None):
    """Configuration of an SR3 run: cosine DDPM in the pixel (identity) basis, S0 = 1."""
    from skild_phys.methods.skild import net_config, run_fields

    net_entry = net_config(dataset, net, periodic, shape, cond_channels=dataset.channels)
    f = int(round(factor))
    if f != factor or f < 2 or dataset.height % f or dataset.width % f:
        raise InputError(f"SR3 needs an integer factor >= 2 dividing the image size, got {factor:g}")
    config = RunConfig(model="sr3", parameterization=parameterization, preset="sr3-cosine", factor=f,
                       schedule=Schedule("cosine", 0.0, 0.0, theta=COSINE_OFFSET, k_c=0.0, tau=0.1).to_dict(),
                       basis="identity", spectrum={"mode": "white"}, **run_fields(dataset, net_entry, settings))
    S0 = np.ones((dataset.channels, dataset.height, dataset.width))
    return config, S0


def make_objective(factor: int, parameterization: str):
    """Per-sample ε-MSE with the block-mean conditioning of each training image."""
    from skild_phys.methods.skild import network_denoiser

    def objective(net, process, x0, generator, n=None):
        return process.loss(network_denoiser(net, process, parameterization, condition(x0, factor)), x0, generator, n)

    return objective


def superres_start(model, dataset, factor: float, lowres: bool, lowres_start: str = "conditional"):
    """SR3 super-resolution: pure noise at n = N, conditioned on the low-resolution input.

    The network sees the block means directly, so `lowres_start` (how SKILD turns them into a
    clean state) does not apply.
    """
    from skild_phys.methods.starts import StartSpec

    f = model.config.factor
    if factor != f:
        raise InputError(f"this SR3 checkpoint was trained for factor {f}, not {factor:g}")
    H, W = model.config.H, model.config.W
    if not lowres and (dataset.height, dataset.width) != (H, W):
        raise InputError(f"data are {dataset.height}x{dataset.width} but the checkpoint was trained at {H}x{W}")
    if lowres and (dataset.height * f, dataset.width * f) != (H, W):
        raise InputError(f"low-resolution data are {dataset.height}x{dataset.width}; factor {f} needs {H // f}x{W // f}")
    scale = 1.0
    if lowres and dataset.kind == "spins":
        scale = model.config.data["block_mean_abs"][str(f)]
    p = model.process
    shape = (model.config.channels, H, W)

    def state(idx, gens):
        return p.prior((len(idx),) + shape, gens, dtype=torch.float64, device=model.device)

    def cond(idx):
        x = torch.from_numpy(dataset.get(idx)).to(device=model.device, dtype=torch.float64)
        return upsample(scale * x, f) if lowres else condition(x, f)

    return StartSpec(p.N, state, source_index=lambda idx: np.asarray(idx, dtype=np.int64), cond=cond)
