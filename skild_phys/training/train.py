"""Training loop: ε-prediction with the SKILD process (SPEC §4), AdamW, warm-up, clipping, EMA.

One long, linear function in sections, as in EDM's training loop.  A run directory holds the
resolved configuration, the "use" and "resume" artifacts and an append-only JSONL log.
Killed and resumed training reproduces uninterrupted training exactly: every random
stream (data order, augmentations, steps n, noise ε) is restored from the resume artifact.
Under torchrun the same loop runs data-parallel (skild_phys/training/ddp.py); rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import checkpoint
from skild_phys.config import RunConfig
from skild_phys.methods.skild import (
    LOSS_WEIGHTS,
    build_network,
    build_process,
    skild_objective,
)
from skild_phys.networks.precision import PRECISIONS, accelerate
from skild_phys.training import ddp

# Settings that may change between a run and its resumption (the rest must match).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "device", "val_data", "val_samples", "val_every",
                     "compile")
ADDED_SETTINGS = ("precision", "compile", "loss_weight", "noise_weight")  # TrainSettings fields newer than some runs: their defaults apply
UNRECORDED_AT_DEFAULT = ("noise_weight",)  # TrainSettings.recorded
LR_DECAYS = ("none", "cosine")
N_SAMPLINGS = ("uniform", "sr")
SR_SHARE = 0.75  # n_sampling "sr": share of the loss's steps drawn from the super-resolution range
VAL_BINS = 10  # equal bins of n for the validation loss


def check_noise_weight(noise_weight: float, loss_weight: str | None) -> None:
    """One-line InputError for a --noise-weight no run can use (loss_weight None: not yet resolved)."""
    if not 0 <= noise_weight <= 1:
        raise InputError(f"--noise-weight must be in [0, 1], got {noise_weight:g}")
    if noise_weight != 1 and loss_weight == "eps":
        raise InputError("--noise-weight blends the v-MSE into the eps-MSE: it needs a SKILD v --loss-weight, "
                         "not eps")


@dataclass
class TrainSettings:
    """Optimisation settings of a run."""

    steps: int = 2000
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    augment: bool = True
    checkpoint_every: int = 250
    log_every: int = 10
    device: str = "auto"
    lr_decay: str = "none"  # after warm-up: constant, or cosine to zero at `steps`
    n_sampling: str = "uniform"  # steps n of the loss: uniform on 1..N, or "sr" (see draw_steps)
    loss_weight: str = "eps"  # SKILD loss per mode: the ε-MSE, the v-MSE, or v on some SR steps (skild_objective)
    noise_weight: float = 1.0  # where a v weight acts, a pure-noise mode's weight: 1 the v-MSE, 0 the ε-MSE
    val_data: str | None = None  # held-out store for the validation loss
    val_samples: int = 32
    val_every: int = 500
    precision: str = "fp32"  # network precision: fp32, bf16 (autocast) or tf32 (CUDA matmuls)
    compile: bool = False  # torch.compile the network

    def validate(self) -> None:
        """Raise InputError for settings no run can use."""
        if self.steps < 1 or self.batch < 1:
            raise InputError("--steps and --batch must be at least 1")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.warmup < 0:
            raise InputError("--checkpoint-every and --log-every must be >= 1, --warmup >= 0")
        if self.lr_decay not in LR_DECAYS:
            raise InputError(f"--lr-decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if self.n_sampling not in N_SAMPLINGS:
            raise InputError(f"--n-sampling must be one of {', '.join(N_SAMPLINGS)}, got {self.n_sampling!r}")
        if self.loss_weight not in LOSS_WEIGHTS:
            raise InputError(f"--loss-weight must be one of {', '.join(LOSS_WEIGHTS)}, got {self.loss_weight!r}")
        check_noise_weight(self.noise_weight, self.loss_weight)
        if self.val_samples < 1 or self.val_every < 1:
            raise InputError("--val-samples and --val-every must be at least 1")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def recorded(self) -> dict:
        """The settings as a run's config stores them.  A setting newer than the runs it would change
        nothing for (UNRECORDED_AT_DEFAULT) is left out at its default, so a run made without it keeps
        its bytes and its checkpoint digest; loading fills it back in (TrainSettings(**stored))."""
        default = TrainSettings.__dataclass_fields__
        return {k: v for k, v in asdict(self).items() if k not in UNRECORDED_AT_DEFAULT or v != default[k].default}

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier after `step` optimiser steps: linear warm-up, then constant or cosine."""
        warm = min(1.0, (step + 1) / max(self.warmup, 1))
        if self.lr_decay == "none" or step < self.warmup:
            return warm
        progress = min(1.0, (step + 1 - self.warmup) / max(self.steps - self.warmup, 1))
        return 0.5 * (1 + math.cos(math.pi * progress))


