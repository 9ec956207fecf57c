"""Presets: the λ_i, λ_f rule against the official configs, size rescaling, and S0 normalisation."""

import math

import numpy as np
import pytest
import scipy.fft

from skild_base.errors import InputError
from skild_phys.process.presets import PRESETS, get_preset, preset_from_rule

# Low-resolution side r_LR behind each official linear preset (the rule makes r(N) = r_LR).
R_LR = {"ising128_4x": 32, "imagenet128_4x": 32, "imagenet128_8x": 16, "imagenet256_4x": 64}


@pytest.mark.parametrize("name", sorted(R_LR))
def test_rule_reproduces_official_lambdas(name):
    p = PRESETS[name]
    s = p.schedule
    rule = preset_from_rule(p.H, R_LR[name], s.theta, s.tau, k_c=s.k_c)
    for ours, official in ((rule.lam_i, s.lam_i), (rule.lam_f, s.lam_f)):
        assert ours == pytest.approx(official, rel=1e-4)
        assert abs(ours - official) < 1.5e-4  # within one unit of the printed fourth decimal
    assert float(rule.resolution(rule.N)) == pytest.approx(R_LR[name], rel=1e-12)


def test_cifar_linear_is_a_sub_pixel_generation_preset():
    # λ_i follows the rule at H = 32; the official λ_f = 1.57 corresponds to r_LR ≈ 0.48 < 1.
    p = PRESETS["cifar10_linear"]
    s = p.schedule
    assert math.sqrt(2) * math.pi * 31 == pytest.approx(s.lam_i, abs=1e-4)
    rule = preset_from_rule(32, p.r_lr, s.theta, s.tau, k_c=s.k_c)
    assert rule.lam_f == pytest.approx(1.57, rel=1e-12) and 0.47 < p.r_lr < 0.49
    # k_c = 3 noises the DC mode to ᾱ_N = exp(−9 λ(1)) ≈ 1e−8: generation from pure noise works.
    assert math.exp(-s.k_c**2 * s.lam(1.0)) < 1e-7


def test_imagenet128_8x_start_steps_follow_from_definitions():
    # r(t) ≤ r ⇔ λ(t) ≥ c = ln(1+1/τ)/(2π² r²); for the linear schedule that is
    # θ t ≥ c (λ_i (1−t) + λ_f)², a quadratic in t; n0 = ⌈N t*⌉ at its root in [0, 1].
    s = PRESETS["imagenet128_8x"].schedule
    for r in (16, 20, 24, 32, 40, 48, 64):
        c = math.log1p(1 / s.tau) / (2 * math.pi**2 * r**2)
        a, b = s.lam_i + s.lam_f, -s.lam_i
        # c (a + b t)² − θ t = 0
        coeffs = [c * b**2, 2 * c * a * b - s.theta, c * a**2]
        t_star = min(t for t in np.roots(coeffs).real if -1e-12 <= t <= 1 + 1e-6)
        n0 = min(math.ceil(s.N * t_star - 1e-9), s.N)
        assert s.start_step(r) == n0, r


def test_rescaled_presets_keep_the_factor():
    p = get_preset("ising128_4x", 64)
    assert p.H == 64 and p.r_lr == 16 and p.factor == 4
    assert p.schedule.lam_i == pytest.approx(math.sqrt(2) * math.pi * 63)
    assert float(p.schedule.resolution(p.schedule.N)) == pytest.approx(16, rel=1e-12)
    assert p.schedule.start_step(16) == p.schedule.N
    assert get_preset("imagenet128_8x") is PRESETS["imagenet128_8x"]


def test_preset_errors():
    with pytest.raises(InputError):
        get_preset("nope")
    with pytest.raises(InputError):
        get_preset("cifar10_log_linear", 64)
    with pytest.raises(ValueError):
        preset_from_rule(32, 8, 5, 0.1, schedule="log_linear")


def test_official_C_converts_to_orthonormal_dct():
    # Official DCT: (2/N) Σ x cos(...) per axis; orthonormal: √(2/N) Σ for u ≥ 1.
    H = 16
    x = np.random.default_rng(0).normal(size=(H, H))
    plain = scipy.fft.dctn(x, type=2, norm=None) / 4  # scipy's unnormalised DCT-II is 2 Σ per axis
    official = plain * (2 / H) ** 2
    ortho = scipy.fft.dctn(x, type=2, norm="ortho")
    ratio = (ortho[1:, 1:] / official[1:, 1:]) ** 2
    np.testing.assert_allclose(ratio, H * H / 4, rtol=1e-12)
    p = PRESETS["imagenet128_4x"]
    assert p.S0_fit_ortho().C == pytest.approx(p.S0_C_official * 128**2 / 4)
