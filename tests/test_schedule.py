"""Schedules λ(t), k_eff, effective resolution r(n), start steps, and the `schedule` command."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from skild_phys.cli import main
from skild_phys.process.presets import PRESETS
from skild_phys.process.schedule import Schedule


def test_formulas_match_spec():
    lin = Schedule("linear", 564.2461, 275.4361, theta=9)
    t = np.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(lin.lam(t), 9 * t / (564.2461 * (1 - t) + 275.4361) ** 2, rtol=1e-15)
    log = Schedule("log_linear", -3.75, -2.0, k_c=31.2, tau=1e-4)
    np.testing.assert_allclose(log.lam(t), t * 10 ** (-3.75 + 1.75 * t), rtol=1e-15)
    assert lin.lam_n().shape == (1001,) and lin.lam_n()[0] == 0 == log.lam_n()[0]
    np.testing.assert_allclose(log.k_eff2(np.array([0.0, 10.0, 40.0])), [31.2**2, 31.2**2, 1600.0])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_lambda_increases_and_resolution_decreases(name):
    s = PRESETS[name].schedule
    assert np.all(np.diff(s.lam_n()) > 0)
    r = s.resolution(np.arange(s.N + 1))
    assert math.isinf(r[0]) and np.all(np.diff(r) < 0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_snr_at_the_resolved_cutoff_is_tau(name):
    # k*(n)² λ_n = ln(1 + 1/τ) means ᾱ/(1 − ᾱ) = τ exactly at k = k*.
    s = PRESETS[name].schedule
    n = np.arange(1, s.N + 1, 97)
    alpha_bar = np.exp(-s.k_star(n) ** 2 * s.lam_n()[n])
    np.testing.assert_allclose(alpha_bar / (1 - alpha_bar), s.tau, rtol=1e-9)
    np.testing.assert_allclose(s.resolution(n), s.k_star(n) / (math.sqrt(2) * math.pi), rtol=1e-15)


def test_start_step_convention():
    s = PRESETS["ising128_4x"].schedule
    for r in (32.0, 40.0, 64.0, 100.0, 127.0):
        n0 = s.start_step(r)
        assert s.resolution(n0) <= r < s.resolution(n0 - 1)
    assert s.start_step(1e9) == 1
    with pytest.raises(ValueError):
        s.start_step(31.0)


def test_invalid_schedules():
    with pytest.raises(ValueError):
        Schedule("sigmoid", 1, 2)
    with pytest.raises(ValueError):
        Schedule("linear", 1, 2)


def test_cli_prints_table_and_start_steps():
    res = CliRunner().invoke(main, ["schedule", "--preset", "ising128_4x", "--resolution", "64", "--factor", "4"])
    assert res.exit_code == 0, res.output
    assert "lambda_i = 564.2461" in res.output and "lambda_f = 275.4361" in res.output
    s = PRESETS["ising128_4x"].schedule
    assert f"start step for r = 64: n0 = {s.start_step(64)}" in res.output
    assert f"start step for r = 32: n0 = {s.start_step(32)}" in res.output


def test_cli_json_and_plot(tmp_path):
    plot = tmp_path / "schedule.png"
    res = CliRunner().invoke(main, ["schedule", "--preset", "imagenet128_8x", "--size", "64", "--json",
                                    "--resolution", "16", "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["H"] == 64 and out["r_lr"] == 8 and out["schedule"]["theta"] == 5
    assert out["table"][0] == {"n": 0, "t": 0.0, "lam": 0.0, "r": None}
    assert out["start_steps"][0]["r"] == 16 and plot.stat().st_size > 0
    # an existing plot of ours is replaced only when asked; someone else's file never
    args = ["schedule", "--preset", "imagenet128_8x", "--size", "64", "--plot", str(plot)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert CliRunner().invoke(main, args + ["--overwrite"]).exit_code == 0
    plot.write_bytes(b"mine")
    res = CliRunner().invoke(main, args + ["--overwrite"])
    assert res.exit_code == 2 and "did not write" in res.output and plot.read_bytes() == b"mine"


@pytest.mark.parametrize("args, message", [
    (["--preset", "ising256"], "unknown preset"),
    (["--preset", "ising128_4x", "--resolution", "10"], "never reached"),
    (["--preset", "cifar10_log_linear", "--size", "64"], "no size rule"),
])
def test_cli_user_errors_are_one_line(args, message):
    res = CliRunner().invoke(main, ["schedule", *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
