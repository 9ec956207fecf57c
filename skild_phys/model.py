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
from skild_phys import checkpoint
from skild_phys.basis import Basis, block_mean
from skild_phys.errors import InputError
from skild_phys.presets import get_preset, preset_from_rule
from skild_phys.process import Process
from skild_phys.schedule import Schedule
from skild_phys.spectrum import S0_from_fit, mode_variance
from skild_phys.unet import build_unet

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


def build_process(config: dict, S0) -> Process:
    """The SKILD process of a configuration (basis, schedule) with spectrum S0."""
    basis = Basis.named(config["basis"], config["H"], config["W"])
    return Process(basis, Schedule(**config["schedule"]), torch.as_tensor(S0, dtype=torch.float64))


def build_network(config: dict) -> torch.nn.Module:
    """The U-Net of a configuration (weights freshly initialised)."""
    net = config["net"]
    return build_unet(net["name"], in_channels=config["channels"], out_channels=config["channels"],
                      cond_channels=net.get("cond_channels", 0), periodic=net["periodic"], overrides=net.get("shape"))


PARAMETERIZATIONS = ("v", "eps")
PRECISIONS = ("fp32", "bf16", "tf32")


class AutocastNet(torch.nn.Module):
    """The network's forward under bf16 autocast, returning float32; the process stays float64.

    Only the network runs in reduced precision: the basis transforms, the schedule's tables
    and the chain's arithmetic keep their dtypes (autocast never touches float64, and the
    output is cast back before any of them sees it).
    """

    def __init__(self, net: torch.nn.Module, device_type: str):
        super().__init__()
        self.net, self.device_type = net, device_type

    def forward(self, x, n, cond=None):
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            out = self.net(x, n, cond)
        return out.float()


def accelerate(net: torch.nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False):
    """The network as it runs: bf16 autocast and/or torch.compile on request; TF32 matmuls for "tf32".

    fp32 (the default) is the network untouched.  "tf32" lets CUDA matmuls and convolutions use
    TensorFloat-32 (no effect on CPU).  The weights are shared with `net`, so saving and the
    EMA see the same parameters.
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = AutocastNet(net, device.type) if precision == "bf16" else net
    if compile:
        out = torch.compile(out)
    return out


def network_denoiser(net, process: Process, parameterization: str, cond: torch.Tensor | None = None):
    """ε̂(x_n, n) in pixel space from a network, under the run's output parameterization.

    "eps": the network predicts ε directly (the paper's choice).
    "v":   per mode, ε̂ = √((1−ᾱ_n)/S0) X_n − √ᾱ_n V with V the network output in the basis:
           v-prediction (Salimans & Ho 2022) in S0-whitened coefficients.  Where a mode is pure
           noise (ᾱ_n → 0) ε̂ is exactly X_n/√S0 whatever the network says, so X̂_0 no longer
           divides network errors by √ᾱ_n; where it is resolved (ᾱ_n → 1) ε̂ = −V.  The
           training loss is still the ε-MSE, i.e. the v-MSE weighted by ᾱ_n per mode.
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


@dataclass
class TrainedModel:
    """EMA network + process of a checkpoint, ready for sampling."""

    config: dict
    process: Process
    net: torch.nn.Module
    digest: str
    device: torch.device
    path: str | None = None  # the run directory it was loaded from

    def eps_hat(self, x: torch.Tensor, n: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Noise estimate in pixel space; the network runs in float32, the chain keeps x's dtype."""
        with torch.no_grad():
            return network_denoiser(self.net, self.process, self.config.get("parameterization", "eps"), cond)(x, n)


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


def load_model(run, device: str = "auto", precision: str = "fp32", compile: bool = False) -> TrainedModel:
    """Load the "use" artifact of RUN (EMA weights) onto `device` (network precision: see `accelerate`)."""
    art = checkpoint.load_use(run)
    config = art["config"]
    dev = pick_device(device)
    net = build_network(config)
    try:
        net.load_state_dict(art["ema"])
    except (RuntimeError, KeyError) as err:
        raise InputError(f"checkpoint {run} does not match its own configuration ({type(err).__name__})") from None
    net.to(dev).eval()
    process = build_process(config, art["S0"]).to(dev)
    return TrainedModel(config, process, accelerate(net, dev, precision, compile), checkpoint.file_digest(run), dev,
                        str(checkpoint.resolve(run)))
