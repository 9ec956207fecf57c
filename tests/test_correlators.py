"""Correlators against exact enumeration, streaming invariance, the output Dataset and the CLI."""

import json

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from analysis import observables
from analysis.correlation import pair_means
from analysis.cumulants import CORNER_TERMS
from analysis.observables import format_table
from ising import exact
from ising.measure import correlators, write_dataset
from skild_phys.cli import main
from tests.test_cumulants import joint_cumulant

N_SIGMA = 4.0


def brute_force_pairs(x):
    """Per-sample <s(i,j) s(i+r,j)>/2 + <s(i,j) s(i,j+r)>/2 with explicit loops, r = 0..L//2."""
    n, L, _ = x.shape
    out = np.zeros((n, L // 2 + 1))
    for s in range(n):
        for r in range(L // 2 + 1):
            total = 0.0
            for i in range(L):
                for j in range(L):
                    total += x[s, i, j] * x[s, (i + r) % L, j] + x[s, i, j] * x[s, i, (j + r) % L]
            out[s, r] = total / (2 * L * L)
    return out


def test_pair_kernel_matches_brute_force_twin():
    rng = np.random.default_rng(4)
    for L in (2, 3, 6, 9):
        x = 0.3 + rng.normal(size=(3, L, L))
        site, pairs = pair_means(x)
        np.testing.assert_allclose(pairs, brute_force_pairs(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(site, x.mean(axis=(1, 2)), rtol=1e-12)


# --------------------------------------------------------------------------------------
# L = 4 at beta_c against exact enumeration of all 2^16 states
# --------------------------------------------------------------------------------------


def _exact_corner_moments(L, beta, l):
    """Exact anchor-averaged means of the 15 corner products of the l x l square."""
    def products(spins):
        s = spins.astype(np.float64)
        corner = {"a": s, "b": np.roll(s, -l, axis=1), "c": np.roll(s, -l, axis=2),
                  "d": np.roll(s, (-l, -l), axis=(1, 2))}
        return np.stack([np.prod([corner[v] for v in term], axis=0).mean(axis=(1, 2)) for term in CORNER_TERMS], 1)

    return dict(zip(CORNER_TERMS, exact.exact_expectation(L, beta, products)))


def _exact_G(L, beta):
    def pairs(spins):
        s = spins.astype(np.float64)
        return np.stack([(s * (np.roll(s, -r, 1) + np.roll(s, -r, 2))).mean(axis=(1, 2)) / 2
                         for r in range(L // 2 + 1)], 1)

    return exact.exact_expectation(L, beta, pairs)  # <s> = 0 exactly, so this is connected


@pytest.fixture(scope="module")
def L4_result(ising_L4):
    return correlators([ising_L4], sizes=[1, 2], progress=False)


def test_L4_kappa4_matches_exact_enumeration(L4_result):
    ds = L4_result
    for p, l in enumerate([1, 2]):
        truth = joint_cumulant(_exact_corner_moments(4, exact.BETA_C, l))
        value, err = ds.kappa4.values[0, p], ds.kappa4_err.values[0, p]
        assert truth < 0  # Lebowitz
        assert abs(value - truth) < N_SIGMA * err, (l, value, err, truth)


def test_L4_G_and_moments_match_exact_enumeration(L4_result):
    ds = L4_result
    G = _exact_G(4, exact.BETA_C)
    assert G[0] == pytest.approx(1.0)
    np.testing.assert_array_less(np.abs(ds.G.values[0] - G), N_SIGMA * ds.G_err.values[0] + 1e-12)
    ex = exact.exact_moments(4, exact.BETA_C)
    for name in ("e", "abs_m", "m2", "m4", "binder", "specific_heat"):
        assert abs(ds[name].values[0] - ex[name]) < N_SIGMA * ds[name + "_err"].values[0], name


def test_blocks_follow_the_recorded_autocorrelation_time(ising_L4, L4_result):
    attrs = xr.open_zarr(ising_L4).attrs
    ds = L4_result
    assert ds.n_blocks.values[0] == 50
    assert ds.block_min.values[0] >= 2 * attrs["tau_int_samples"] * attrs["chains"]
    assert ds.block_min.values[0] % attrs["chains"] == 0


# --------------------------------------------------------------------------------------
# Streaming: the result depends on the data only, not on chunking, backend or dtype
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_spins():
    rng = np.random.default_rng(5)
    x = np.where(rng.random((203, 8, 8)) < 0.6, 1, -1).astype(np.int8)
    return xr.DataArray(x, dims=("sample", "y", "x"), name="spins")


def _numbers(ds):
    return {name: ds[name].values for name in ds.data_vars if ds[name].dtype.kind == "f"}


def test_chunking_and_dask_do_not_change_results(small_spins, monkeypatch, tmp_path):
    kwargs = dict(sizes=[1, 2, 3], labels=["x"], progress=False)
    ref = _numbers(correlators([small_spins], **kwargs))
    monkeypatch.setattr(observables, "READ_BYTES", 7 * 64)  # 7 samples per read
    monkeypatch.setattr(observables, "TRANSFORM_BYTES", 3 * 64 * 8)
    small = _numbers(correlators([small_spins], **kwargs))
    lazy = small_spins.copy(data=dask.array.from_array(small_spins.values, chunks=(17, 8, 8)))
    via_dask = _numbers(correlators([lazy], **kwargs))
    path = tmp_path / "spins.zarr"
    small_spins.to_dataset().chunk({"sample": 50}).to_zarr(path, zarr_format=3, consolidated=False)
    via_store = _numbers(correlators([xr.open_zarr(path, consolidated=False)], **kwargs))
    for other in (small, via_dask, via_store):
        for name in ref:
            np.testing.assert_array_equal(other[name], ref[name], err_msg=name)


def test_continuous_fields_project_to_sign(small_spins):
    rng = np.random.default_rng(6)
    field = small_spins.astype(np.float32) * rng.uniform(0.1, 2.0, size=small_spins.shape).astype(np.float32)
    field.name = "field"
    sign = correlators([small_spins, field], labels=["spins", "field"], sizes=[1, 2], progress=False)
    for name in ("kappa4", "G", "binder"):
        np.testing.assert_array_equal(sign[name].values[0], sign[name].values[1])
    raw = correlators([field], sizes=[1, 2], project="none", progress=False)
    assert not np.allclose(raw.kappa4.values[0], sign.kappa4.values[0])


# --------------------------------------------------------------------------------------
# Output Dataset, files, table
# --------------------------------------------------------------------------------------


def test_dataset_layout_and_round_trips(small_spins, tmp_path):
    ds = correlators([small_spins, small_spins * 1.0], labels=["truth", "copy"], progress=False)
    assert ds.kappa4.dims == ("source", "patch_size") and ds.G.dims == ("source", "r")
    assert ds.spectrum.dims == ("source", "k")
    assert list(ds.patch_size.values) == [1, 2] and list(ds.r.values) == list(range(5))
    assert list(ds.source.values) == ["truth", "copy"]
    for name in ("kappa4", "G", "e", "abs_m", "m2", "m4", "binder", "susceptibility", "spectrum_alpha"):
        assert name + "_err" in ds and "long_name" in ds[name].attrs
    assert json.loads(ds.attrs["config"])["sizes"] == [1, 2]
    assert np.all(observables.deviation_sigma(ds).values[1] == 0)
    assert "copy (dev. from truth)" in format_table(ds)
    for suffix in (".nc", ".zarr"):
        path = write_dataset(ds, tmp_path / f"out{suffix}")
        opts = {"engine": "netcdf4"} if suffix == ".nc" else {"engine": "zarr", "consolidated": False}
        back = xr.open_dataset(path, **opts).load()
        xr.testing.assert_identical(back, ds)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _store(path, x, name="spins", **attrs):
    ds = xr.DataArray(x, dims=("sample", "y", "x"), name=name).to_dataset()
    ds.attrs.update(attrs)
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    return str(path)


def test_cli_writes_dataset_plot_and_table(ising_L4, tmp_path):
    out, fig = tmp_path / "k4.nc", tmp_path / "k4.png"
    result = CliRunner().invoke(main, ["correlators", str(ising_L4), str(ising_L4), "--label", "truth",
                                       "--label", "again", "--sizes", "1,2", "--out", str(out),
                                       "--plot", str(fig), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "again (dev. from truth)" in result.output and "+0.0 sig" in result.output
    ds = xr.open_dataset(out)
    assert list(ds.patch_size.values) == [1, 2] and ds.sizes["source"] == 2
    assert fig.stat().st_size > 10_000
    again = CliRunner().invoke(main, ["correlators", str(ising_L4), "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_cli_rejects_bad_input_in_one_line(tmp_path):
    rng = np.random.default_rng(7)
    spins8 = _store(tmp_path / "a.zarr", np.where(rng.random((20, 8, 8)) < 0.5, 1, -1).astype(np.int8))
    spins6 = _store(tmp_path / "b.zarr", np.ones((20, 6, 6), dtype=np.int8))
    empty = _store(tmp_path / "empty.zarr", np.ones((0, 8, 8), dtype=np.int8))
    other = tmp_path / "other.zarr"
    xr.Dataset({"energy": ("sample", np.zeros(5))}).to_zarr(other, zarr_format=3, consolidated=False)
    counts = _store(tmp_path / "counts.zarr", np.full((20, 8, 8), 3, dtype=np.int8))
    unfinished = _store(tmp_path / "unfinished.zarr", np.ones((20, 8, 8), dtype=np.int8), complete=False)
    out = str(tmp_path / "o.nc")
    cases = {
        "different L": [spins8, spins6, "--out", out],
        "l >= L": [spins8, "--sizes", "1,8", "--out", out],
        "empty": [empty, "--out", out],
        "no spins": [str(other), "--out", out],
        "not +-1": [counts, "--out", out],
        "incomplete": [unfinished, "--out", out],
        "missing": [str(tmp_path / "nope.zarr"), "--out", out],
        "labels": [spins8, "--label", "a", "--label", "b", "--out", out],
        "extension": [spins8, "--out", str(tmp_path / "o.txt")],
        "plot extension": [spins8, "--out", out, "--plot", str(tmp_path / "o.gif")],
        "sizes": [spins8, "--sizes", "1,x", "--out", out],
        "zero size": [spins8, "--sizes", "0", "--out", out],
        "negative size": [spins8, "--sizes", "2,-1", "--out", out],
    }
    for case, args in cases.items():
        result = CliRunner().invoke(main, ["correlators", *args, "--quiet"])
        assert result.exit_code == 2, (case, result.output)
        assert result.output.startswith("Error:") and result.output.count("\n") == 1, (case, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "o.nc").exists()


@pytest.mark.parametrize("basis", ["dct", "fourier"])
def test_independent_spins_have_a_flat_spectrum(basis):
    rng = np.random.default_rng(8)
    p_up = 0.7
    spins = np.where(rng.random((400, 16, 16)) < p_up, 1, -1).astype(np.int8)
    ds = correlators([xr.DataArray(spins, dims=("sample", "y", "x"))], sizes=[1], basis=basis, progress=False)
    # orthonormal basis: every mode of white noise has the single-spin variance 1 - mu^2
    S, err = ds.spectrum.values[0], ds.spectrum_err.values[0]
    assert ds.attrs["spectrum_basis"] == basis
    np.testing.assert_array_less(np.abs(S - (1 - (2 * p_up - 1) ** 2)), N_SIGMA * err)


def test_fourier_transform_is_the_skild_basis():
    import torch

    from skild_phys.process.basis import Basis

    x = np.random.default_rng(9).normal(size=(3, 6, 6))
    transform, k = observables.spectrum_basis("fourier", 6)
    basis = Basis.fourier(6)
    np.testing.assert_allclose(transform(x), basis.forward(torch.from_numpy(x)).numpy(), atol=1e-12)
    np.testing.assert_allclose(k, basis.k.numpy(), atol=1e-12)


def _noisy_copy(truth_path, out, idx, p, seed):
    """A 'model' store: truth samples idx with every spin flipped independently with probability p."""
    truth = xr.open_zarr(truth_path)
    spins = truth.spins.values[idx]
    flip = np.random.default_rng(seed).random(spins.shape) < p
    model = xr.Dataset({"spins": (("sample", "y", "x"), np.where(flip, -spins, spins).astype(np.int8)),
                        "source_index": (("sample",), idx.astype(np.int64))},
                       attrs={"L": int(truth.attrs["L"]), "beta": float(truth.attrs["beta"]),
                              "source": str(truth_path), "complete": True})
    model.to_zarr(out, zarr_format=3, consolidated=False)
    return out


def test_paired_comparison_on_the_same_configurations(make_store, tmp_path):
    """Independent flips with probability p multiply every joint cumulant of four distinct spins by
    (1 - 2p)^4: a 1.5 % shift, below 2 sigma of the independent-ensemble comparison, which the
    paired difference (joint-jackknife error) resolves and matches."""
    truth_path = make_store("paired16", L=16, n_samples=2000, chains=4, seed=9)
    idx = np.arange(1600)
    p = 0.002
    model_path = _noisy_copy(truth_path, tmp_path / "model.zarr", idx, p, seed=1)
    sizes = [1, 2, 4]
    ds = correlators([truth_path, model_path], sizes=sizes, labels=["truth", "model"], basis=None, progress=False)
    diff, err = ds.kappa4_paired.sel(source="model").values, ds.kappa4_paired_err.sel(source="model").values
    assert np.isnan(ds.kappa4_paired.sel(source="truth").values).all()
    # the value is the difference of the separate estimates on the same truth samples
    sub = xr.open_zarr(truth_path).spins.isel(sample=idx)
    model = xr.open_zarr(model_path, consolidated=False).spins
    separate = correlators([sub, model], sizes=sizes, labels=["t", "m"], basis=None, progress=False)
    np.testing.assert_allclose(diff, separate.kappa4.values[1] - separate.kappa4.values[0], rtol=1e-10, atol=1e-13)
    # closed form: E[diff] = ((1 - 2p)^4 - 1) kappa4_truth(samples idx)
    expected = ((1 - 2 * p) ** 4 - 1) * separate.kappa4.values[0]
    assert np.all(np.abs(diff - expected) < 4 * err), (diff, expected, err)
    assert np.all(np.abs(diff) > 4 * err)  # the shift is resolved ...
    unpaired = np.hypot(ds.kappa4_err.values[0], ds.kappa4_err.values[1])
    assert np.all(np.abs(diff) < 2 * unpaired)  # ... which the independent-ensemble comparison cannot do
    assert np.all(err < 0.2 * unpaired)
    # moments: flips shrink m by (1 - 2p) on average, so <|m|> and <m^2> fall
    z = ds.moments_paired.sel(source="model") / ds.moments_paired_err.sel(source="model")
    assert z.sel(moment="m2") < -4 and "paired: model - truth" in format_table(ds)


def test_paired_two_point_profile_and_spectrum_closed_forms(make_store, tmp_path):
    """Independent flips with probability p multiply every product of two distinct spins by q = (1 - 2p)^2:
    G(r >= 1) and the bond energy at every seam distance by q, and add the white variance 1 - q to every
    mode of an orthonormal basis, so the radial spectrum ratio is q + (1 - q) / S(k)."""
    truth_path = make_store("paired16", L=16, n_samples=2000, chains=4, seed=9)
    idx = np.arange(1600)
    p = 0.01
    q = (1 - 2 * p) ** 2
    model_path = _noisy_copy(truth_path, tmp_path / "model.zarr", idx, p, seed=2)
    ds = correlators([truth_path, model_path], sizes=[1], labels=["truth", "model"], basis="fourier", progress=False)
    sub = xr.open_zarr(truth_path).spins.isel(sample=idx)
    ref = correlators([sub], sizes=[1], basis="fourier", progress=False).isel(source=0)
    m = ds.sel(source="model")
    for var, expected in (("G_paired", (q - 1) * ref.G.values[1:]),
                          ("bond_energy_paired", (q - 1) * ref.bond_energy.values)):
        diff, err = m[var].values, m[var + "_err"].values
        diff = diff[1:] if var == "G_paired" else diff
        err = err[1:] if var == "G_paired" else err
        assert np.all(np.abs(diff - expected) < N_SIGMA * err), (var, diff, expected, err)
        assert np.all(np.abs(diff) > N_SIGMA * err)
    ratio, err = m.spectrum_ratio_paired.values, m.spectrum_ratio_paired_err.values
    expected = q + (1 - q) / ref.spectrum.values
    assert np.all(np.abs(ratio - expected) < N_SIGMA * err + 1e-3 * (1 - q)), (ratio, expected, err)
    # the reference compared with itself: zero differences, a ratio of one, no spread
    self_ds = correlators([truth_path, _noisy_copy(truth_path, tmp_path / "same.zarr", idx, 0.0, seed=0)],
                          sizes=[1], basis="fourier", progress=False).isel(source=1)
    assert np.all(self_ds.G_paired.values == 0) and np.allclose(self_ds.spectrum_ratio_paired.values, 1, atol=1e-12)


def test_super_resolved_coarse_store_pairs_with_its_truth(make_store, tmp_path):
    """superres --lowres of a coarsened truth records the coarse store as its source; pairing follows the
    coarse store's own source and source_index back to the truth."""
    from ising.coarsen import coarsen_store

    truth_path = make_store("paired16", L=16, n_samples=2000, chains=4, seed=9)
    coarse = tmp_path / "coarse.zarr"
    coarsen_store(truth_path, coarse, 4, "mean", progress=False)
    idx = np.arange(0, 1200, 3)
    model_path = _noisy_copy(truth_path, tmp_path / "model.zarr", idx, 0.0, seed=0)
    root = zarr.open_group(str(model_path), mode="r+")
    root.attrs["source"] = str(coarse)
    ds = correlators([truth_path, model_path], sizes=[1, 2], basis=None, progress=False)
    np.testing.assert_array_equal(ds.kappa4_paired.values[1], 0.0)
    # a coarse store that is not finished is not followed
    zarr.open_group(str(coarse), mode="r+").attrs["complete"] = False
    assert "kappa4_paired" not in correlators([truth_path, model_path], sizes=[1], basis=None, progress=False)


@pytest.mark.filterwarnings("ignore::analysis.observables.BlockingWarning")  # 50 unblocked samples
def test_unrelated_stores_are_not_paired(make_store, tmp_path):
    truth_path = make_store("paired16", L=16, n_samples=2000, chains=4, seed=9)
    other = make_store("paired16b", L=16, n_samples=400, chains=4, seed=10)
    ds = correlators([truth_path, other], sizes=[1, 2], basis=None, progress=False)
    assert "kappa4_paired" not in ds
    bad = _noisy_copy(truth_path, tmp_path / "m.zarr", np.arange(50)[::-1].copy(), 0.0, seed=0)  # not increasing
    assert "kappa4_paired" not in correlators([truth_path, bad], sizes=[1], basis=None, progress=False)


def test_seam_profile_matches_brute_force_twin():
    from analysis.profile import seam_profile
    from tests import naive

    rng = np.random.default_rng(5)
    for L in (2, 3, 5, 8):
        x = rng.normal(size=(3, L, L))
        np.testing.assert_allclose(seam_profile(x), naive.seam_profile(x), rtol=1e-12, atol=1e-12)
    # the classes average back to the mean neighbour product, i.e. the energy per spin / (-2)
    x = np.where(rng.random((4, 8, 8)) < 0.5, 1, -1)
    prof = seam_profile(x)
    weights = np.bincount(np.minimum(np.arange(8) + 1, 7 - np.arange(8)))
    np.testing.assert_allclose(prof @ weights / 8, pair_means(x)[1][:, 1], rtol=1e-12)


def test_a_registered_observable_reaches_the_dataset_the_pairing_and_the_table(make_store, tmp_path):
    """Adding an observable is one registration: <e^2> from the moment sums, checked against the
    stored per-sample energies, appears with its error, its paired difference and a table row."""
    from analysis import registry

    truth = make_store("paired16", L=16, n_samples=2000, chains=4, seed=9)
    model = _noisy_copy(truth, tmp_path / "same.zarr", np.arange(2000), 0.0, seed=1)
    registry.register(registry.Observable(
        "e2", "moments", lambda m, ctx: m[..., 1:2],
        (registry.Variable("e2", (), {"long_name": "<e^2>"}, lambda v, ctx: v[0]),),
        registry.Paired("e2_paired", "one", "<e^2> model - truth", lambda m, ctx: m[..., 1:2])))
    try:
        ds = correlators([truth, model], sizes=[1], labels=["truth", "model"], basis=None, progress=False)
        table = format_table(ds)
    finally:
        registry.OBSERVABLES.pop("e2")
    e = xr.open_zarr(truth).energy.values
    assert ds.e2.values[0] == pytest.approx(np.mean(e * e), rel=1e-12) and ds.e2_err.values[0] > 0
    assert ds.e2_paired.values[1, 0] == 0.0 and "  e2 " in table
