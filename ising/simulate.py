"""Critical Ising ensembles: thermalise, measure, then save on a schedule fixed in advance.

Protocol per run (every step depends only on the seed and the parameters):
1. Thermalise each chain for `thermalize` sweeps (a sweep = L^2 flipped spins).
2. Measure: 400 records of e and |m| per chain, spaced ~1/4 sweep by a fixed number of
   cluster updates; gives the mean cluster size and tau_int (in sweeps) of e and |m|.
3. Sample: rounds of exactly `updates_between` cluster updates (~ sweeps_between sweeps,
   from the measured mean cluster size), each round saving one configuration per chain.
   Stopping "once S L^2 spins have flipped" would depend on the state and bias the ensemble.

The steps act on each chain alone (`thermalize_chains`, `record_chains`, `advance_chains`).
An engine runs them — `LocalChains` in this process, `ising.distributed.DaskChains` on a
cluster — and `run_simulation` pools their results and keeps the store and its resume file,
so the stored data never depend on where the chains ran.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import numba
import numpy as np
import zarr
from tqdm.auto import tqdm

from analysis.stats import tau_int
from ising import store, wolff
from ising.exact import BETA_C, p_add
from ising.model import ISING
from ising.rng import chain_states, probability_threshold
from skild_base import __version__, outputs
from skild_base.errors import InputError

TAU_RECORDS = 400  # records per chain in the measurement phase
TAU_SPACING = 0.25  # sweeps between measurement records


@dataclass(frozen=True)
class SimulationParams:
    """Everything that determines a run's stored data."""

    L: int
    n_samples: int
    beta: float = BETA_C
    J: float = 1.0
    chains: int = 8
    seed: int = 0
    thermalize: float = 200.0
    sweeps_between: float = 2.0

    def validate(self) -> None:
        """Raise InputError for parameters that cannot describe a run."""
        if self.L < 2:
            raise InputError(f"lattice size L must be at least 2, got {self.L}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise InputError(f"inverse temperature beta must be positive and finite, got {self.beta}")
        if not (math.isfinite(self.J) and self.J > 0):
            raise InputError(f"coupling J must be positive (ferromagnet), got {self.J}")
        if self.n_samples < 1:
            raise InputError(f"number of samples must be at least 1, got {self.n_samples}")
        if self.chains < 1:
            raise InputError(f"number of chains must be at least 1, got {self.chains}")
        if self.seed < 0:
            raise InputError(f"seed must be non-negative, got {self.seed}")
        if not (self.thermalize >= 0):
            raise InputError(f"thermalisation must be >= 0 sweeps, got {self.thermalize}")
        if not (self.sweeps_between > 0):
            raise InputError(f"sweeps between samples must be positive, got {self.sweeps_between}")

    def as_json(self) -> dict:
        """The parameters as stored in (and compared against) a store's attributes."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class Chains:
    """A group of Markov chains: lattices, xoshiro256** states and spins flipped since sampling began."""

    spins: np.ndarray  # int8 (C, L, L)
    states: np.ndarray  # uint64 (C, 4)
    flips: np.ndarray  # int64 (C,)

    def split(self, n_groups: int) -> list[Chains]:
        """Contiguous groups of chains (copies), as even in size as possible."""
        edges = np.cumsum([0] + [len(g) for g in np.array_split(self.flips, n_groups)])
        return [Chains(self.spins[a:b].copy(), self.states[a:b].copy(), self.flips[a:b].copy())
                for a, b in zip(edges[:-1], edges[1:]) if b > a]

    @staticmethod
    def join(groups: list[Chains]) -> Chains:
        """The chains of consecutive groups as one group."""
        return Chains(np.concatenate([g.spins for g in groups]), np.concatenate([g.states for g in groups]),
                      np.concatenate([g.flips for g in groups]))


# Steps acting on each chain alone: any grouping of chains gives the same data.

def thermalize_chains(chains: Chains, threshold, target_flips: int):
    """Step 1: per-chain (late_updates, late_flips) of the thermalisation's second half."""
    _, late_updates, late_flips = wolff.thermalize(chains.spins, chains.states, threshold, target_flips)
    return late_updates, late_flips


def record_chains(chains: Chains, threshold, every: int, J: float):
    """Step 2: TAU_RECORDS records of e, m and spins flipped, (TAU_RECORDS, C), `every` updates apart."""
    C, L = chains.spins.shape[0], chains.spins.shape[1]
    e = np.empty((TAU_RECORDS, C))
    m = np.empty((TAU_RECORDS, C))
    flips = np.empty((TAU_RECORDS, C), dtype=np.int64)
    wolff.run_rounds(chains.spins, chains.states, threshold, every, J, np.empty((0, C, L, L), np.int8), e, m, flips)
    return e, m, flips


def advance_chains(chains: Chains, threshold, n_between: int, J: float, n_rounds: int) -> dict:
    """Step 3: n_rounds saved rounds of every chain; records (n_rounds, C, ...) incl. chain time `sweep`."""
    C, L = chains.spins.shape[0], chains.spins.shape[1]
    out = {"spins": np.empty((n_rounds, C, L, L), dtype=np.int8), "energy": np.empty((n_rounds, C)),
           "magnetization": np.empty((n_rounds, C)), "flips": np.empty((n_rounds, C), dtype=np.int64)}
    wolff.run_rounds(chains.spins, chains.states, threshold, n_between, J,
                     out["spins"], out["energy"], out["magnetization"], out["flips"])
    out["sweep"] = (chains.flips[None, :] + np.cumsum(out["flips"], axis=0)) / (L * L)  # sampling-phase chain time
    chains.flips = chains.flips + out["flips"].sum(axis=0)
    return out


def write_block(root: zarr.Group, p: SimulationParams, first_round: int, records: dict) -> None:
    """Store a block of rounds of all chains at its place in sample order (sample = round * chains + chain)."""
    n_rounds, C = records["energy"].shape
    start = first_round * C
    n = min(start + n_rounds * C, p.n_samples) - start
    store.write_samples(root, start, {
        "spins": records["spins"].reshape(-1, p.L, p.L)[:n], "energy": records["energy"].reshape(-1)[:n],
        "magnetization": records["magnetization"].reshape(-1)[:n],
        "chain": np.tile(np.arange(C, dtype=np.int32), n_rounds)[:n], "sweep": records["sweep"].reshape(-1)[:n]})


class LocalChains:
    """The embedded engine: every chain in this process, advanced one chunk of rounds at a time."""

    def __init__(self, chains: Chains):
        self.chains = chains

    def map(self, step, *args) -> list:
        """Apply a per-chain step to every chain; one result per group (here one group)."""
        return [step(self.chains, *args)]

    def sample(self, root, p: SimulationParams, rounds_done: int, total_rounds: int, threshold, n_between: int):
        """Advance and store blocks in order; yields (rounds done, chains after, spins flipped) per stored block."""
        block = store.chunk_rounds(p.L, p.chains)
        while rounds_done < total_rounds:
            n_rounds = min(block, total_rounds - rounds_done)
            records = advance_chains(self.chains, threshold, n_between, p.J, n_rounds)
            write_block(root, p, rounds_done, records)
            rounds_done += n_rounds
            yield rounds_done, self.chains, int(records["flips"].sum())


def _measure(engine, threshold, p: SimulationParams) -> dict:
    """Thermalise and measure cluster size and autocorrelation times (steps 1 and 2), pooled over all chains."""
    L2 = p.L * p.L
    late = engine.map(thermalize_chains, threshold, int(math.ceil(p.thermalize * L2)))
    late_updates = np.concatenate([u for u, _ in late])
    late_flips = np.concatenate([f for _, f in late])
    cluster1 = late_flips.sum() / late_updates.sum() if late_updates.sum() else 1.0
    every = max(1, int(round(TAU_SPACING * L2 / cluster1)))
    records = engine.map(record_chains, threshold, every, p.J)
    e = np.concatenate([r[0] for r in records], axis=1)
    m = np.concatenate([r[1] for r in records], axis=1)
    flips = np.concatenate([r[2] for r in records], axis=1)
    mean_cluster = flips.sum() / (every * TAU_RECORDS * p.chains)
    record_sweeps = every * mean_cluster / L2
    tau_e = tau_int(e.T)[0] * record_sweeps
    tau_m = tau_int(np.abs(m).T)[0] * record_sweeps
    updates_between = max(1, int(round(p.sweeps_between * L2 / mean_cluster)))
    return {
        "mean_cluster_size": float(mean_cluster),
        "updates_between": updates_between,
        "sweeps_between_measured": float(updates_between * mean_cluster / L2),
        "tau_int_e": float(tau_e),
        "tau_int_absm": float(tau_m),
    }


def _initial_state(p: SimulationParams) -> Chains:
    """Hot start lattices and per-chain RNG states, all from the seed."""
    states = chain_states(p.seed, p.chains)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(p.seed, spawn_key=(2**31,))))
    spins = ISING.random_states(rng, (p.chains, p.L, p.L))
    return Chains(spins, states, np.zeros(p.chains, dtype=np.int64))


