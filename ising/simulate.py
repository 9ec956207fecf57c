"""Critical Ising ensembles: thermalise, measure, then save on a schedule fixed in advance.

Protocol per run (every step depends only on the seed and the parameters):
1. Thermalise each chain for `thermalize` sweeps (a sweep = L^2 flipped spins).
2. Measure: 400 records of e and |m| per chain, spaced ~1/4 sweep by a fixed number of
   cluster updates; gives the mean cluster size and tau_int (in sweeps) of e and |m|.
3. Sample: rounds of exactly `updates_between` cluster updates (~ sweeps_between sweeps,
   from the measured mean cluster size), each round saving one configuration per chain.
   Stopping "once S L^2 spins have flipped" would depend on the state and bias the ensemble.
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
from ising.rng import chain_states, probability_threshold
from skild_phys import __version__
from skild_phys.errors import InputError

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


def _measure(spins, states, threshold, p: SimulationParams) -> dict:
    """Thermalise and measure cluster size and autocorrelation times (steps 1 and 2)."""
    L2 = p.L * p.L
    _, late_updates, late_flips = wolff.thermalize(spins, states, threshold, int(math.ceil(p.thermalize * L2)))
    cluster1 = late_flips.sum() / late_updates.sum() if late_updates.sum() else 1.0
    every = max(1, int(round(TAU_SPACING * L2 / cluster1)))
    e = np.empty((TAU_RECORDS, p.chains))
    m = np.empty((TAU_RECORDS, p.chains))
    flips = np.empty((TAU_RECORDS, p.chains), dtype=np.int64)
    wolff.run_rounds(spins, states, threshold, every, p.J, np.empty((0, p.chains, p.L, p.L), np.int8), e, m, flips)
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


def _initial_state(p: SimulationParams):
    """Hot start lattices and per-chain RNG states, all from the seed."""
    states = chain_states(p.seed, p.chains)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(p.seed, spawn_key=(2**31,))))
    spins = np.where(rng.random((p.chains, p.L, p.L)) < 0.5, 1, -1).astype(np.int8)
    return spins, states


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
    root = zarr.open_group(str(path), mode="r", zarr_format=3)
    rounds = p.n_samples // p.chains
    if rounds < 4:
        return 0.5
    n = rounds * p.chains
    e = root["energy"][:n].reshape(rounds, p.chains).T
    m = np.abs(root["magnetization"][:n]).reshape(rounds, p.chains).T
    return float(max(tau_int(e)[0], tau_int(m)[0]))


def run_simulation(path, p: SimulationParams, threads: int | None = None, overwrite: bool = False,
                   progress: bool = True, log=None) -> dict:
    """Create (or resume) the store at `path` for parameters p; returns its final attributes."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    p.validate()
    if threads is not None:
        if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
            raise InputError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {threads}")
        numba.set_num_threads(threads)

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
        store.prepare_path(path, overwrite=overwrite or same)
        store.create_spin_store(path, p.n_samples, p.L, p.chains, _store_attrs(p))

    threshold = probability_threshold(p_add(p.beta, p.J))
    root = zarr.open_group(str(path), mode="r+", zarr_format=3)
    if resume is None:
        spins, states = _initial_state(p)
        t0 = time.perf_counter()
        measured = _measure(spins, states, threshold, p)
        log(f"thermalised {p.chains} chains in {time.perf_counter() - t0:.1f} s: mean cluster "
            f"{measured['mean_cluster_size']:.1f} spins, {measured['updates_between']} updates between saves, "
            f"tau_int(e) = {measured['tau_int_e']:.2f}, tau_int(|m|) = {measured['tau_int_absm']:.2f} sweeps")
        root.attrs.update(measured)
        rounds_done, chain_flips = 0, np.zeros(p.chains, dtype=np.int64)
        store.save_resume(path, spins=spins, states=states, rounds_done=rounds_done, chain_flips=chain_flips)
    else:
        spins, states = resume["spins"], resume["states"]
        rounds_done, chain_flips = int(resume["rounds_done"]), resume["chain_flips"]
        measured = {k: existing[k] for k in ("mean_cluster_size", "updates_between", "sweeps_between_measured",
                                            "tau_int_e", "tau_int_absm")}
        log(f"resuming {path} at sample {min(rounds_done * p.chains, p.n_samples)} of {p.n_samples}")

    spacing = measured["sweeps_between_measured"]
    tau_max = max(measured["tau_int_e"], measured["tau_int_absm"])
    if spacing < 2 * tau_max:
        log(f"warning: samples are {spacing:.2f} sweeps apart, closer than 2 tau_int = {2 * tau_max:.2f} sweeps; "
            f"consecutive samples of a chain are correlated (raise --sweeps-between)")

    L2, C = p.L * p.L, p.chains
    total_rounds = -(-p.n_samples // C)
    block = store.chunk_rounds(p.L, C)
    bar = tqdm(total=p.n_samples, initial=min(rounds_done * C, p.n_samples), unit="sample",
               disable=not progress, desc=f"L={p.L}", dynamic_ncols=True)
    with bar:
        while rounds_done < total_rounds:
            n_rounds = min(block, total_rounds - rounds_done)
            out_spins = np.empty((n_rounds, C, p.L, p.L), dtype=np.int8)
            out_e = np.empty((n_rounds, C))
            out_m = np.empty((n_rounds, C))
            out_flips = np.empty((n_rounds, C), dtype=np.int64)
            t0 = time.perf_counter()
            wolff.run_rounds(spins, states, threshold, measured["updates_between"], p.J,
                             out_spins, out_e, out_m, out_flips)
            dt = time.perf_counter() - t0
            start = rounds_done * C
            stop = min(start + n_rounds * C, p.n_samples)
            n = stop - start
            sweep = (chain_flips[None, :] + np.cumsum(out_flips, axis=0)) / L2  # sampling-phase chain time
            chain_flips = chain_flips + out_flips.sum(axis=0)
            store.write_samples(root, start, {
                "spins": out_spins.reshape(-1, p.L, p.L)[:n], "energy": out_e.reshape(-1)[:n],
                "magnetization": out_m.reshape(-1)[:n], "chain": np.tile(np.arange(C, dtype=np.int32), n_rounds)[:n],
                "sweep": sweep.reshape(-1)[:n]})
            rounds_done += n_rounds
            store.save_resume(path, spins=spins, states=states, rounds_done=rounds_done, chain_flips=chain_flips)
            bar.set_postfix_str(f"{out_flips.sum() / max(dt, 1e-9):.3g} spins/s")
            bar.update(n)

    final = {
        "complete": True,
        "tau_int_samples": _saved_series_tau(path, p),
        "spins_flipped_sampling": int(chain_flips.sum()),
    }
    store.remove_resume(path)
    store.finalize(path, final)
    return store.read_attrs(path)