def _check_resumable(old: dict, new: dict) -> None:
    """Refuse to resume a run under a different configuration (except the RESUMABLE_CHANGES)."""
    a = {k: v for k, v in old.items() if k != "train"}
    b = {k: v for k, v in new.items() if k != "train"}
    defaults = asdict(TrainSettings())
    older = {k: defaults[k] for k in ADDED_SETTINGS}  # settings a run from before they existed ran with
    ta = {k: v for k, v in {**older, **old["train"]}.items() if k not in RESUMABLE_CHANGES}
    tb = {k: v for k, v in {**older, **new["train"]}.items() if k not in RESUMABLE_CHANGES}
    if a != b or ta != tb:
        changed = sorted({k for k in set(a) | set(b) if a.get(k) != b.get(k)}
                         | {f"train.{k}" for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)})
        raise InputError(f"cannot resume: the run was made with different settings ({', '.join(changed)})")
    if old["train"].get("lr_decay") == "cosine" and old["train"].get("steps") != new["train"].get("steps"):
        raise InputError(f"cannot resume with --steps {new['train'].get('steps')}: the run's cosine learning-rate "
                         f"decay ends at step {old['train'].get('steps')}")


RUN_HINT = "pass --resume to continue it, --overwrite to replace it"


def prepare_run_dir(run, resume: bool, overwrite: bool, inputs=()) -> Path:
    """Create RUN, or check it may be resumed/overwritten; one-sentence errors otherwise.

    --overwrite replaces only a training run (`outputs.claim`), never an input or other data.
    """
    run = Path(run)
    outputs.check_not_input(run, inputs)
    if resume:
        if not (run / checkpoint.RESUME_FILE).is_file():
            raise InputError(f"nothing to resume in {run}: no {checkpoint.RESUME_FILE}")
        return run
    if outputs.claim(run, outputs.RUN, overwrite=overwrite, hint=RUN_HINT) == "existing":
        outputs.replace(run, outputs.RUN)
    run.mkdir(parents=True, exist_ok=True)
    return run


