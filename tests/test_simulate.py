"""The Wolff sampler's ensembles against exact results, determinism, resume, and CLI errors."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy import stats

from analysis.stats import tau_int
from ising import exact, store
from ising.simulate import SimulationParams, run_simulation
from ising.summary import summarize, thermo_moments
from skild_phys.cli import main

N_SIGMA = 4.0


def _moments(path):
    ds = store.open_store(path)
    a = ds.attrs
    block_min = int(np.ceil(2 * a["tau_int_samples"])) * a["chains"]
    return thermo_moments(ds.energy.values, ds.magnetization.values, a["L"], a["beta"], block_min)


def test_store_layout(ising_L4):
    ds = xr.open_zarr(ising_L4)
    assert ds.spins.dims == ("sample", "y", "x") and ds.spins.dtype == np.int8
    assert set(np.unique(ds.spins.values[:100])) == {-1, 1}
    assert ds.sizes == {"sample": 40000, "y": 4, "x": 4}
    for name in ("energy", "magnetization", "chain", "sweep"):
        assert ds[name].dims == ("sample",)
    for key in ("L", "beta", "J", "boundary", "algorithm", "seed", "tau_int_e", "tau_int_absm",
                "tau_int_samples", "updates_between", "skild_phys_version", "created"):
        assert key in ds.attrs
    assert ds.attrs["complete"] is True
    # stored energies and magnetisations are those of the stored spins
    s = ds.spins.values[:500].astype(np.int64)
    e = -(s * (np.roll(s, -1, 1) + np.roll(s, -1, 2))).sum(axis=(1, 2)) / 16
    np.testing.assert_allclose(ds.energy.values[:500], e)
    np.testing.assert_allclose(ds.magnetization.values[:500], s.mean(axis=(1, 2)))
    np.testing.assert_array_equal(ds.chain.values[:16], np.tile(np.arange(8), 2))


def test_L4_moments_match_exact_enumeration(ising_L4):
    ex = exact.exact_moments(4, exact.BETA_C)
    got = _moments(ising_L4)
    for key in ("e", "abs_m", "m2", "m4", "binder", "specific_heat"):
        value, err = got[key]
        assert abs(value - ex[key]) < N_SIGMA * err, (key, value, err, ex[key])


def test_L4_energy_histogram_chi2(ising_L4):
    ds = store.open_store(ising_L4)
    E = np.rint(ds.energy.values * 16).astype(int)
    levels, p = exact.energy_distribution(4, exact.BETA_C)
    counts = np.array([(E == level).sum() for level in levels])
    assert counts.sum() == E.size  # no sample outside the exact spectrum
    expected = p * E.size
    # merge rare levels (expected < 5) into one bin so the chi^2 approximation holds
    rare = expected < 5
    obs = np.append(counts[~rare], counts[rare].sum())
    exp = np.append(expected[~rare], expected[rare].sum())
    chi2 = ((obs - exp) ** 2 / exp).sum()
    # autocorrelated samples inflate chi^2 by ~2 tau_int of the series (in samples per chain)
    chains = ds.attrs["chains"]
    tau = tau_int(ds.energy.values.reshape(-1, chains).T)[0]
    p_value = stats.chi2.sf(chi2 / max(1.0, 2 * tau), df=len(obs) - 1)
    assert p_value > 1e-4, (chi2, tau, p_value)


@pytest.mark.parametrize("L,beta", [(16, exact.BETA_C), (32, exact.BETA_C), (16, 0.35), (24, 0.5)])
def test_energy_matches_kaufman(make_store, L, beta):
    path = make_store(f"kaufman_{L}_{beta}", L=L, n_samples=8000, chains=8, seed=L, beta=beta)
    value, err = _moments(path)["e"]
    e_exact = exact.kaufman_energy(L, beta)
    assert abs(value - e_exact) < N_SIGMA * err, (value, err, e_exact)
    assert err < 5e-3  # the check has teeth


def test_identical_for_one_and_two_threads(make_store):
    a = make_store("threads1", threads=1, L=12, n_samples=3000, chains=5, seed=3)
    b = make_store("threads2", threads=2, L=12, n_samples=3000, chains=5, seed=3)
    da, db = xr.open_zarr(a), xr.open_zarr(b)
    for name in ("spins", "energy", "magnetization", "chain", "sweep"):
        np.testing.assert_array_equal(da[name].values, db[name].values)
    assert da.attrs["updates_between"] == db.attrs["updates_between"]


def test_seed_changes_data(make_store):
    a = make_store("seedA", L=8, n_samples=200, chains=2, seed=1)
    b = make_store("seedB", L=8, n_samples=200, chains=2, seed=2)
    assert not np.array_equal(xr.open_zarr(a).spins.values, xr.open_zarr(b).spins.values)


def test_killed_and_resumed_equals_uninterrupted(tmp_path, make_store):
    args = dict(L=64, n_samples=24000, chains=8, seed=5)
    reference = make_store("resume_reference", **args)
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "skild_phys", "simulate", "--L", "64", "--samples", "24000", "--chains", "8",
           "--seed", "5", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume_file = out / store.RESUME_FILE
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        state = store.load_resume(out) if resume_file.exists() else None
        if state is not None and int(state["rounds_done"]) > 0:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not store.read_attrs(out).get("complete"), "the run finished before it could be killed"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    ra, rb = xr.open_zarr(reference), xr.open_zarr(out)
    for name in ("spins", "energy", "magnetization", "chain", "sweep"):
        np.testing.assert_array_equal(ra[name].values, rb[name].values)
    assert not resume_file.exists()


def test_rerun_of_complete_store_does_nothing(make_store):
    path = make_store("rerun", L=6, n_samples=100, chains=2, seed=9)
    before = store.read_attrs(path)
    attrs = run_simulation(path, SimulationParams(L=6, n_samples=100, chains=2, seed=9), progress=False,
                           log=lambda m: None)
    assert attrs == before


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output
    return lines[-1]


def test_cli_refuses_different_parameters_on_existing_store(make_store):
    path = make_store("cli_existing", L=6, n_samples=100, chains=2, seed=9)
    before = xr.open_zarr(path).spins.values.copy()
    msg = _one_line_error(_cli("simulate", "--L", 8, "--samples", 100, "--out", path, "--quiet"))
    assert "--overwrite" in msg
    np.testing.assert_array_equal(xr.open_zarr(path).spins.values, before)


def test_cli_overwrite_replaces_store(tmp_path):
    out = tmp_path / "o.zarr"
    assert _cli("simulate", "--L", 6, "--samples", 50, "--out", out, "--quiet").exit_code == 0
    r = _cli("simulate", "--L", 8, "--samples", 40, "--out", out, "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output
    assert xr.open_zarr(out).sizes["sample"] == 40


@pytest.mark.parametrize("args,fragment", [
    (("--L", 1), "at least 2"),
    (("--L", 8, "--beta", -0.3), "positive"),
    (("--L", 8, "--T", 0), "positive"),
    (("--L", 8, "--T", 2.0, "--beta", 0.5), "either"),
    (("--L", 8, "--samples", 0), "at least 1"),
    (("--L", 8, "--threads", 999), "threads"),
])
def test_cli_bad_parameters(tmp_path, args, fragment):
    out = tmp_path / "bad.zarr"
    msg = _one_line_error(_cli("simulate", *args, "--out", out, "--quiet"))
    assert fragment in msg
    assert not out.exists()


def test_cli_refuses_file_and_foreign_directory(tmp_path):
    f = tmp_path / "file.zarr"
    f.write_text("precious")
    assert "file" in _one_line_error(_cli("simulate", "--L", 4, "--out", f, "--quiet"))
    assert f.read_text() == "precious"
    d = tmp_path / "notes"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    assert "did not write" in _one_line_error(_cli("simulate", "--L", 4, "--out", d, "--quiet", "--overwrite"))
    assert (d / "keep.txt").read_text() == "precious"


def test_cli_unwritable_location(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory is needed")
    assert "cannot create" in _one_line_error(_cli("simulate", "--L", 4, "--out", blocker / "x.zarr", "--quiet"))
    assert blocker.read_text() == "a file where a directory is needed"


def test_info_reports_exact_comparison(ising_L4):
    s = summarize(ising_L4)
    assert s["exact_source"] == "exact enumeration"
    assert abs(s["deviation_sigma"]["e"]) < N_SIGMA
    r = _cli("info", ising_L4)
    assert r.exit_code == 0, r.output
    assert "binder" in r.output and "sigma" in r.output


def test_info_on_missing_store(tmp_path):
    assert "does not exist" in _one_line_error(_cli("info", tmp_path / "nope.zarr"))
