"""Data-parallel training under torchrun (PyTorch DDP): ranks, per-rank streams, collectives.

`torchrun --nproc-per-node N -m skild_phys train ...` starts N copies of the command with
RANK, WORLD_SIZE and LOCAL_RANK set; `init_from_env` joins them into one process group (nccl
on GPUs, gloo on CPUs).  --batch stays the global batch: each rank draws batch / N samples
from its own data and noise streams, seeded from (run seed, rank), and DDP averages the
gradients, so one step sees the same number of samples at any N.  Only rank 0 writes
checkpoints and logs.  In a single process every function here is the identity.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from skild_base.errors import InputError
from skild_phys.methods.skild import pick_device


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: rank, world size and rank on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this rank writes checkpoints, logs and progress."""
        return self.rank == 0


def current() -> Ranks:
    """The ranks of the initialised process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str) -> Ranks:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1 or dist.is_initialized():
        return current()
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(dist.destroy_process_group)
    return current()


def device(name: str, ranks: Ranks) -> torch.device:
    """The rank's device: its own GPU (LOCAL_RANK) when on CUDA."""
    dev = pick_device(name)
    if ranks.world > 1 and dev.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return dev


def rank_seed(seed: int, ranks: Ranks) -> int:
    """Seed of the rank's data and noise streams: the run seed itself in a single process."""
    if ranks.world == 1:
        return seed
    return int(np.random.SeedSequence(seed, spawn_key=(ranks.rank,)).generate_state(1, np.uint32)[0])


def rank_batch(batch: int, ranks: Ranks) -> int:
    """Samples per rank and step for a global batch."""
    if batch % ranks.world:
        raise InputError(f"--batch {batch} must be divisible by the number of processes ({ranks.world})")
    return batch // ranks.world


def wrap(net: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """The module the loss calls: DDP around `net` (gradients averaged over ranks), or `net` itself."""
    if ranks.world == 1:
        return net
    ids = [net_device.index] if (net_device := next(net.parameters()).device).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)


def mean(value: float, ranks: Ranks) -> float:
    """The mean of a number over ranks."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t) / ranks.world


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether the flag is set on any rank (all ranks must stop at the same step)."""
    if ranks.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def gather(obj, ranks: Ranks) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if ranks.world == 1:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def first_error(error: InputError | None, ranks: Ranks) -> None:
    """Raise rank 0's input error on every rank, so all ranks stop with the same sentence."""
    if ranks.world > 1:
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        error = None if box[0] is None else InputError(box[0])
    if error is not None:
        raise error


def main_first(fn, ranks: Ranks):
    """fn() run by rank 0 alone (creating the run directory, say); its result, or its input error, on every rank."""
    result, error = None, None
    if ranks.main:
        try:
            result = fn()
        except InputError as err:
            error = err
    first_error(error, ranks)
    return gather(result, ranks)[0]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
