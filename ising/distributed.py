"""Simulation ensembles on Dask distributed: chain groups as tasks, one writer per block of chunks.

`run_simulation` keeps the protocol (pooled measurements, block order, resume file); this
engine only moves the per-chain steps to workers, so the store is the one the embedded run
writes for the same seed.

- Chains are split into contiguous groups, one task per group and step.  A task gets its
  group's state as an argument and returns the advanced state, so a task lost with its
  worker is rerun elsewhere from its own inputs, with the same result.
- Samples interleave the chains (sample = round * chains + chain), so every chunk holds
  samples of every group.  Groups therefore do not write: one write task per block joins the
  groups' records and writes that block, a region of whole `spins` chunks.  Write tasks run
  in block order (each waits for the previous one, since neighbouring blocks share chunks of
  the per-sample arrays) while the next block is computed.
- The driver saves `_resume.npz` once a block's write has finished, in block order.
"""

from __future__ import annotations

import contextlib
import operator

import numba
import numpy as np

from ising import store
from ising.simulate import Chains, SimulationParams, advance_chains, write_block
from skild_base.errors import InputError

# Spins flipped per task and block: about one second of one core (docs/sampler.md), long
# enough to hide the scheduler's per-task cost of a few milliseconds.
TASK_FLIPS = 10**8
CONNECT_TIMEOUT = 30  # seconds to reach a scheduler and see its first worker


def _run_step(step, chains: Chains, threads: int, *args):
    """Apply a per-chain step on a worker; returns (advanced chains, step result)."""
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # a task never changes its inputs, so a rerun after a lost worker starts from the same state
    chains = Chains(chains.spins.copy(), chains.states.copy(), chains.flips.copy())
    return chains, step(chains, *args)


def _write(root, p: SimulationParams, first_round: int, group_records: list[dict], previous) -> int:
    """Join the groups' records of one block and store them; returns the spins flipped in the block."""
    records = {k: np.concatenate([r[k] for r in group_records], axis=1) for k in group_records[0]}
    write_block(root, p, first_round, records)
    return int(records["flips"].sum())


class DaskChains:
    """Engine for `run_simulation(..., engine=...)`: the chains' steps as tasks on a Dask cluster."""

    def __init__(self, client, chains: Chains, threads: int = 1, task_flips: int = TASK_FLIPS):
        self.client = client
        self.threads = threads
        self.task_flips = task_flips
        slots = sum(client.nthreads().values())
        self.groups = chains.split(max(1, min(len(chains.flips), slots)))

    @property
    def chains(self) -> Chains:
        """The current state of all chains."""
        return Chains.join(self.groups)

    def _submit(self, step, *args) -> list:
        return [self.client.submit(_run_step, step, group, self.threads, *args, pure=False) for group in self.groups]

    def _gather_groups(self, futures) -> None:
        self.groups = self.client.gather([self.client.submit(operator.getitem, f, 0) for f in futures])

    def map(self, step, *args) -> list:
        """Apply a per-chain step to every group on the cluster; one result per group."""
        done = self.client.gather(self._submit(step, *args))
        self.groups = [chains for chains, _ in done]
        return [result for _, result in done]

    def block_rounds(self, p: SimulationParams) -> int:
        """Rounds per block: whole chunks, about task_flips spin flips for the largest group."""
        chunk = store.chunk_rounds(p.L, p.chains)
        largest = max(len(g.flips) for g in self.groups)
        flips_per_chunk = largest * chunk * p.sweeps_between * p.L * p.L
        return chunk * max(1, int(self.task_flips // flips_per_chunk))

    def sample(self, root, p: SimulationParams, rounds_done: int, total_rounds: int, threshold, n_between: int):
        """Advance and store blocks; yields (rounds done, chains after, spins flipped) per stored block, in order."""
        block = self.block_rounds(p)
        pending = None  # (rounds done after the block, chains after it, its write task)
        write = None
        while rounds_done < total_rounds:
            n_rounds = min(block, total_rounds - rounds_done)
            futures = self._submit(advance_chains, threshold, n_between, p.J, n_rounds)
            records = [self.client.submit(operator.getitem, f, 1) for f in futures]
            write = self.client.submit(_write, root, p, rounds_done, records, write, pure=False)
            if pending is not None:  # the previous block is written while this one is computed
                yield pending[0], pending[1], pending[2].result()
            self._gather_groups(futures)
            rounds_done += n_rounds
            pending = (rounds_done, self.chains, write)
        if pending is not None:
            yield pending[0], pending[1], pending[2].result()


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, bind: str = "127.0.0.1"):
    """A Dask client: a LocalCluster of `workers` single-threaded processes listening on `bind`
    (loopback by default), or the existing cluster at `scheduler` (tcp://HOST:PORT)."""
    from dask.distributed import Client, LocalCluster

    if (workers is None) == (scheduler is None):
        raise InputError("give exactly one of --workers (a local cluster) or --scheduler (an existing one)")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise InputError(f"cannot use the Dask scheduler at {scheduler}: {err}") from None
        with client:
            yield client
        return
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    # the scheduler's health endpoint takes a free port on `bind`, not 8787 on every interface
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=bind, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": f"{bind}:0"}) as cluster, Client(cluster) as client:
        yield client
