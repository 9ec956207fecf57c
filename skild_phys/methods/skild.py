"""A trained SKILD model: network + process, built from a resolved configuration.

The one narrow interface (as in EDM's preconditioning wrapper): `TrainedModel.eps_hat(x, n)`
takes pixels x_n and steps n and returns the noise estimate in pixel space; the process,
the training loss and the samplers only ever call that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis.spectrum import fit_power_law, radial_spectrum
from ising.lattice import block_mean
from skild_base.errors import InputError
from skild_phys import __version__, checkpoint
from skild_phys.config import RunConfig
from skild_phys.networks.precision import accelerate
from skild_phys.networks.unet import CONFIGS, build_unet
from skild_phys.process.basis import Basis
from skild_phys.process.diffusion import Process
from skild_phys.process.presets import get_preset, preset_from_rule
from skild_phys.process.schedule import Schedule
from skild_phys.process.spectrum import S0_from_fit, mode_variance
from skild_phys.process.transfer import scaling_exponent, transferred_process

SPECTRUM_SAMPLES = 10000  # samples used to estimate S0 (the first ones of the training set)


GENERATION_ALPHA_BAR_END = 1e-4  # ᾱ_N of the slowest mode (k_eff = k_c) in the auto schedule


def auto_schedule(H: int, factor: float, k_c: float | None = None) -> Schedule:
    """Linear schedule by the preset rule (θ = 9, τ = 0.1) for an H×H grid.

    With k_c > 0 (default π, the lowest non-zero |k|) the schedule runs on until even the
    slowest mode keeps only ᾱ_N = 1e−4 of its signal, so one model both generates (from
    n = N) and super-resolves at any factor (from the step where r(n) = H / factor).  With
    k_c = 0 the DC mode is never noised and the schedule ends at r = H / factor (SR only).
    """
    if not factor > 1:
        raise InputError(f"super-resolution factor must be > 1, got {factor}")
    theta, tau = 9.0, 0.1
    k_c = math.pi if k_c is None else k_c
    if k_c <= 0:
        return preset_from_rule(H, H / factor, theta=theta, tau=tau, k_c=0.0)
    lam_end = -math.log(GENERATION_ALPHA_BAR_END) / k_c**2
    # invert the rule λ(1) = θ/λ_f² with λ_f = √2 π r √(θ / ln(1 + 1/τ)) for r
    r_end = math.sqrt(theta / lam_end) / (math.sqrt(2) * math.pi * math.sqrt(theta / math.log1p(1 / tau)))
    return preset_from_rule(H, min(r_end, H / factor), theta=theta, tau=tau, k_c=k_c)


def resolve_schedule(preset: str, H: int, factor: float, k_c: float | None) -> tuple[Schedule, str]:
    """(schedule, description) for --preset NAME|auto at grid size H."""
    if preset == "auto":
        return auto_schedule(H, factor, k_c), f"auto (rule, factor {factor:g})"
    p = get_preset(preset, H)
    s = p.schedule
    if k_c is not None:
        s = Schedule(s.kind, s.lam_i, s.lam_f, theta=s.theta, k_c=k_c, tau=s.tau, N=s.N)
    return s, p.name


SPECTRUM_MODES = ("fit", "empirical", "fit-low")


def estimate_spectrum(dataset, mode: str, basis: str = "dct",
                      max_samples: int = SPECTRUM_SAMPLES) -> tuple[np.ndarray, dict]:
    """Per-mode S0 (C, H, W) of the data in the process's own basis.

    "empirical": the measured per-mode variance; "fit": its radial power-law fit
    C (k² + k0²)^(−α) (the paper's default); "fit-low": the fit, with the measured variance
    in the lowest modes (|k| < 2 k_min: the DC mode and the first shells), which a radial
    power law does not follow (the magnetisation mode of a critical lattice).
    """
    if mode not in SPECTRUM_MODES:
        raise InputError(f"spectrum mode must be one of {', '.join(SPECTRUM_MODES)}, got {mode!r}")
    b = Basis.named(basis, dataset.height, dataset.width)
    n = min(len(dataset), max_samples)
    batches = (dataset.get(np.arange(start, min(start + 256, n))) for start in range(0, n, 256))
    var = np.maximum(mode_variance(batches, b).variance, 1e-12)
    k = b.k.numpy()
    fits = []
    for c in range(var.shape[0]):
        kr, S_k, counts = radial_spectrum(var[c], k=k)
        fits.append(fit_power_law(kr[kr > 0], S_k[kr > 0], counts=counts[kr > 0]))
    info = {"mode": mode, "basis": basis, "samples": int(n),
            "fit": [{"C": f.C, "alpha": f.alpha, "k0sq": f.k0sq, "alpha_err": f.alpha_err} for f in fits]}
    if mode == "empirical":
        return var, info
    S0 = np.stack([S0_from_fit(f, b).numpy() for f in fits])
    if mode == "fit-low":
        low = k < 2 * k[k > 0].min()
        S0[:, low] = var[:, low]
        info["measured_modes"] = int(low.sum())
    return S0, info


def block_mean_scale(dataset, max_samples: int = SPECTRUM_SAMPLES) -> dict[str, float]:
    """E|block mean| of the training spins for every factor f >= 2 dividing the grid.

    A ±1 block spin (majority or decimation) stands for a block mean of this typical size:
    the scale applied to real low-resolution spin inputs before they are embedded.
    """
    if dataset.kind != "spins":
        return {}
    H, W = dataset.height, dataset.width
    x = torch.from_numpy(dataset.get(np.arange(min(len(dataset), max_samples)))).to(torch.float64)
    return {str(f): float(block_mean(x, f).abs().mean()) for f in range(2, H + 1) if H % f == 0 and W % f == 0}


def net_config(dataset, net: str, periodic: bool | None, shape: dict | None, **extra) -> dict:
    """The `net` entry of a run configuration: named size, padding and any SHAPE_OVERRIDES."""
    if net not in CONFIGS:
        raise InputError(f"unknown network size {net!r}; choose one of {', '.join(CONFIGS)}")
    entry = {"name": net, "periodic": dataset.periodic if periodic is None else periodic, **extra}
    if shape:
        try:
            build_unet(net, overrides=shape)
        except ValueError as err:
            raise InputError(f"network shape: {err}") from None
        entry["shape"] = dict(shape)
    return entry


# Defaults by kind of data (docs/results/fidelity_campaign.md): a periodic lattice gets the torus's
# own basis, its measured spectrum, the cosine learning-rate decay and the short EMA that won the
# campaign; images keep the paper's DCT and power-law fit, a constant learning rate and EMA 0.999.
DATA_DEFAULTS = {"lattice": {"basis": "fourier", "spectrum": "empirical", "lr_decay": "cosine", "ema_decay": 0.99,
                             "loss_weight": "v-sr", "steps": 8000},
                 "image": {"basis": "dct", "spectrum": "fit", "lr_decay": "none", "ema_decay": 0.999,
                           "loss_weight": "eps", "steps": 2000}}


def data_defaults(dataset, method: str = "skild") -> dict:
    """The default basis, spectrum mode, learning-rate decay, EMA decay, loss weight and step count for this
    kind of training data and method; for lattice stores the winner of docs/results/fidelity_campaign.md at
    L = 32.  SR3 keeps the paper's EMA 0.999 and its own ε-MSE (the campaign measured the EMA and the loss
    weight for SKILD only) and gets the same steps, so the two compare at the same budget."""
    defaults = dict(DATA_DEFAULTS["image" if dataset.kind == "image" else "lattice"])
    if method != "skild":
        defaults["ema_decay"] = DATA_DEFAULTS["image"]["ema_decay"]
        defaults["loss_weight"] = "eps"
    return defaults


def run_fields(dataset, net_entry: dict, settings) -> dict:
    """The RunConfig fields every method takes from its data, network entry and training settings."""
    return {"version": __version__, "H": dataset.height, "W": dataset.width, "channels": dataset.channels,
            "data_kind": dataset.kind, "data": {**dataset.provenance(), "block_mean_abs": block_mean_scale(dataset)},
            "net": net_entry, "train": settings.recorded()}


def resolve_config(dataset, preset: str, factor: float, k_c: float | None, net: str, periodic: bool | None,
                   basis: str | None, spectrum: str | None, settings, parameterization: str = "v",
                   shape: dict | None = None):
    """The full configuration of a new run and its spectrum S0 (C, H, W); basis/spectrum None: data_defaults.

    settings: the TrainSettings of skild_phys.training.train (stored as the `train` field).
    """
    defaults = data_defaults(dataset)
    basis = basis or defaults["basis"]
    spectrum = spectrum or defaults["spectrum"]
    net_entry = net_config(dataset, net, periodic, shape)
    if dataset.height != dataset.width:
        raise InputError(f"training needs square images, got {dataset.height}x{dataset.width}")
    schedule, preset_name = resolve_schedule(preset, dataset.height, factor, k_c)
    S0, spectrum_info = estimate_spectrum(dataset, spectrum, basis)
    config = RunConfig(model="skild", parameterization=parameterization, preset=preset_name, factor=factor,
                       schedule=schedule.to_dict(), basis=basis, spectrum=spectrum_info,
                       **run_fields(dataset, net_entry, settings))
    return config, S0


def build_process(config: RunConfig, S0) -> Process:
    """The SKILD process of a configuration (basis, schedule) with spectrum S0."""
    basis = Basis.named(config.basis, config.H, config.W)
    return Process(basis, Schedule(**config.schedule), torch.as_tensor(S0, dtype=torch.float64))


def build_network(config: RunConfig) -> torch.nn.Module:
    """The U-Net of a configuration (weights freshly initialised)."""
    net = config.net
    return build_unet(net["name"], in_channels=config.channels, out_channels=config.channels,
                      cond_channels=net.get("cond_channels", 0), periodic=net["periodic"], overrides=net.get("shape"))


PARAMETERIZATIONS = ("v", "eps")
def network_denoiser(net, process: Process, parameterization: str, cond: torch.Tensor | None = None):
    """ε̂(x_n, n) in pixel space from a network, under the run's output parameterization.

    "eps": the network predicts ε directly (the paper's choice).
    "v":   per mode, ε̂ = √((1−ᾱ_n)/S0) X_n − √ᾱ_n V with V the network output in the basis:
           v-prediction (Salimans & Ho 2022) in S0-whitened coefficients.  Where a mode is pure
           noise (ᾱ_n → 0) ε̂ is exactly X_n/√S0 whatever the network says, so X̂_0 no longer
           divides network errors by √ᾱ_n; where it is resolved (ᾱ_n → 1) ε̂ = −V.  The
           default training loss is still the ε-MSE, i.e. the v-MSE weighted by ᾱ_n per mode
           (skild_objective: --loss-weight).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")

    def eps_hat(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        out = net(x.to(torch.float32), n, None if cond is None else cond.to(torch.float32)).to(x.dtype)
        if parameterization == "eps":
            return out
        la = process.log_alpha_bar(n)
        S0 = process.S0.to(x)
        X, V = process.basis.forward(x), process.basis.forward(out)
        eps_k = torch.sqrt(-torch.expm1(la)).to(x) * X / torch.sqrt(S0) - torch.exp(la / 2).to(x) * V
        return process.basis.inverse(eps_k)

    return eps_hat


LOSS_WEIGHTS = ("eps", "v", "v-sr", "v-octave")


def skild_objective(parameterization: str, loss_weight: str = "eps", n_sr: int | None = None,
                    n_octave: int = 0, noise_weight: float = 1.0):
    """The SKILD training loss objective(net, process, x0, generator, n=None) -> (B,) per sample.

    "eps":  mean over modes of (ε̂ − ε)² (the paper's ε-MSE).  Per mode it weighs the whitened
            X̂_0 error by SNR = ᾱ_n/(1 − ᾱ_n), so a mode that is still mostly noise costs almost
            nothing, however the network fills it in.
    "v":    mean over modes of (V̂ − V)² with V = √(1−ᾱ_n) X_0/√S0 − √ᾱ_n ε, the target of the
            v-parameterised network (network_denoiser): the ε-MSE divided by ᾱ_n per mode, i.e.
            the X̂_0 error weighted by 1 + SNR (Salimans & Ho 2022), so the modes the network
            must infer from the resolved ones weigh as much as those it only denoises.
            Computed from V directly: exact also where ᾱ_n underflows.
    "v-sr": the v-MSE on the steps n ≤ n_sr (the super-resolution range of the run's factor),
            the ε-MSE (as ᾱ_n (V̂ − V)², the same number) above it, where nearly every mode is
            noise and the v-MSE's unit loss per noise mode would drown the few resolved ones.
    "v-octave": the v-MSE only on the steps n_octave < n ≤ n_sr, where a super-resolution chain
            of the run's factor resolves its first octave (from H/factor to 2H/factor; n_octave is
            the start step of half the factor, 0 for factor 2), and the ε-MSE on every other
            step: v where the chain draws the coarse structure next to the given one, ε where it
            fills in the finer texture and above n_sr.
    noise_weight λ (the v weights only) blends the two per mode where the v-MSE acts: the X̂_0
    error weighted by SNR + λ, i.e. (ᾱ_n + λ (1 − ᾱ_n)) (V̂ − V)² = λ v-MSE + (1 − λ) ε-MSE.  A
    resolved mode weighs the same under any λ; a mode that is pure noise weighs λ against the
    v-MSE's 1 and the ε-MSE's 0.
    The v weights need parameterization v.  All draw (n, ε) through Process.noised, so the
    same generator gives the same draws.
    """
    if loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"unknown loss weight {loss_weight!r}; choose one of {LOSS_WEIGHTS}")
    if not 0 <= noise_weight <= 1:
        raise ValueError(f"noise_weight must be in [0, 1], got {noise_weight}")
    if loss_weight == "eps":
        if noise_weight != 1:
            raise ValueError("noise_weight applies to the v weights, not to the ε-MSE")
        return lambda net, proc, x0, g, n=None: proc.loss(network_denoiser(net, proc, parameterization), x0, g, n)
    if parameterization != "v":
        raise ValueError(f"the {loss_weight}-weighted loss needs the v parameterization")
    if loss_weight != "v" and n_sr is None:
        raise ValueError(f"the {loss_weight} loss needs the super-resolution range n_sr")

    def v_loss(net, proc: Process, x0: torch.Tensor, g, n=None) -> torch.Tensor:
        n, eps, X0, X_n = proc.noised(x0, g, n)
        la = proc.log_alpha_bar(n)
        target = (torch.sqrt(-torch.expm1(la)).to(X0) * X0 / torch.sqrt(proc.S0).to(X0)
                  - torch.exp(la / 2).to(X0) * eps)
        out = net(proc.basis.inverse(X_n).to(torch.float32), n, None).to(X0.dtype)
        err = (proc.basis.forward(out) - target).square()
        if noise_weight != 1:  # SNR + λ on the X̂_0 error: ᾱ_n + λ (1 − ᾱ_n) = 1 + (1 − λ)(ᾱ_n − 1) on V's
            blended = (1 + (1 - noise_weight) * torch.expm1(la)).to(X0) * err
        else:
            blended = err
        if loss_weight != "v":  # the ε-MSE, as ᾱ_n (V̂ − V)², outside n_lo < n ≤ n_sr
            n_lo = n_octave if loss_weight == "v-octave" else 0
            outside = ((n > n_sr) | (n <= n_lo)).view(-1, 1, 1, 1)
            blended = torch.where(outside, torch.exp(la).to(X0) * err, blended)
        return blended.reshape(x0.shape[0], -1).mean(dim=1)

    return v_loss


@dataclass
class TrainedModel:
    """EMA network + process of a checkpoint, ready for sampling."""

    config: RunConfig
    process: Process
    net: torch.nn.Module
    digest: str
    device: torch.device
    path: str | None = None  # the run directory it was loaded from
    window: str = "global"  # what the network's GroupNorm and attention see on a larger lattice (WINDOWS)

    def eps_hat(self, x: torch.Tensor, n: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Noise estimate in pixel space; the network runs in float32, the chain keeps x's dtype."""
        with torch.no_grad():
            return network_denoiser(self.net, self.process, self.config.parameterization, cond)(x, n)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; one-sentence error for a device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {name}: no CUDA device is available on this machine; use cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type not in ("cpu", "mps"):
        raise InputError(f"unsupported --device {name!r}; use auto, cpu, cuda or cuda:N")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available on this machine; use cpu or auto")
    return dev


WINDOWS = ("global", "train")


def load_model(run, device: str = "auto", precision: str = "fp32", compile: bool = False,
               window: str = "global") -> TrainedModel:
    """Load the "use" artifact of RUN (EMA weights) onto `device` (network precision: see `accelerate`).

    window: what the network's GroupNorm statistics and self-attention see on a lattice larger than
    the training one — "global" the whole lattice, "train" the periodic window of the training
    lattice around each site (`UNet.set_window`); the two are the same network at the training size.
    """
    if window not in WINDOWS:
        raise InputError(f"--window must be one of {', '.join(WINDOWS)}, got {window!r}")
    art = checkpoint.load_use(run)
    config = RunConfig.from_dict(art["config"])
    dev = pick_device(device)
    net = build_network(config)
    try:
        net.load_state_dict(art["ema"])
    except (RuntimeError, KeyError) as err:
        raise InputError(f"checkpoint {run} does not match its own configuration ({type(err).__name__})") from None
    net.to(dev).eval()
    net.set_window((config.H, config.W) if window == "train" else None)
    process = build_process(config, art["S0"]).to(dev)
    return TrainedModel(config, process, accelerate(net, dev, precision, compile), checkpoint.file_digest(run), dev,
                        str(checkpoint.resolve(run)), window)


def transfer_allowed(config: RunConfig, H: int, W: int) -> None:
    """One-sentence refusal of a size the checkpoint cannot serve."""
    if config.model != "skild":
        raise InputError(f"a {config.model} checkpoint runs only at its training size "
                         f"{config.H}x{config.W}; size transfer needs a SKILD checkpoint")
    if not config.net.get("periodic"):
        raise InputError("this checkpoint was trained with open boundaries; size transfer needs a periodic "
                         "(circular-padding) network")
    if config.H != config.W or H != W:
        raise InputError(f"size transfer needs square grids, got {config.H}x{config.W} -> {H}x{W}")
    if H < config.H:
        raise InputError(f"{H}x{W} is smaller than the checkpoint's {config.H}x{config.W}; "
                         "size transfer goes to larger lattices")


def at_size(model: TrainedModel, H: int, W: int) -> TrainedModel:
    """The trained model on an H×W grid in lattice units: same network, transferred process."""
    config = model.config
    if (H, W) == (config.H, config.W):
        return model
    transfer_allowed(config, H, W)
    exponent = scaling_exponent(config)
    process = transferred_process(model.process, H, W, exponent)
    new_config = config.replace(H=H, W=W, schedule=process.schedule.to_dict(),
                                transfer={"trained_H": config.H, "trained_W": config.W, "scale": H / config.H,
                                          "window": model.window, "exponent": exponent})
    return TrainedModel(new_config, process, model.net, model.digest, model.device, model.path, model.window)
