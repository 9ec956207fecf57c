"""The fidelity instrument: every protocol and floor in one Dataset, paired with the truth, resumable."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from skild_phys.cli import main
from skild_phys.data.adapters import LatticeStore
from skild_phys.methods.skild import resolve_config
from skild_phys.training.train import TrainSettings, prepare_run_dir, train

pytestmark = [pytest.mark.usefixtures("single_torch_thread"),
              pytest.mark.filterwarnings("ignore::analysis.observables.BlockingWarning")]


@pytest.fixture(scope="module")
def run16(tmp_path_factory, make_store):
    store = make_store("train16", L=16, n_samples=256, chains=4, seed=2)
    ds = LatticeStore(store)
    settings = TrainSettings(steps=20, batch=8, lr=1e-3, warmup=5, checkpoint_every=10, log_every=5, device="cpu")
    config, S0 = resolve_config(ds, "auto", 4, None, "tiny", None, "dct", "fit", settings, "v")
    run = prepare_run_dir(tmp_path_factory.mktemp("eval") / "run", resume=False, overwrite=False)
    train(run, ds, config, S0, progress=False, log=lambda m: None)
    return run


def _evaluate(run, truth, out, *extra):
    return CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--truth", str(truth), "--out", str(out),
                                     "--samples", "40", "--gen-samples", "20", "--steps", "4", "--batch", "16",
                                     "--device", "cpu", "--quiet", *map(str, extra)])


def test_every_protocol_and_floor_is_measured_and_paired(run16, make_store, tmp_path):
    truth = make_store("truth16", L=16, n_samples=200, chains=4, seed=21)
    out = tmp_path / "ev"
    r = _evaluate(run16, truth, out)
    assert r.exit_code == 0, r.output
    ds = xr.load_dataset(out / "fidelity.nc")
    expected = ["truth"] + [f"{who}/{p}" for p in ("marginal", "lowres", "generate")
                            for who in ("model", "gaussian", "untrained")]
    assert list(ds.source.values) == expected
    sr = [s for s in expected if s.endswith(("marginal", "lowres"))]
    assert np.isfinite(ds.kappa4_paired.sel(source=sr).values).all()  # lowres pairs through the coarse store
    assert np.isnan(ds.kappa4_paired.sel(source="model/generate").values).all()
    assert np.isfinite(ds.spectrum_ratio_paired.sel(source=sr).values).all()
    assert ds.nfe.sel(source="model/marginal") == 4 and ds.nfe.sel(source="gaussian/lowres") == 0
    # the untrained v-network outputs V = 0, i.e. the Gaussian posterior mean: the same chain as the floor
    for p in ("marginal", "lowres", "generate"):
        a, b = (xr.open_zarr(out / f"{who}_{p}.zarr").spins.values for who in ("untrained", "gaussian"))
        assert (a == b).mean() > 0.999
    assert "κ4 excess" in (out / "fidelity.md").read_text() and "seam" in r.output
    # the specific heat and susceptibility are in the tables, and C is β² N Var e of the configurations
    from ising.model import ISING
    from skild_phys.reports.evaluate import summary

    assert "| ΔC | Δχ |" in r.output and "| C | χ |" in r.output
    beta = float(xr.open_zarr(truth).attrs["beta"])
    s = summary(ds)["marginal"]
    for who, spins in (("model", xr.open_zarr(out / "model_marginal.zarr").spins.values),
                       ("its 40 truth configurations", xr.open_zarr(truth).spins.values[:40])):
        e = ISING.observables(spins.astype(np.int8))["energy"]
        got = s["specific_heat"][0] if who == "model" else s["specific_heat"][0] - s["d_specific_heat"][0]
        assert got == pytest.approx(beta**2 * 16 * 16 * e.var(), rel=1e-9), who
    # a rerun resumes: nothing is sampled again, the wall times are the recorded ones
    before = json.loads((out / "evaluation.json").read_text())
    assert _evaluate(run16, truth, out).exit_code == 0
    assert json.loads((out / "evaluation.json").read_text()) == before


def test_no_generation_leaves_out_its_sources(run16, make_store, tmp_path):
    truth = make_store("truth16", L=16, n_samples=200, chains=4, seed=21)
    out = tmp_path / "ev"
    r = _evaluate(run16, truth, out, "--gen-samples", "0", "--baseline", "gaussian")
    assert r.exit_code == 0, r.output
    ds = xr.load_dataset(out / "fidelity.nc")
    assert list(ds.source.values) == ["truth", "model/marginal", "gaussian/marginal", "model/lowres", "gaussian/lowres"]
    assert not any(out.glob("*generate*"))


def test_evaluate_refuses_what_it_did_not_make(run16, make_store, tmp_path):
    truth = make_store("truth16", L=16, n_samples=200, chains=4, seed=21)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = _evaluate(run16, truth, foreign, "--protocol", "marginal")
    assert r.exit_code == 2 and "did not write" in r.output and (foreign / "notes.txt").exists()
    out = tmp_path / "ev"
    assert _evaluate(run16, truth, out, "--protocol", "marginal", "--baseline", "none").exit_code == 0
    r = _evaluate(run16, truth, out, "--protocol", "marginal", "--baseline", "none", "--seed", "3")
    assert r.exit_code == 2 and "other settings" in r.output
    (out / "mine.txt").write_text("inside an evaluation: replaced with it")
    first = (out / "model_marginal.zarr" / "seed").exists() and xr.open_zarr(out / "model_marginal.zarr").seed.values
    r = _evaluate(run16, truth, out, "--protocol", "marginal", "--baseline", "none", "--seed", "3", "--overwrite")
    assert r.exit_code == 0 and json.loads((out / "evaluation.json").read_text())["params"]["settings"]["seed"] == 3
    assert not (out / "mine.txt").exists() and (xr.open_zarr(out / "model_marginal.zarr").seed.values != first).all()
    r = _evaluate(run16, truth, out, "--samples", "100000")
    assert r.exit_code == 2 and "exceeds" in r.output


def test_an_interrupted_evaluation_resumes(run16, make_store, tmp_path, monkeypatch):
    import skild_phys.sampling.lattice
    truth = make_store("truth16", L=16, n_samples=200, chains=4, seed=21)
    out = tmp_path / "ev"
    real = skild_phys.sampling.lattice.run_sampler

    def killed(store, *args, **kwargs):  # dies inside the first store, as a kill would
        Path(store).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("killed")

    monkeypatch.setattr(skild_phys.sampling.lattice, "run_sampler", killed)
    r = _evaluate(run16, truth, out, "--protocol", "marginal", "--baseline", "none")
    assert isinstance(r.exception, RuntimeError)
    assert (out / "evaluation.json").is_file()  # the directory is claimed before any sampling
    monkeypatch.setattr(skild_phys.sampling.lattice, "run_sampler", real)
    r = _evaluate(run16, truth, out, "--protocol", "marginal", "--baseline", "none")
    assert r.exit_code == 0, r.output
    assert np.isfinite(xr.load_dataset(out / "fidelity.nc").kappa4_paired.sel(source="model/marginal")).all()
