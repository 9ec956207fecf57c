"""Shared fixtures: small Ising stores made once per test session."""

import numba
import pytest
import torch

from ising.exact import BETA_C
from ising.simulate import SimulationParams, run_simulation


@pytest.fixture(scope="session")
def make_store(tmp_path_factory):
    """Factory: make_store(name, **params) -> path of a finished store (cached per session)."""
    made = {}

    def _make(name, threads=None, **kwargs):
        if name not in made:
            kwargs.setdefault("beta", BETA_C)
            path = tmp_path_factory.mktemp("stores") / f"{name}.zarr"
            run_simulation(path, SimulationParams(**kwargs), threads=threads, progress=False, log=lambda m: None)
            made[name] = path
        return made[name]

    yield _make
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.fixture(scope="session")
def ising_L4(make_store):
    """L = 4 at beta_c, samples nearly independent (10 sweeps apart)."""
    return make_store("L4", L=4, n_samples=40000, chains=8, seed=11, sweeps_between=10.0)


@pytest.fixture
def single_torch_thread():
    """Small tensors: one intra-op thread is fastest and immune to oversubscription on shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run16(make_store, tmp_path_factory):
    """(run directory, its training store): a tiny SKILD network trained 20 steps on a small L = 16
    store, made once for the tests that need any real checkpoint (they copy it before damaging it)."""
    from click.testing import CliRunner

    from skild_phys.cli import main

    data = make_store("tiny_run16", L=16, n_samples=64, chains=2, seed=5)
    run = tmp_path_factory.mktemp("tiny_run16") / "run"
    r = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(run), "--net", "tiny", "--steps", "20",
                                  "--batch", "8", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return run, data