def train(run, dataset, config: RunConfig, S0, resume: bool = False, progress: bool = True, log=print,
          objective=None) -> dict:
    """Train (or continue) the run in RUN on `dataset`; returns the final log record.

    objective(net, process, x0, generator, n=None) -> per-sample loss (n: fixed steps, else drawn);
    default: the SKILD loss of the run's loss_weight.  The validation loss is always the
    objective given, or else the SKILD ε-MSE, so runs of either weighting compare on it.
    """
    settings = TrainSettings(**config.train)
    settings.validate()
    run = Path(run)
    ranks = ddp.current()
    device = ddp.device(settings.device, ranks)
    batch = ddp.rank_batch(settings.batch, ranks)
    if not ranks.main:
        log, progress = (lambda msg: None), False

    # ---- state: network, EMA, optimiser, LR warm-up, random streams --------------------- #
    torch.manual_seed(settings.seed)
    net = build_network(config).to(device)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: settings.lr_factor(s))
    seed = ddp.rank_seed(settings.seed, ranks)
    gen = torch.Generator().manual_seed(seed + 1)  # steps n, noise ε, augmentations
    data_rng = np.random.Generator(np.random.PCG64(seed))  # which samples form a batch
    step = 0
    if resume:
        art = checkpoint.load_resume(run)
        _check_resumable(art["config"], config.to_dict())
        S0 = art["S0"]
        net.load_state_dict(art["model"])
        ema.load_state_dict(art["ema"])
        opt.load_state_dict(art["optimizer"])
        warm.load_state_dict(art["lr_schedule"])
        torch_rng, data_state = _rank_rng_states(art, ranks)
        gen.set_state(torch_rng)
        data_rng.bit_generator.state = json.loads(data_state)
        step = int(art["step"])
        if step >= settings.steps:
            log(f"{run} is already trained to step {step} of {settings.steps}: nothing to resume"
                + (" (a larger --steps continues it)" if settings.lr_decay == "none" else ""))
            return _last_loss_record(run)
        log(f"resuming {run} at step {step}")
    process = build_process(config, S0).to(device)
    if objective is not None and settings.loss_weight != "eps":
        raise InputError(f"--loss-weight {settings.loss_weight} applies to SKILD's own loss, not to {config.model}'s")
    n_sr = sr_range(config, process)
    val_objective = objective or skild_objective(config.parameterization, "eps")
    objective = objective or skild_objective(config.parameterization, settings.loss_weight, n_sr,
                                             octave_start(config, process), settings.noise_weight)
    validate = validation(dataset, process, val_objective, settings, device) if ranks.main else None
    model = accelerate(ddp.wrap(net, ranks), device, settings.precision, settings.compile)
    if ranks.main:
        checkpoint.write_json(config.to_dict(), run / checkpoint.CONFIG_FILE)

    def save() -> None:
        rng_states = ddp.gather((gen.get_state(), json.dumps(data_rng.bit_generator.state)), ranks)
        if not ranks.main:
            return
        S0_t = torch.as_tensor(S0, dtype=torch.float64)
        resume_state = {
            "config": json.dumps(config.to_dict()), "S0": S0_t, "step": step, "model": net.state_dict(),
            "ema": ema.state_dict(), "optimizer": opt.state_dict(), "lr_schedule": warm.state_dict(),
            "torch_rng": gen.get_state(), "data_rng": json.dumps(data_rng.bit_generator.state),
        }
        if ranks.world > 1:
            resume_state.update({"world": ranks.world, "rank_torch_rng": [t for t, _ in rng_states],
                                 "rank_data_rng": [d for _, d in rng_states]})
        checkpoint.atomic_save(resume_state, run / checkpoint.RESUME_FILE)
        checkpoint.atomic_save({"config": json.dumps(config.to_dict()), "S0": S0_t, "step": step,
                                "ema": ema.module.state_dict()}, run / checkpoint.USE_FILE)

    # ---- loop ---------------------------------------------------------------------------- #
    n_params = sum(p.numel() for p in net.parameters())
    log(f"training {config.net['name']} U-Net ({n_params:,} parameters) on {len(dataset)} samples "
        f"of {config.channels}x{config.H}x{config.W}, device {device}, steps {step} -> {settings.steps}"
        + (f", {ranks.world} processes of batch {batch}" if ranks.world > 1 else ""))
    bar = tqdm(total=settings.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    window_loss, window_t, window_n = 0.0, time.perf_counter(), 0
    record = {}
    net.train()
    with _deferred_interrupt() as interrupted:
        while step < settings.steps:
            idx = data_rng.integers(0, len(dataset), batch)
            x0 = torch.from_numpy(dataset.get(idx))
            if settings.augment:
                x0 = dataset.augment(x0, gen)
            n = draw_steps(settings.n_sampling, n_sr, process.N, len(idx), gen)
            loss = objective(model, process, x0.to(device), gen, n).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
            opt.step()
            warm.step()
            ema.update_parameters(net)
            step += 1
            window_loss += loss.item()
            window_n += 1
            if step % settings.log_every == 0 or step == settings.steps:
                dt = time.perf_counter() - window_t
                record = {"step": step, "loss": ddp.mean(window_loss / window_n, ranks),
                          "lr": opt.param_groups[0]["lr"],
                          "samples_per_s": window_n * settings.batch / max(dt, 1e-9), "time": time.time()}
                if ranks.main:
                    checkpoint.append_log(run, record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
                window_loss, window_t, window_n = 0.0, time.perf_counter(), 0
            if validate is not None and (step % settings.val_every == 0 or step == settings.steps):
                t_val = time.perf_counter()
                checkpoint.append_log(run, {"step": step, **validate(ema.module), "time": time.time()})
                window_t += time.perf_counter() - t_val  # not counted in the training throughput
            stop = ddp.any_rank(interrupted(), ranks)
            if step % settings.checkpoint_every == 0 or step == settings.steps or stop:
                save()
            bar.update(1)
            if stop:
                bar.close()
                raise KeyboardInterrupt
    bar.close()
    return record


def _last_loss_record(run) -> dict:
    """The last training-loss line of RUN/log.jsonl ({} if there is none)."""
    return next((r for r in reversed(checkpoint.read_log(run)) if "loss" in r), {})


def _start_step(process, resolution: float, fallback: int) -> int:
    """The schedule's step of effective resolution `resolution`, or `fallback` where it has none."""
    try:
        return process.schedule.start_step(resolution)
    except (ValueError, KeyError, TypeError):
        return fallback


def sr_range(config: RunConfig, process) -> int:
    """Largest step a super-resolution chain of the run's factor starts from (N for SR3, which starts there)."""
    if config.model != "skild":
        return process.N
    return _start_step(process, config.H / config.factor, process.N)


def octave_start(config: RunConfig, process) -> int:
    """Step where a super-resolution chain of the run's factor has resolved its first octave
    (resolution 2H/factor): the start step of half the factor, 0 where that is the full size."""
    if config.model != "skild" or 2 * config.H / config.factor >= config.H:
        return 0
    return _start_step(process, 2 * config.H / config.factor, 0)


def draw_steps(mode: str, n_sr: int, N: int, batch: int, gen: torch.Generator) -> torch.Tensor | None:
    """Steps n of one batch's loss: None (the process draws n ~ U{1..N}) for "uniform"; for "sr",
    n ~ U{1..n_sr} with probability SR_SHARE and U{1..N} otherwise, so the steps every
    super-resolution chain of the training factor runs through get most of the training while
    the generation range keeps a quarter of it."""
    if mode == "uniform":
        return None
    sr = torch.rand(batch, generator=gen) < SR_SHARE
    low = torch.randint(1, n_sr + 1, (batch,), generator=gen)
    full = torch.randint(1, N + 1, (batch,), generator=gen)
    return torch.where(sr, low, full)


def validation(dataset, process, objective, settings: TrainSettings, device):
    """A fixed validation problem, or None without --val-data: net -> record of per-bin losses.

    The first `val_samples` configurations of the held-out store and of the training set, each
    noised once in each of VAL_BINS equal bins of n with draws fixed by the run's seed, so
    every evaluation sees the same (x0, n, ε) and the curves are comparable across steps and
    runs.  Recorded: the held-out loss per bin and overall, the training-set loss per bin (the
    same network and draws: a gap is over-fitting), and the loss of the exact denoiser for
    Gaussian data of spectrum S0 (what the spectrum alone explains).
    """
    if settings.val_data is None:
        return None
    from skild_phys.data.adapters import open_dataset
    from skild_phys.process.diffusion import gaussian_denoiser

    held = open_dataset(settings.val_data)
    if (held.channels, held.height, held.width) != (dataset.channels, dataset.height, dataset.width):
        raise InputError(f"--val-data {settings.val_data} holds {held.channels}x{held.height}x{held.width} samples, "
                         f"the training data {dataset.channels}x{dataset.height}x{dataset.width}")
    sets = {name: torch.from_numpy(data.get(np.arange(min(settings.val_samples, len(data))))).to(device)
            for name, data in (("val", held), ("train", dataset))}
    edges = np.rint(np.linspace(1, process.N + 1, VAL_BINS + 1)).astype(int)
    rng = np.random.Generator(np.random.PCG64([settings.seed, 7919]))
    n_draws = [rng.integers(lo, hi, size=settings.val_samples) for lo, hi in zip(edges[:-1], edges[1:])]

    def per_bin(loss_fn, x0):
        out = []
        for b, n in enumerate(n_draws):
            g = torch.Generator().manual_seed(settings.seed * VAL_BINS + b)
            out.append(float(loss_fn(x0, g, torch.as_tensor(n[:len(x0)], device=device)).mean()))
        return out

    with torch.no_grad():
        floor = per_bin(lambda x0, g, n: process.loss(gaussian_denoiser(process), x0.to(torch.float64), g, n),
                        sets["val"])

    def record(net) -> dict:
        net.eval()
        with torch.no_grad():
            bins = {name: per_bin(lambda x0, g, n: objective(net, process, x0, g, n), x0) for name, x0 in sets.items()}
        return {"val_loss": float(np.mean(bins["val"])), "val_loss_bins": bins["val"],
                "train_loss_bins": bins["train"], "val_floor_bins": floor, "val_bin_edges": edges.tolist()}

    return record


def _rank_rng_states(art: dict, ranks: ddp.Ranks):
    """(torch RNG state, data RNG state as JSON) of this rank from a resume artifact."""
    world = int(art.get("world", 1))
    if world != ranks.world:
        raise InputError(f"cannot resume: the run was trained by {world} process(es), not {ranks.world}; "
                         f"resume it with the same number")
    if world == 1:
        return art["torch_rng"], art["data_rng"]
    return art["rank_torch_rng"][ranks.rank], art["rank_data_rng"][ranks.rank]


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C into a flag checked between steps, so the saved state is always a whole step."""
    hit = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)
