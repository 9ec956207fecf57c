"""Training loop: ε-prediction with the SKILD process (SPEC §4), AdamW, warm-up, clipping, EMA.

One long, linear function in sections, as in EDM's training loop.  A run directory holds the
resolved configuration, the "use" and "resume" artifacts and an append-only JSONL log.
Killed and resumed training reproduces uninterrupted training exactly: every random
stream (data order, augmentations, steps n, noise ε) is restored from the resume artifact.
Under torchrun the same loop runs data-parallel (skild_phys/ddp.py); rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from skild_phys import __version__, checkpoint, ddp
from skild_phys.errors import InputError
from skild_phys.model import (block_mean_scale, build_network, build_process, estimate_spectrum, network_denoiser,
                              resolve_schedule)
from skild_phys.unet import CONFIGS

# Settings that may change between a run and its resumption (the rest must match).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "device")


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


def resolve_config(dataset, preset: str, factor: float, k_c: float | None, net: str, periodic: bool | None,
                   basis: str, spectrum: str, settings: TrainSettings, parameterization: str = "v"):
    """The full configuration of a new run and its spectrum S0 (C, H, W)."""
    if net not in CONFIGS:
        raise InputError(f"unknown network size {net!r}; choose one of {', '.join(CONFIGS)}")
    if dataset.height != dataset.width:
        raise InputError(f"training needs square images, got {dataset.height}x{dataset.width}")
    schedule, preset_name = resolve_schedule(preset, dataset.height, factor, k_c)
    S0, spectrum_info = estimate_spectrum(dataset, spectrum)
    config = {
        "model": "skild",
        "parameterization": parameterization,
        "version": __version__,
        "H": dataset.height,
        "W": dataset.width,
        "channels": dataset.channels,
        "data_kind": dataset.kind,
        "data": {**dataset.provenance(), "block_mean_abs": block_mean_scale(dataset)},
        "preset": preset_name,
        "factor": factor,
        "schedule": schedule.to_dict(),
        "basis": basis,
        "spectrum": spectrum_info,
        "net": {"name": net, "periodic": dataset.periodic if periodic is None else periodic},
        "train": asdict(settings),
    }
    return config, S0


def _check_resumable(old: dict, new: dict) -> None:
    """Refuse to resume a run under a different configuration (except the RESUMABLE_CHANGES)."""
    a = {k: v for k, v in old.items() if k != "train"}
    b = {k: v for k, v in new.items() if k != "train"}
    ta = {k: v for k, v in old["train"].items() if k not in RESUMABLE_CHANGES}
    tb = {k: v for k, v in new["train"].items() if k not in RESUMABLE_CHANGES}
    if a != b or ta != tb:
        changed = sorted({k for k in set(a) | set(b) if a.get(k) != b.get(k)}
                         | {f"train.{k}" for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)})
        raise InputError(f"cannot resume: the run was made with different settings ({', '.join(changed)})")


def prepare_run_dir(run, resume: bool, overwrite: bool) -> Path:
    """Create RUN, or check it may be resumed/overwritten; one-sentence errors otherwise."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run} is a file; choose another --out directory")
    has_artifacts = run.is_dir() and any((run / f).exists() for f in (checkpoint.RESUME_FILE, checkpoint.USE_FILE))
    if resume:
        if not (run / checkpoint.RESUME_FILE).is_file():
            raise InputError(f"nothing to resume in {run}: no {checkpoint.RESUME_FILE}")
        return run
    if has_artifacts:
        if not overwrite:
            raise InputError(f"{run} already holds a training run; pass --resume to continue it or --overwrite")
        shutil.rmtree(run)
    elif run.is_dir() and any(run.iterdir()) and not overwrite:
        raise InputError(f"{run} is a non-empty directory; choose another --out or pass --overwrite")
    run.mkdir(parents=True, exist_ok=True)
    return run


def train(run, dataset, config: dict, S0, resume: bool = False, progress: bool = True, log=print,
          objective=None) -> dict:
    """Train (or continue) the run in RUN on `dataset`; returns the final log record.

    objective(net, process, x0, generator) -> per-sample loss; default: the SKILD ε-MSE.
    """
    settings = TrainSettings(**config["train"])
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
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(settings.warmup, 1)))
    seed = ddp.rank_seed(settings.seed, ranks)
    gen = torch.Generator().manual_seed(seed + 1)  # steps n, noise ε, augmentations
    data_rng = np.random.Generator(np.random.PCG64(seed))  # which samples form a batch
    step = 0
    if resume:
        art = checkpoint.load_resume(run)
        _check_resumable(art["config"], config)
        S0 = art["S0"]
        net.load_state_dict(art["model"])
        ema.load_state_dict(art["ema"])
        opt.load_state_dict(art["optimizer"])
        warm.load_state_dict(art["lr_schedule"])
        torch_rng, data_state = _rank_rng_states(art, ranks)
        gen.set_state(torch_rng)
        data_rng.bit_generator.state = json.loads(data_state)
        step = int(art["step"])
        log(f"resuming {run} at step {step}")
    process = build_process(config, S0).to(device)
    param = config.get("parameterization", "eps")
    objective = objective or (lambda net_, proc, x0, g: proc.loss(network_denoiser(net_, proc, param), x0, g))
    model = ddp.wrap(net, ranks)
    if ranks.main:
        checkpoint.write_json(config, run / checkpoint.CONFIG_FILE)

    def save() -> None:
        rng_states = ddp.gather((gen.get_state(), json.dumps(data_rng.bit_generator.state)), ranks)
        if not ranks.main:
            return
        S0_t = torch.as_tensor(S0, dtype=torch.float64)
        resume_state = {
            "config": json.dumps(config), "S0": S0_t, "step": step, "model": net.state_dict(),
            "ema": ema.state_dict(), "optimizer": opt.state_dict(), "lr_schedule": warm.state_dict(),
            "torch_rng": gen.get_state(), "data_rng": json.dumps(data_rng.bit_generator.state),
        }
        if ranks.world > 1:
            resume_state.update({"world": ranks.world, "rank_torch_rng": [t for t, _ in rng_states],
                                 "rank_data_rng": [d for _, d in rng_states]})
        checkpoint.atomic_save(resume_state, run / checkpoint.RESUME_FILE)
        checkpoint.atomic_save({"config": json.dumps(config), "S0": S0_t, "step": step,
                                "ema": ema.module.state_dict()}, run / checkpoint.USE_FILE)

    # ---- loop ---------------------------------------------------------------------------- #
    n_params = sum(p.numel() for p in net.parameters())
    log(f"training {config['net']['name']} U-Net ({n_params:,} parameters) on {len(dataset)} samples "
        f"of {config['channels']}x{config['H']}x{config['W']}, device {device}, steps {step} -> {settings.steps}"
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
            loss = objective(model, process, x0.to(device), gen).mean()
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
            stop = ddp.any_rank(interrupted(), ranks)
            if step % settings.checkpoint_every == 0 or step == settings.steps or stop:
                save()
            bar.update(1)
            if stop:
                bar.close()
                raise KeyboardInterrupt
    bar.close()
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
