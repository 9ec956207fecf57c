"""The one sampling driver: reverse chains from a `StartSpec`, batch by batch, into an output sink.

Generation and super-resolution, lattices and images, all run here; they differ in the start
(skild_phys.methods.starts) and in the sink that receives each batch of final samples (a
configuration store in skild_phys.sampling.lattice, PNG files in skild_phys.sampling.images).
Every sample has its own seed, derived from (seed, index) only, so a sample does not depend on
the batch it was drawn in, and a sink that records how far it got resumes sample-exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from skild_base.errors import InputError
from skild_phys.methods.skild import TrainedModel
from skild_phys.methods.starts import StartSpec
from skild_phys.process.diffusion import per_sample_generators, respaced_steps
from skild_phys.sampling.samplers import placed_steps, sample_chain


MEMORY_SHARE = 0.5  # of the free device memory (CUDA) or available RAM (CPU) that one batch may hold
CHAIN_COPIES = 8  # float64 copies of the state a reverse step holds at once (x, ε̂, x̂0, mean, noise, ...)


class Sink(Protocol):
    """Receives the final samples of each batch: indices, their seeds, x (B, C, H, W) in pixels, float64."""

    def write(self, idx: np.ndarray, seeds: list[int], x: torch.Tensor) -> None: ...


def sample_seeds(seed: int, indices) -> list[int]:
    """Per-sample 63-bit seeds derived from (seed, sample index) only."""
    out = []
    for i in np.asarray(indices):
        words = np.random.SeedSequence(seed, spawn_key=(int(i),)).generate_state(2, dtype=np.uint32)
        out.append(int((int(words[0]) << 31) ^ int(words[1])) & (2**63 - 1))
    return out


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


def drive(model: TrainedModel, start: StartSpec, indices, chain_steps: list[int], sink: Sink, seed: int = 0,
          batch: int = 16, variance: str = "posterior", sampler: str = "ancestral", eta: float = 0.0,
          total: int | None = None, progress: bool = True, unit: str = "sample", log=None) -> None:
    """Run the chains of `indices` (in order) into `sink`, with a progress bar over `total` samples."""
    indices = np.asarray(indices)
    total = len(indices) if total is None else total
    if len(indices):
        capped = memory_batch(batch, per_sample_bytes(model, start, indices[:1], chain_steps[0]), model.device)
        if capped < batch and log is not None:
            log(f"running {capped} samples at a time (--batch {batch} would not fit the free memory)")
        batch = capped
    with tqdm(total=total, initial=total - len(indices), unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        for idx, seeds, x in final_samples(model, start, indices, chain_steps, seed, batch, variance, sampler, eta):
            sink.write(idx, seeds, x)
            bar.update(len(idx))


def per_sample_bytes(model: TrainedModel, start: StartSpec, idx, n: int) -> int:
    """Bytes one sample occupies in a reverse step, at most: every module output of one network
    forward on a batch of one (measured with forward hooks) plus the chain's float64 state copies.
    An upper bound: under no_grad most activations are freed before the next ones exist."""
    C, H, W = model.config.channels, model.process.basis.H, model.process.basis.W
    total = [CHAIN_COPIES * 8 * C * H * W]
    net = getattr(model.net, "_orig_mod", model.net)  # a compiled network is probed uncompiled

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in net.modules()] if isinstance(net, torch.nn.Module) else []
    try:
        with torch.no_grad():
            cond = None if start.cond is None else start.cond(idx)
            x = torch.zeros((1, C, H, W), dtype=torch.float64, device=model.device)
            dataclasses.replace(model, net=net).eps_hat(x, torch.full((1,), n, device=model.device), cond)
    finally:
        for hook in hooks:
            hook.remove()
    return int(total[0])


def free_memory(device: torch.device) -> int | None:
    """Bytes a batch may still use: on CUDA the free device memory plus what torch holds in reserve
    unused; on the CPU MemAvailable, within the cgroup's memory limit; None where unknown."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:")))
        available *= 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
            if limit.isdigit() and usage.isdigit():
                available = min(available, max(int(limit) - int(usage), 0))
            break
        except OSError:
            continue
    return available


def memory_batch(batch: int, sample_bytes: int, device: torch.device, budget: int | None = None) -> int:
    """The batch actually run: `batch`, capped so that batch × sample_bytes fits MEMORY_SHARE of the free
    memory (or `budget` bytes).  Samples do not depend on the batch, so the cap changes no result."""
    if budget is None:
        free = free_memory(device)
        budget = None if free is None else int(MEMORY_SHARE * free)
    if budget is None or sample_bytes <= 0:
        return batch
    return max(1, min(batch, budget // sample_bytes))
