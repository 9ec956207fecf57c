"""Training and sampling: learning, exact resumption, batch-size independence, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from skild_base.errors import InputError
from skild_phys import checkpoint
from skild_phys.cli import main
from skild_phys.data.adapters import LatticeStore
from skild_phys.methods.skild import load_model, resolve_config
from skild_phys.training.train import TrainSettings, prepare_run_dir, train
from tests.payloads import ShellPayload


@pytest.fixture(scope="module")
def store8(make_store):
    return make_store("train8", L=8, n_samples=64, chains=2, seed=1)


@pytest.fixture(scope="module")
def store16(make_store):
    return make_store("train16", L=16, n_samples=256, chains=4, seed=2)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _new_run(tmp_path, dataset, name="run", parameterization="v", **kw):
    settings = TrainSettings(**{"steps": 20, "batch": 8, "lr": 1e-3, "warmup": 5, "checkpoint_every": 10,
                                "log_every": 5, "device": "cpu", **kw})
    config, S0 = resolve_config(dataset, "auto", 4, None, "tiny", None, "dct", "empirical", settings,
                                parameterization)
    return prepare_run_dir(tmp_path / name, resume=False, overwrite=False), config, S0


def _eval_loss(process, net, x0, seed=123):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(process.loss(lambda x, n: net(x, n), x0, g).mean())


def test_tiny_net_fits_tiny_store(tmp_path, store8):
    torch.manual_seed(0)
    ds = LatticeStore(store8)
    run, config, S0 = _new_run(tmp_path, ds, parameterization="eps", steps=200, batch=16, lr=2e-3, ema_decay=0.9,
                               augment=False)
    train(run, ds, config, S0, progress=False, log=lambda m: None)
    model = load_model(run, "cpu")
    x0 = torch.from_numpy(ds.get(np.arange(len(ds))))
    # the zero-initialised output layer predicts eps = 0: the initial loss is E[eps^2] = 1
    from skild_phys.methods.skild import build_network

    untrained = build_network(config)
    initial = _eval_loss(model.process, untrained, x0)
    final = _eval_loss(model.process, model.net, x0)
    assert abs(initial - 1.0) < 0.05
    assert final < initial / 3, (initial, final)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path, store16):
    ds = LatticeStore(store16)
    run_a, config, S0 = _new_run(tmp_path, ds, "a")
    train(run_a, ds, config, S0, progress=False, log=lambda m: None)
    run_b, config_b, _ = _new_run(tmp_path, ds, "b")
    half = config_b.replace(train={**config_b.train, "steps": 10})
    train(run_b, ds, half, S0, progress=False, log=lambda m: None)
    train(run_b, ds, config_b, S0, resume=True, progress=False, log=lambda m: None)
    a, b = checkpoint.load_resume(run_a), checkpoint.load_resume(run_b)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    assert a["step"] == b["step"] == 20


def test_validation_loss_does_not_perturb_training(tmp_path, store16, store8):
    """With --val-data the log gains held-out and training-set losses per bin of n, computed from fixed
    draws (identical for identical weights), and the weights are bit-identical to a run without it."""
    ds = LatticeStore(store16)
    run_a, config, S0 = _new_run(tmp_path, ds, "plain")
    train(run_a, ds, config, S0, progress=False, log=lambda m: None)
    run_b, config_b, _ = _new_run(tmp_path, ds, "val", val_data=str(store16), val_samples=6, val_every=10)
    train(run_b, ds, config_b, S0, progress=False, log=lambda m: None)
    a, b = checkpoint.load_resume(run_a), checkpoint.load_resume(run_b)
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    records = [json.loads(line) for line in (run_b / checkpoint.LOG_FILE).read_text().splitlines()]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [10, 20]
    assert len(val[0]["val_loss_bins"]) == len(val[0]["train_loss_bins"]) == 10 == len(val[0]["val_bin_edges"]) - 1
    # held-out = training store here: with the same draws the two curves coincide
    assert val[-1]["val_loss_bins"] == val[-1]["train_loss_bins"]
    # the Gaussian floor loses most at small n, where resolved modes keep unpredictable noise
    floor = val[0]["val_floor_bins"]
    assert floor == sorted(floor, reverse=True) and 0 < floor[-1] < floor[0] < 1
    bad = config_b.replace(train={**config_b.train, "val_data": str(store8)})
    with pytest.raises(InputError, match="val-data"):
        train(_new_run(tmp_path, ds, "bad")[0], ds, bad, S0, progress=False, log=lambda m: None)


def test_v_weighted_loss_trains_and_reports_the_eps_validation_loss(tmp_path, store16):
    """--loss-weight v changes the gradient, not the yardstick: the logged validation loss stays the
    ε-MSE of the same fixed draws, so runs of either weighting compare on it."""
    from skild_phys.methods.skild import skild_objective
    from skild_phys.training.train import validation

    ds = LatticeStore(store16)
    runs = {}
    for weight in ("eps", "v"):
        run, config, S0 = _new_run(tmp_path, ds, weight, loss_weight=weight, val_data=str(store16), val_samples=6,
                                   val_every=20)
        train(run, ds, config, S0, progress=False, log=lambda m: None)
        runs[weight] = run
    a, b = (checkpoint.load_resume(runs[w]) for w in ("eps", "v"))
    assert any(not torch.equal(t, b["model"][k]) for k, t in a["model"].items())
    model = load_model(runs["v"], "cpu")
    settings = TrainSettings(**model.config.train)
    record = validation(ds, model.process, skild_objective("v", "eps"), settings, torch.device("cpu"))(model.net)
    logged = [json.loads(line) for line in (runs["v"] / checkpoint.LOG_FILE).read_text().splitlines()]
    assert [r["val_loss"] for r in logged if "val_loss" in r][-1] == pytest.approx(record["val_loss"], rel=1e-6)
    assert model.config.train["loss_weight"] == "v"


def test_loss_weight_v_is_refused_where_it_does_not_apply(tmp_path, store8):
    for weight, extra in (("v", ("--parameterization", "eps")), ("v-sr", ("--model", "sr3"))):
        out = tmp_path / extra[1]
        msg = _one_line_error(_cli("train", "--data", store8, "--out", out, "--steps", 2, "--loss-weight", weight,
                                   *extra))
        assert "--loss-weight" in msg and not out.exists()


def test_noise_weight_is_refused_where_it_does_not_apply_and_recorded_where_it_does(tmp_path, store8):
    for name, extra in {"range": ("--noise-weight", 1.5), "eps": ("--noise-weight", 0.5, "--loss-weight", "eps"),
                        "sr3": ("--noise-weight", 0.5, "--model", "sr3")}.items():
        out = tmp_path / name
        msg = _one_line_error(_cli("train", "--data", store8, "--out", out, "--steps", 2, *extra))
        assert "--noise-weight" in msg and not out.exists(), name
    out = tmp_path / "blend"
    r = _cli("train", "--data", store8, "--out", out, "--steps", 1, "--batch", 2, "--quiet", "--noise-weight", 0.25)
    assert r.exit_code == 0, r.output
    recorded = json.loads((out / checkpoint.CONFIG_FILE).read_text())["train"]
    assert (recorded["loss_weight"], recorded["noise_weight"]) == ("v-sr", 0.25)
    # at its default the setting is not written, so a default run's config (and digest) stays as before it
    # existed, and such a run resumes
    out = tmp_path / "default"
    for extra in ((), ("--resume", "--steps", 2)):
        r = _cli("train", "--data", store8, "--out", out, "--steps", 1, "--batch", 2, "--lr-decay", "none", "--quiet",
                 *extra)
        assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    assert "noise_weight" not in json.loads((out / checkpoint.CONFIG_FILE).read_text())["train"]


def test_default_loss_weight_follows_data_method_and_parameterization(tmp_path, store8):
    """SKILD with v-prediction on a lattice store trains with v-sr by default; the ε-parameterised
    network and SR3 keep the ε-MSE (the v-weighted losses need V)."""
    cases = {"skild-v": ((), "v-sr"), "skild-eps": (("--parameterization", "eps"), "eps"),
             "sr3": (("--model", "sr3"), "eps"), "explicit": (("--loss-weight", "v"), "v")}
    for name, (extra, expected) in cases.items():
        out = tmp_path / name
        r = _cli("train", "--data", store8, "--out", out, "--steps", 1, "--batch", 2, "--quiet", *extra)
        assert r.exit_code == 0, r.output
        assert json.loads((out / checkpoint.CONFIG_FILE).read_text())["train"]["loss_weight"] == expected, name


def test_cosine_learning_rate_and_network_shape():
    s = TrainSettings(steps=110, warmup=10, lr_decay="cosine")
    assert s.lr_factor(0) == pytest.approx(0.1) and s.lr_factor(9) == 1.0
    assert s.lr_factor(59) == pytest.approx(0.5) and s.lr_factor(109) == pytest.approx(0.0, abs=1e-12)
    assert TrainSettings(steps=110, warmup=10).lr_factor(109) == 1.0
    from skild_phys.networks.unet import build_unet

    plain = build_unet("tiny")
    reshaped = build_unet("tiny", overrides={"base_channels": 8, "blocks_per_level": 2, "attention_levels": [],
                                              "mid_attention": False})
    assert reshaped.config.base_channels == 8 and reshaped.config.blocks_per_level == 2
    assert not any(type(m).__name__ == "SelfAttention" for m in reshaped.modules())
    assert sum(type(m).__name__ == "SelfAttention" for m in plain.modules()) == 4  # level 2: 1 down, 2 up; bottleneck
    with pytest.raises(ValueError, match="shape"):
        build_unet("tiny", overrides={"width": 3})


def _train_cmd(store, out, steps):
    return [sys.executable, "-m", "skild_phys", "train", "--data", str(store), "--out", str(out), "--steps", str(steps),
            "--batch", "4", "--checkpoint-every", "2", "--threads", "1", "--device", "cpu", "--quiet", "--spectrum",
            "empirical"]


def test_killed_training_resumes_exactly(tmp_path, store16):
    steps = 24
    ref = subprocess.run(_train_cmd(store16, tmp_path / "ref", steps), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(store16, out, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / checkpoint.RESUME_FILE).exists():
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = checkpoint.load_resume(out)["step"]
    assert step_at_kill < steps, "training finished before it could be killed"
    resume = _train_cmd(store16, out, steps)
    i = resume.index("--steps")
    del resume[i:i + 2]  # --resume without --steps runs to the run's own end, not the data's default
    done = subprocess.run(resume + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a, b = checkpoint.load_resume(tmp_path / "ref"), checkpoint.load_resume(out)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    # the JSONL log is append-only: the resumed run continues it
    steps_logged = [json.loads(line)["step"] for line in (out / checkpoint.LOG_FILE).read_text().splitlines()]
    assert steps_logged[-1] == steps


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, store16):
    ds = LatticeStore(store16)
    run, config, S0 = _new_run(tmp_path_factory.mktemp("run"), ds)
    train(run, ds, config, S0, progress=False, log=lambda m: None)
    return run


def test_generation_independent_of_batch_size(tmp_path, trained_run):
    outs = []
    for batch in (1, 3):
        out = tmp_path / f"g{batch}.zarr"
        r = _cli("generate", "--checkpoint", trained_run, "--samples", 5, "--out", out, "--steps", 10, "--batch", batch,
                 "--seed", 4, "--keep-field", "--quiet", "--device", "cpu")
        assert r.exit_code == 0, r.output
        outs.append(xr.open_zarr(out))
    # float32 network arithmetic may differ in the last bits between batch shapes
    np.testing.assert_allclose(outs[0].field.values, outs[1].field.values, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(outs[0].spins.values, outs[1].spins.values)
    np.testing.assert_array_equal(outs[0].seed.values, outs[1].seed.values)
    assert len(set(outs[0].seed.values.tolist())) == 5


def test_superres_outputs_and_provenance(tmp_path, trained_run, store16):
    out = tmp_path / "sr.zarr"
    r = _cli("superres", "--checkpoint", trained_run, "--data", store16, "--factor", 2, "--samples", 4, "--out", out,
             "--steps", 5, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    ds = xr.open_zarr(out)
    assert ds.spins.shape == (4, 16, 16) and set(np.unique(ds.spins.values)) <= {-1, 1}
    np.testing.assert_array_equal(ds.source_index.values, np.arange(4))
    model = load_model(trained_run, "cpu")
    assert ds.attrs["start_step"] == model.process.schedule.start_step(8)
    assert ds.attrs["checkpoint_digest"] == checkpoint.file_digest(trained_run)
    assert ds.attrs["reverse_steps"] == 5 and ds.attrs["complete"]


def test_lowres_superres_from_coarsened_store(tmp_path, trained_run, store16):
    lr = tmp_path / "lr.zarr"
    assert _cli("coarsen", store16, "--factor", 4, "--out", lr, "--quiet").exit_code == 0
    out = tmp_path / "sr.zarr"
    r = _cli("superres", "--checkpoint", trained_run, "--lowres", lr, "--factor", 4, "--samples", 3, "--out", out,
             "--steps", 5, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert xr.open_zarr(out).spins.shape == (3, 16, 16)


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


def test_corrupted_checkpoint_is_one_sentence(tmp_path, trained_run):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / checkpoint.USE_FILE).write_bytes((trained_run / checkpoint.USE_FILE).read_bytes()[:1000])
    msg = _one_line_error(_cli("generate", "--checkpoint", bad, "--samples", 2, "--out", tmp_path / "g.zarr"))
    assert "corrupted" in msg
    assert "does not exist" in _one_line_error(_cli("generate", "--checkpoint", tmp_path / "none", "--samples", 2,
                                                   "--out", tmp_path / "g.zarr"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    run = tmp_path / "crafted"
    run.mkdir()
    marker = tmp_path / "ran"
    torch.save({"config": "{}", "ema": ShellPayload(marker)}, run / checkpoint.USE_FILE)
    msg = _one_line_error(_cli("generate", "--checkpoint", run, "--samples", 2, "--out", tmp_path / "g.zarr"))
    assert "not a skild-phys checkpoint" in msg and not marker.exists()
    torch.load(run / checkpoint.USE_FILE, weights_only=False)  # the unrestricted loader would have run it
    assert marker.exists()


def test_bad_sampling_inputs(tmp_path, trained_run, store8, store16):
    # the auto schedule ends at r(N) < 1 pixel per side; a factor beyond H / r(N) has no start step
    schedule = load_model(trained_run, "cpu").process.schedule
    r_end = float(schedule.resolution(schedule.N))
    assert 0 < r_end < 1
    msg = _one_line_error(_cli("superres", "--checkpoint", trained_run, "--data", store16, "--factor",
                               2 * 16 / r_end, "--out", tmp_path / "x.zarr"))
    assert "coarse grid" in msg and "up to 16" in msg
    for factor in (1, 0.5, -2):
        msg = _one_line_error(_cli("superres", "--checkpoint", trained_run, "--data", store16, "--factor", factor,
                                   "--out", tmp_path / "x.zarr"))
        assert "above 1" in msg
    msg = _one_line_error(_cli("generate", "--checkpoint", trained_run, "--samples", 2, "--steps", 1001,
                               "--out", tmp_path / "g.zarr"))
    assert "exceeds" in msg and "1000" in msg
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "g.zarr").exists()
    msg = _one_line_error(_cli("superres", "--checkpoint", trained_run, "--data", store8, "--factor", 2,
                               "--out", tmp_path / "x.zarr"))
    assert "8x8" in msg
    msg = _one_line_error(_cli("superres", "--checkpoint", trained_run, "--factor", 2, "--out", tmp_path / "x.zarr"))
    assert "exactly one" in msg


def test_train_refuses_existing_run_and_missing_resume(tmp_path, trained_run, store16):
    msg = _one_line_error(_cli("train", "--data", store16, "--out", trained_run, "--steps", 2))
    assert "--resume" in msg
    msg = _one_line_error(_cli("train", "--data", store16, "--out", tmp_path / "fresh", "--steps", 2, "--resume"))
    assert "nothing to resume" in msg
    msg = _one_line_error(_cli("train", "--data", store16, "--out", tmp_path / "neg", "--steps", 2, "--k-c", -1))
    assert "--k-c" in msg and not (tmp_path / "neg").exists()


def test_unknown_or_absent_devices_are_one_sentence(tmp_path, trained_run, store8):
    for device in ("foo", "cuda:99", "xla"):
        msg = _one_line_error(_cli("train", "--data", store8, "--out", tmp_path / "run", "--steps", 2,
                                   "--device", device))
        assert "--device" in msg and device in msg
        msg = _one_line_error(_cli("generate", "--checkpoint", trained_run, "--samples", 2, "--device", device,
                                   "--out", tmp_path / "g.zarr"))
        assert "--device" in msg
    assert not (tmp_path / "run").exists() and not (tmp_path / "g.zarr").exists()


def test_resuming_a_finished_run_says_so(tmp_path, store8):
    args = ["train", "--data", store8, "--out", tmp_path / "run", "--steps", 4, "--log-every", 2, "--quiet",
            "--device", "cpu"]
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    again = _cli(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert "already trained to step 4 of 4" in again.output and "nan" not in again.output
    assert again.output.strip().splitlines()[-1] == first.output.strip().splitlines()[-1]
    # a cosine-decayed run (the lattice default) ends its decay at --steps: it cannot be extended
    msg = _one_line_error(_cli(*args[:6], 8, *args[7:], "--resume"))
    assert "cosine" in msg and "step 4" in msg


def test_sr3_baseline_is_white_cosine_ddpm():
    import math

    from skild_phys.methods.sr3 import COSINE_OFFSET, condition
    from skild_phys.process.basis import Basis
    from skild_phys.process.diffusion import Process
    from skild_phys.process.schedule import Schedule

    H, N, s = 8, 1000, COSINE_OFFSET
    process = Process(Basis.identity(H), Schedule("cosine", 0.0, 0.0, theta=s), torch.ones(H, H))
    for n in (1, 250, 500, 999):
        ab = process.alpha_bar(n)
        expected = math.cos(math.pi / 2 * (n / N + s) / (1 + s)) ** 2 / math.cos(math.pi / 2 * s / (1 + s)) ** 2
        torch.testing.assert_close(ab, torch.full((H, H), expected, dtype=torch.float64), rtol=1e-12, atol=0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    c = condition(x, 2)
    assert c.shape == x.shape and float(c[0, 0, 0, 0]) == float(c[0, 0, 1, 1]) == (0 + 1 + 4 + 5) / 4


def test_sr3_trains_and_super_resolves(tmp_path, store16):
    run = tmp_path / "sr3"
    r = _cli("train", "--model", "sr3", "--data", store16, "--out", run, "--steps", 4, "--batch", 4, "--factor", 4,
             "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = tmp_path / "sr3.zarr"
    r = _cli("superres", "--checkpoint", run, "--data", store16, "--factor", 4, "--samples", 2, "--steps", 5,
             "--out", out, "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert xr.open_zarr(out).attrs["start_step"] == 1000
    assert "conditional" in _one_line_error(_cli("generate", "--checkpoint", run, "--samples", 2,
                                                 "--out", tmp_path / "g.zarr"))
    assert "factor 4" in _one_line_error(_cli("superres", "--checkpoint", run, "--data", store16, "--factor", 2,
                                              "--out", tmp_path / "x.zarr"))


def test_sr_step_sampling_favours_the_super_resolution_range():
    from skild_phys.training.train import SR_SHARE, draw_steps

    g = torch.Generator().manual_seed(0)
    assert draw_steps("uniform", 600, 1000, 8, g) is None
    n = draw_steps("sr", 600, 1000, 40000, g)
    assert n.min() >= 1 and n.max() <= 1000
    # P(n <= 600) = SR_SHARE + (1 - SR_SHARE) * 0.6; the binomial error of 40000 draws is < 0.003
    assert abs(float((n <= 600).double().mean()) - (SR_SHARE + (1 - SR_SHARE) * 0.6)) < 0.01
    # above the range the density is flat: (1 - SR_SHARE) / N per step
    high = (n > 600).double().mean() / 400
    assert abs(float(high) - (1 - SR_SHARE) / 1000) < 0.1 * (1 - SR_SHARE) / 1000


def test_run_config_round_trips_and_fills_what_old_runs_predate(tmp_path, store16):
    """One set of defaults: a new run is v-parameterised; a stored configuration written before the
    field existed was ε-trained and reads back as such; unknown fields are refused in one sentence."""
    from skild_phys.config import RunConfig

    _, config, _ = _new_run(tmp_path, LatticeStore(store16))
    assert config.parameterization == "v" and RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {k: v for k, v in config.to_dict().items() if k not in ("parameterization", "model", "data_kind")}
    legacy = RunConfig.from_dict(old)
    assert (legacy.parameterization, legacy.model, legacy.data_kind) == ("eps", "skild", "lattice")
    with pytest.raises(InputError, match="unknown fields"):
        RunConfig.from_dict({**config.to_dict(), "colour": "blue"})
    with pytest.raises(InputError, match="incomplete"):
        RunConfig.from_dict({"H": 16})


def test_octave_start_is_the_start_step_of_half_the_factor(store16):
    """v-octave's lower end: the step where a 4x chain on L = 16 reaches resolution 8 (the start of
    a 2x chain), inside the 4x range; a 2x run has no lower end."""
    from skild_phys.methods.skild import build_process
    from skild_phys.training.train import octave_start, sr_range

    ds = LatticeStore(store16)
    for factor in (4, 2):
        settings = TrainSettings(steps=1, batch=2, device="cpu")
        config, S0 = resolve_config(ds, "auto", factor, None, "tiny", None, "fourier", "empirical", settings, "v")
        process = build_process(config, S0)
        n_oct, n_sr = octave_start(config, process), sr_range(config, process)
        if factor == 4:
            assert n_oct == process.schedule.start_step(8) and 0 < n_oct < n_sr == process.schedule.start_step(4)
        else:
            assert n_oct == 0 and n_sr == process.schedule.start_step(8)