def _store_attrs(p: SimulationParams) -> dict:
    return {
        "model": "ising2d",
        "L": p.L,
        "beta": p.beta,
        "T": 1.0 / p.beta,
        "J": p.J,
        "boundary": "periodic",
        "algorithm": "wolff single-cluster, numba, xoshiro256** per chain",
        "seed": p.seed,
        "chains": p.chains,
        "thermalize_sweeps": p.thermalize,
        "sweeps_between": p.sweeps_between,
        "decorrelation_rule": "fixed number of cluster updates between saves (updates_between), set from the measured mean cluster size",
        "params": p.as_json(),
        "skild_phys_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
    }


def _saved_series_tau(path, p: SimulationParams) -> float:
    """tau_int of e and |m| along each chain's saved series, in rounds (the larger of the two)."""
    root = store.open_group(path, mode="r")
    rounds = p.n_samples // p.chains
    if rounds < 4:
        return 0.5
    n = rounds * p.chains
    e = root["energy"][:n].reshape(rounds, p.chains).T
    m = np.abs(root["magnetization"][:n]).reshape(rounds, p.chains).T
    return float(max(tau_int(e)[0], tau_int(m)[0]))


def run_simulation(path, p: SimulationParams, threads: int | None = None, overwrite: bool = False,
                   progress: bool = True, log=None, engine=None) -> dict:
    """Create (or resume) the store at `path` (a directory or fsspec URL) for parameters p; returns its attributes.

    engine(chains) runs the per-chain steps: LocalChains (default, this process) or a
    distributed one (ising.distributed.DaskChains); the stored data are the same.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    p.validate()
    if threads is not None:
        if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
            raise InputError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {threads}")
        numba.set_num_threads(threads)
    with outputs.lock(path):  # one writer per store: a second simulate on the same path is refused
        return _run_locked(path, p, overwrite, progress, log, engine)


def _run_locked(path, p: SimulationParams, overwrite: bool, progress: bool, log, engine) -> dict:
    existing = store.read_attrs(path)
    same = existing is not None and existing.get("params") == p.as_json()
    resume = None
    if same and not overwrite:
        if existing.get("complete"):
            log(f"{path} is already complete ({p.n_samples} samples); nothing to do")
            return existing
        resume = store.load_resume(path)
    if resume is None:
        # an unfinished store of the same run without resume state is rebuilt from the start
        store.prepare_path(path, overwrite=overwrite or same, kind=outputs.SIMULATION)
        store.create_spin_store(path, p.n_samples, p.L, p.chains, _store_attrs(p))

    threshold = probability_threshold(p_add(p.beta, p.J))
    root = store.open_group(path, mode="r+")
    if resume is None:
        runner = (engine or LocalChains)(_initial_state(p))
        t0 = time.perf_counter()
        measured = _measure(runner, threshold, p)
        log(f"thermalised {p.chains} chains in {time.perf_counter() - t0:.1f} s: mean cluster "
            f"{measured['mean_cluster_size']:.1f} spins, {measured['updates_between']} updates between saves, "
            f"tau_int(e) = {measured['tau_int_e']:.2f}, tau_int(|m|) = {measured['tau_int_absm']:.2f} sweeps")
        root.attrs.update(measured)
        rounds_done, state = 0, runner.chains
        store.save_resume(path, spins=state.spins, states=state.states, rounds_done=rounds_done,
                          chain_flips=state.flips)
    else:
        rounds_done = int(resume["rounds_done"])
        state = Chains(resume["spins"], resume["states"], resume["chain_flips"])
        runner = (engine or LocalChains)(state)
        measured = {k: existing[k] for k in ("mean_cluster_size", "updates_between", "sweeps_between_measured",
                                            "tau_int_e", "tau_int_absm")}
        log(f"resuming {path} at sample {min(rounds_done * p.chains, p.n_samples)} of {p.n_samples}")

    spacing = measured["sweeps_between_measured"]
    tau_max = max(measured["tau_int_e"], measured["tau_int_absm"])
    if spacing < 2 * tau_max:
        log(f"warning: samples are {spacing:.2f} sweeps apart, closer than 2 tau_int = {2 * tau_max:.2f} sweeps; "
            f"consecutive samples of a chain are correlated (raise --sweeps-between)")

    C = p.chains
    total_rounds = -(-p.n_samples // C)
    bar = tqdm(total=p.n_samples, initial=min(rounds_done * C, p.n_samples), unit="sample",
               disable=not progress, desc=f"L={p.L}", dynamic_ncols=True)
    with bar:
        t0 = time.perf_counter()
        for done, state, flipped in runner.sample(root, p, rounds_done, total_rounds, threshold,
                                                  measured["updates_between"]):
            store.save_resume(path, spins=state.spins, states=state.states, rounds_done=done, chain_flips=state.flips)
            t1 = time.perf_counter()
            bar.set_postfix_str(f"{flipped / max(t1 - t0, 1e-9):.3g} spins/s")
            bar.update(min(done * C, p.n_samples) - min(rounds_done * C, p.n_samples))
            rounds_done, t0 = done, t1

    final = {
        "complete": True,
        "tau_int_samples": _saved_series_tau(path, p),
        "spins_flipped_sampling": int(state.flips.sum()),
    }
    store.remove_resume(path)
    store.finalize(path, final)
    return store.read_attrs(path)
