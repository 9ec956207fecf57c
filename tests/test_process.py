"""The SKILD process against closed forms: variance preservation, Gaussian conditioning, oracle sampling.

Monte Carlo checks use per-mode z-scores z = (mean of a per-sample statistic − exact value)
/ (its sample standard error) and require max |z| < 5 over all modes and steps checked
(a few hundred tests: a false alarm has probability < 1e-4 for Gaussian z).  Seeds are
fixed, so the suite is deterministic.  All math in float64.
"""

import math

import numpy as np
import pytest
import torch

from skild_phys.process.basis import Basis
from skild_phys.process.diffusion import Process, per_sample_generators, randn, respaced_steps, reverse_chain
from skild_phys.process.presets import get_preset, preset_from_rule

Z_MAX = 5.0
H = 8


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def power_S0(basis, alpha=0.9, C=1.0, k0sq=math.pi**2):
    """A power-law spectrum C (k² + k0²)^(−α) on the basis grid."""
    return C * (basis.k**2 + k0sq) ** (-alpha)


def max_z(stat: torch.Tensor, expected) -> float:
    """Largest |z| of the per-mode means of `stat` (samples first) against `expected`."""
    stat = stat.reshape(stat.shape[0], -1)
    expected = torch.as_tensor(expected, dtype=torch.float64).reshape(-1)
    se = stat.std(dim=0) / math.sqrt(stat.shape[0])
    diff = stat.mean(dim=0) - expected
    # A statistic with no spread (e.g. a deterministic mode) must match to rounding.
    exact = se <= 1e-12 * expected.abs()
    z = torch.where(exact, (diff.abs() > 1e-12 * expected.abs()) * torch.inf, diff / torch.where(exact, 1.0, se))
    return float(torch.nan_to_num(z.abs(), nan=0.0).max())


def sr_process():
    """4x super-resolution process on the 8×8 grid (rule: r_LR = 2, θ = 9, τ = 0.1, k_c = 0)."""
    basis = Basis.dct(H)
    return Process(basis, preset_from_rule(H, 2, theta=9, tau=0.1), power_S0(basis))


def gen_process():
    """Generation process: cifar10_linear rescaled to 8×8 (k_c = 3 noises every mode by n = N)."""
    basis = Basis.dct(H)
    return Process(basis, get_preset("cifar10_linear", H).schedule, power_S0(basis))


def oracle(process: Process):
    """Exact ε̂ = E[ε | X_n] for Gaussian X_0 ~ N(0, S0): ε̂ = √(1−ᾱ_n) X_n / √S0, built from the schedule alone."""
    k_eff2 = torch.clamp(process.basis.k**2, min=process.schedule.k_c**2)
    lam = torch.as_tensor(process.schedule.lam(np.arange(process.N + 1) / process.N))
    S0 = process.S0

    def eps_hat(x, n):
        alpha_bar = torch.exp(-k_eff2 * lam[n].view(-1, 1, 1, 1))
        X = process.basis.forward(x)
        return process.basis.inverse(torch.sqrt(1 - alpha_bar) * X / torch.sqrt(S0))

    return eps_hat


def chain_moments(process: Process, steps, V, c, variance="posterior"):
    """Exact per-mode Var X and Cov(X, X_0) after the oracle reverse chain, by the linear recursion.

    With the oracle, X_m = √(ᾱ_n/ᾱ_m) X_n + σ z, σ² the sampler variance.
    """
    k_eff2 = process.schedule.k_eff2(process.basis.k.numpy())
    lam = process.schedule.lam_n()
    S0 = process.S0.numpy()
    for n, m in zip(steps[:-1], steps[1:]):
        log_alpha = -k_eff2 * (lam[n] - lam[m])
        beta = -np.expm1(log_alpha)
        one_minus_n, one_minus_m = -np.expm1(-k_eff2 * lam[n]), -np.expm1(-k_eff2 * lam[m])
        if variance == "forward":
            sigma2 = S0 * beta
        elif m == 0:
            sigma2 = 0.0
        else:
            sigma2 = S0 * beta * one_minus_m / np.where(one_minus_n == 0, 1.0, one_minus_n)
        V = np.exp(log_alpha) * V + sigma2
        c = np.exp(log_alpha / 2) * c
    return V, c


# ---- 1. variance preservation ------------------------------------------------------------------ #

def test_variance_preserved_at_every_step():
    process = gen_process()
    g = torch.Generator().manual_seed(1)
    B = 4000
    # Non-Gaussian data (random signs) with per-mode variance S0.
    xi = torch.randint(0, 2, (B, 1, H, H), generator=g).double() * 2 - 1
    X0 = torch.sqrt(process.S0) * xi
    for n in (0, 1, 10, 100, 500, 1000):
        X_n = process.marginal(X0, n, randn(X0.shape, g))
        assert max_z(X_n**2, process.S0) < Z_MAX, n


def test_marginal_coefficients_sum_to_S0():
    process = sr_process()
    one = torch.ones(1, 1, H, H, dtype=torch.float64)
    for n in range(0, 1001, 37):
        a = process.marginal(one, n, 0 * one)
        b = process.marginal(0 * one, n, one)
        torch.testing.assert_close(a**2 * process.S0 + b**2, process.S0.expand_as(a), rtol=1e-13, atol=0)


# ---- 2. posterior = Gaussian conditioning -------------------------------------------------------- #

@pytest.mark.parametrize("seed", range(4))
def test_posterior_is_gaussian_conditioning(seed):
    rng = np.random.default_rng(seed)
    basis = Basis.dct(H)
    S0 = torch.as_tensor(rng.lognormal(0.0, 2.0, size=(3, H, H)))
    schedule = preset_from_rule(H, rng.uniform(0.5, 4), theta=rng.uniform(1, 10),
                                tau=10 ** rng.uniform(-4, 0), k_c=rng.choice([0.0, rng.uniform(0, 5)]))
    process = Process(basis, schedule, S0)
    k_eff2 = np.maximum(basis.k.numpy() ** 2, schedule.k_c**2)
    lam = schedule.lam_n()
    S0 = S0.numpy()
    pairs = [(n - 1, n) for n in rng.integers(1, 1001, 5)] + [tuple(sorted(rng.choice(1001, 2, replace=False))) for _ in range(5)]
    for m, n in pairs:
        C1, C2, var = process.posterior_coefficients(m, n)
        # Joint of (x_m, x_n | x_0): x_m = √ᾱ_m x_0 + s_m ε, x_n = √(ᾱ_n/ᾱ_m) x_m + s ε'.
        sqrt_ab_m, sqrt_ab_n = np.exp(-k_eff2 * lam[m] / 2), np.exp(-k_eff2 * lam[n] / 2)
        cov_mm = -np.expm1(-k_eff2 * lam[m]) * S0
        cov_nn = -np.expm1(-k_eff2 * lam[n]) * S0
        cov_mn = np.exp(-k_eff2 * (lam[n] - lam[m]) / 2) * cov_mm
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = np.where(cov_nn > 0, cov_mn / cov_nn, 1.0)
            cond_var = np.where(cov_nn > 0, cov_mm - cov_mn**2 / cov_nn, 0.0)
        C2_ref = np.broadcast_to(gain, S0.shape)
        C1_ref = sqrt_ab_m - gain * sqrt_ab_n
        np.testing.assert_allclose(np.broadcast_to(C2.numpy(), S0.shape), C2_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.broadcast_to(C1.numpy(), S0.shape), C1_ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(var.numpy(), cond_var, rtol=1e-10, atol=1e-12 * S0.max())


def test_dc_mode_is_carried_without_cutoff():
    process = sr_process()
    C1, C2, var = process.posterior_coefficients(499, 500)
    assert (C1[0, 0], C2[0, 0], var[0, 0]) == (0.0, 1.0, 0.0)
    assert torch.isfinite(C1).all() and torch.isfinite(var).all()


def test_x0_hat_inverts_marginal_and_floors():
    process = gen_process()
    g = torch.Generator().manual_seed(2)
    X0 = randn((5, 1, H, H), g) * torch.sqrt(process.S0)
    eps = randn(X0.shape, g)
    for n in (1, 50, 200):
        X_n = process.marginal(X0, n, eps)
        resolved = process.alpha_bar(n) > 1e-6
        torch.testing.assert_close(process.x0_hat(X_n, eps, n)[..., resolved], X0[..., resolved], rtol=1e-6, atol=1e-9)
    # At n = N every mode has √ᾱ < 1e−6: the inversion divides by the floor, not by √ᾱ.
    X_N = process.marginal(X0, process.N, eps)
    noise = torch.sqrt(-torch.expm1(process.log_alpha_bar(process.N)) * process.S0)
    torch.testing.assert_close(process.x0_hat(X_N, 0 * eps, process.N), X_N / 1e-6)
    assert torch.all(process.x0_hat(X_N, eps, process.N).abs() <= (X_N - noise * eps).abs() / 1e-6 + 1e-12)


# ---- 3. oracle sampling ------------------------------------------------------------------------ #

def test_generation_reproduces_S0():
    process = gen_process()
    B = 1000
    g = torch.Generator().manual_seed(3)
    steps = list(range(process.N, -1, -1))
    X = reverse_chain(process, oracle(process), process.prior((B, 1, H, H), g), steps, g)
    V0 = -np.expm1(process.log_alpha_bar(process.N).numpy()) * process.S0.numpy()
    V, _ = chain_moments(process, steps, V0, 0.0)
    assert max_z(X**2, V) < Z_MAX
    # The paper's posterior variance leaves a discretisation deficit of at most 3% in S0 at N = 1000.
    ratio = V / process.S0.numpy()
    assert ratio.max() <= 1 + 1e-12 and ratio.min() > 0.97


def test_superresolution_keeps_resolved_modes():
    process = sr_process()
    B = 1000
    g = torch.Generator().manual_seed(4)
    n0 = process.schedule.start_step(2)
    X0 = randn((B, 1, H, H), g) * torch.sqrt(process.S0)
    X_start = process.marginal(X0, n0, randn(X0.shape, g))
    steps = list(range(n0, -1, -1))
    X = reverse_chain(process, oracle(process), X_start, steps, g)

    S0 = process.S0.numpy()
    alpha_bar_n0 = process.alpha_bar(n0).numpy()
    V, c = chain_moments(process, steps, S0, np.sqrt(alpha_bar_n0) * S0)  # Cov(X_{n0}, X_0) = √ᾱ S0
    np.testing.assert_allclose(c, alpha_bar_n0 * S0, rtol=1e-12)  # Cov(X_out, X_0) = ᾱ_{n0} S0
    assert max_z(X**2, V) < Z_MAX
    assert max_z(X * X0, c) < Z_MAX
    assert (V / S0).min() > 0.97  # the spectrum of the unresolved modes is restored

    # Resolved modes (k ≤ k*(n0)) have SNR ᾱ/(1−ᾱ) ≥ τ, i.e. correlation ᾱ_{n0} with the input ≥ τ/(1+τ);
    # those with SNR ≥ 1 keep a correlation ≥ 1/2 (standard error of a correlation ≤ 1/√B).
    tau = process.schedule.tau
    resolved = process.basis.k.numpy() <= process.schedule.k_star(n0)
    assert resolved.sum() >= 4
    assert np.all(alpha_bar_n0[resolved] >= tau / (1 + tau) - 1e-12)
    assert np.all(alpha_bar_n0[~resolved] < tau / (1 + tau))
    kept = alpha_bar_n0 >= 0.5
    X_, X0_ = X[:, 0].numpy(), X0[:, 0].numpy()
    corr = (X_ * X0_).mean(0) / np.sqrt((X_**2).mean(0) * (X0_**2).mean(0))
    assert kept.sum() >= 3 and np.all(corr[kept] > 0.5 - Z_MAX / math.sqrt(B))
    torch.testing.assert_close(X[..., 0, 0], X0[..., 0, 0], rtol=0, atol=1e-12)  # DC carried exactly (k_c = 0)


def test_per_sample_seeds_do_not_depend_on_batch():
    process = gen_process()
    seeds = [11, 12, 13, 14]
    steps = respaced_steps(process.N, 10)

    def run(batch_seeds):
        gens = per_sample_generators(batch_seeds)
        return reverse_chain(process, oracle(process), process.prior((len(batch_seeds), 1, H, H), gens), steps, gens)

    full = run(seeds)
    torch.testing.assert_close(run(seeds[2:]), full[2:], rtol=0, atol=1e-12)
    torch.testing.assert_close(run(seeds[:1]), full[:1], rtol=0, atol=1e-12)


# ---- 4. respacing -------------------------------------------------------------------------------- #

def test_respaced_kernels_compose_to_marginal():
    process = sr_process()
    one = torch.ones(1, 1, H, H, dtype=torch.float64)
    rng = np.random.default_rng(5)
    sub = np.sort(rng.choice(np.arange(1, 1001), 12, replace=False))
    steps = [0] + [int(s) for s in sub]
    a, s2 = torch.ones_like(one), torch.zeros_like(one)  # X_n = a X_0 + √s2 ε
    for m, n in zip(steps[:-1], steps[1:]):
        a_step = process.kernel(one, m, n, 0 * one)
        b_step = process.kernel(0 * one, m, n, one)
        a, s2 = a_step * a, a_step**2 * s2 + b_step**2
        torch.testing.assert_close(a, process.marginal(one, n, 0 * one), rtol=1e-12, atol=0)
        torch.testing.assert_close(s2, process.marginal(0 * one, n, one) ** 2, rtol=1e-12, atol=1e-300)


def test_respaced_steps():
    assert respaced_steps(1000, 4) == [1000, 750, 500, 250, 0]
    assert respaced_steps(7, 50) == [7, 6, 5, 4, 3, 2, 1, 0]
    steps = respaced_steps(613, 25)
    assert len(steps) == 26 and steps[0] == 613 and steps[-1] == 0 and np.all(np.diff(steps) < 0)


@pytest.mark.parametrize("variance", ["forward", "posterior"])
def test_respaced_generation(variance):
    process = gen_process()
    B = 2000
    g = torch.Generator().manual_seed(6)
    steps = respaced_steps(process.N, 20)
    X = reverse_chain(process, oracle(process), process.prior((B, 1, H, H), g), steps, g, variance=variance)
    V0 = -np.expm1(process.log_alpha_bar(process.N).numpy()) * process.S0.numpy()
    V, _ = chain_moments(process, steps, V0, 0.0, variance=variance)
    assert max_z(X**2, V) < Z_MAX
    if variance == "forward":  # exact reverse of the forward kernels: S0 for any step count
        np.testing.assert_allclose(V, process.S0.numpy(), rtol=1e-12)


def test_superresolution_variance_deficit_of_the_posterior_chain():
    """Why super-resolution defaults to the forward variance: from the forward marginal at n0, the oracle
    chain with the forward step's variance keeps Var X = S0 per mode at any step count, while the
    posterior variance leaves a deficit in the modes the chain resolves that grows as the steps get
    fewer (exact recursion; chain_moments is checked against sampled chains above)."""
    process = sr_process()
    n0 = process.schedule.start_step(2)
    S0 = process.S0.numpy()
    deficits = []
    for K in (10, 25, 100, n0):
        steps = respaced_steps(n0, K)
        V, _ = chain_moments(process, steps, S0, 0.0, variance="forward")
        np.testing.assert_allclose(V, S0, rtol=1e-12)
        V, _ = chain_moments(process, steps, S0, 0.0, variance="posterior")
        ratio = V / S0
        assert ratio.max() <= 1 + 1e-12
        deficits.append(1 - ratio.min())
    assert all(a > b for a, b in zip(deficits, deficits[1:])), deficits
    assert deficits[0] > 0.3 and deficits[2] > 0.05 and deficits[-1] < 0.03, deficits  # 53 %, 13 % at 100, 2 %


def test_reverse_chain_rejects_bad_steps():
    process = sr_process()
    X = torch.zeros(1, 1, H, H, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for steps in ([10, 5], [5, 10, 0], [1001, 0]):
        with pytest.raises(ValueError):
            reverse_chain(process, oracle(process), X, steps, g)


# ---- training loss --------------------------------------------------------------------------------- #

def test_loss_of_oracle_is_mean_alpha_bar():
    # For Gaussian data, Var(ε | X_n) = ᾱ_n per mode: the oracle's expected loss is the mode average of ᾱ_n.
    process = sr_process()
    B = 4000
    g = torch.Generator().manual_seed(7)
    x0 = process.basis.inverse(randn((B, 1, H, H), g) * torch.sqrt(process.S0))
    n = torch.full((B,), 300)
    loss = process.loss(oracle(process), x0, g, n=n)
    assert loss.shape == (B,)
    expected = float(process.alpha_bar(300).mean())
    z = (loss.mean() - expected) / (loss.std() / math.sqrt(B))
    assert abs(float(z)) < Z_MAX


def _scaled_input_net(process, c):
    """A stand-in network (x, n, cond) -> pixels whose output in the basis is V̂ = c X_n / √S0."""
    def net(x, n, cond=None):
        X = process.basis.forward(x.to(torch.float64))
        return process.basis.inverse(c * X / torch.sqrt(process.S0)).to(x.dtype)
    return net


@pytest.mark.parametrize("step", [40, 300, 1000])
def test_v_loss_and_eps_loss_closed_form(step):
    # For Gaussian X_0 ~ N(0, S0) the v-target V = √(1−ᾱ) X_0/√S0 − √ᾱ ε is a unit normal
    # independent of X_n (their covariance √(1−ᾱ)√ᾱ − √ᾱ√(1−ᾱ) vanishes), so a network
    # answering V̂ = c X_n/√S0 has v-loss 1 + c² in every mode and ε-loss ᾱ (1 + c²): the
    # v-weight is the ε-loss divided by ᾱ per mode.  A target with the wrong sign of ε
    # would give 1 + c² − 4c √(ᾱ(1−ᾱ)).  At n = N most modes have ᾱ below 1e-30, where
    # the ε-loss is its rounding (not checked) and dividing it by ᾱ is no longer possible;
    # the v-loss stays exact.
    from skild_phys.methods.skild import skild_objective

    process = gen_process()
    B, c = 4000, 0.5
    g = torch.Generator().manual_seed(11)
    x0 = process.basis.inverse(randn((B, 1, H, H), g) * torch.sqrt(process.S0))
    n = torch.full((B,), step)
    net = _scaled_input_net(process, c)
    seed = 12
    v = skild_objective("v", "v")(net, process, x0, torch.Generator().manual_seed(seed), n)
    eps = skild_objective("v", "eps")(net, process, x0, torch.Generator().manual_seed(seed), n)
    mean_alpha_bar = float(process.alpha_bar(step).mean())
    checks = [(v, 1 + c**2)] + ([(eps, mean_alpha_bar * (1 + c**2))] if mean_alpha_bar > 1e-6 else [])
    for loss, expected in checks:
        z = (loss.mean() - expected) / (loss.std() / math.sqrt(B))
        assert abs(float(z)) < Z_MAX, (step, float(loss.mean()), expected)


def _v_loss_inputs(seed, steps):
    """A process, x0 drawn from its S0 (one per step), the steps n, a fixed network and the loss's draws
    (a generator seeded seed + 1, new per call): what the loss-weight tests compare weights on."""
    process = gen_process()
    z = randn((len(steps), 1, H, H), torch.Generator().manual_seed(seed))
    x0 = process.basis.inverse(z * torch.sqrt(process.S0))
    draws = lambda: torch.Generator().manual_seed(seed + 1)  # noqa: E731
    return process, x0, torch.tensor(steps), _scaled_input_net(process, 0.3), draws


def test_v_sr_loss_is_v_below_the_split_and_eps_above():
    # Per sample, the same draws: the v-MSE for n <= n_sr, the ε-MSE for n > n_sr.
    from skild_phys.methods.skild import skild_objective

    process, x0, n, net, draws = _v_loss_inputs(14, [10, 300, 301, 900])
    losses = {w: skild_objective("v", w, n_sr=300)(net, process, x0, draws(), n)
              for w in ("eps", "v", "v-sr")}
    torch.testing.assert_close(losses["v-sr"][:2], losses["v"][:2], rtol=1e-12, atol=0)
    torch.testing.assert_close(losses["v-sr"][2:], losses["eps"][2:], rtol=1e-4, atol=1e-12)
    assert not torch.allclose(losses["v"][2:], losses["eps"][2:])
    with pytest.raises(ValueError):
        skild_objective("v", "v-sr")


def test_v_octave_loss_is_v_only_inside_the_octave():
    # The same draws: the v-MSE for n_octave < n <= n_sr, the ε-MSE below and above.
    from skild_phys.methods.skild import skild_objective

    process, x0, n, net, draws = _v_loss_inputs(20, [10, 100, 101, 300, 301])
    losses = {w: skild_objective("v", w, n_sr=300, n_octave=100)(net, process, x0, draws(), n)
              for w in ("eps", "v", "v-octave")}
    inside = torch.tensor([False, False, True, True, False])
    torch.testing.assert_close(losses["v-octave"][inside], losses["v"][inside], rtol=1e-12, atol=0)
    torch.testing.assert_close(losses["v-octave"][~inside], losses["eps"][~inside], rtol=1e-4, atol=1e-12)
    assert not torch.allclose(losses["v"][~inside], losses["eps"][~inside])


def test_noise_weight_blends_v_and_eps_per_mode_inside_the_v_range():
    # λ v-MSE + (1 − λ) ε-MSE on the steps where the v weight acts, the ε-MSE alone outside them;
    # λ = 0 is the ε-MSE everywhere and λ = 1 the unblended v-sr loss.
    from skild_phys.methods.skild import skild_objective

    process, x0, n, net, draws = _v_loss_inputs(22, [10, 300, 301, 900])

    def loss(weight, lam=1.0):
        return skild_objective("v", weight, n_sr=300, noise_weight=lam)(net, process, x0, draws(), n)

    v, eps = loss("v"), loss("eps")
    for lam in (0.0, 0.25, 0.7):
        blended = loss("v-sr", lam)
        torch.testing.assert_close(blended[:2], lam * v[:2] + (1 - lam) * eps[:2], rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(blended[2:], eps[2:], rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(loss("v-sr", 1.0), loss("v-sr"), rtol=0, atol=0)
    assert not torch.allclose(v[:2], eps[:2])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            skild_objective("v", "v-sr", n_sr=300, noise_weight=bad)
    with pytest.raises(ValueError):
        skild_objective("v", "eps", noise_weight=0.5)


def test_zero_v_network_is_the_gaussian_denoiser():
    # V̂ = 0 gives ε̂ = √(1−ᾱ_n) X_n/√S0: the exact denoiser for Gaussian data, which is why
    # a v-network starts from what the spectrum alone explains.
    from skild_phys.methods.skild import network_denoiser
    from skild_phys.process.diffusion import gaussian_denoiser

    process = gen_process()
    g = torch.Generator().manual_seed(13)
    x = randn((3, 1, H, H), g)
    n = torch.tensor([1, 400, process.N])
    zero = network_denoiser(lambda x, n, cond: torch.zeros_like(x), process, "v")(x, n)
    torch.testing.assert_close(zero, gaussian_denoiser(process)(x, n), rtol=1e-12, atol=1e-12)


def test_v_loss_needs_v_parameterization():
    from skild_phys.methods.skild import skild_objective

    with pytest.raises(ValueError):
        skild_objective("eps", "v")
    with pytest.raises(ValueError):
        skild_objective("v", "elbo")


def test_loss_per_sample_generators_are_batch_independent():
    process = sr_process()
    x0 = torch.linspace(-1, 1, 3 * H * H, dtype=torch.float64).reshape(3, 1, H, H)
    full = process.loss(oracle(process), x0, per_sample_generators([1, 2, 3]))
    part = process.loss(oracle(process), x0[1:], per_sample_generators([2, 3]))
    torch.testing.assert_close(part, full[1:], rtol=1e-12, atol=0)


def test_channels_broadcast():
    basis = Basis.dct(H)
    S0 = torch.stack([power_S0(basis, alpha=a) for a in (0.8, 1.0, 1.2)])
    process = Process(basis, preset_from_rule(H, 2, theta=9, tau=0.1), S0)
    g = torch.Generator().manual_seed(8)
    X0 = randn((2, 3, H, H), g)
    assert process.marginal(X0, torch.tensor([3, 700]), randn(X0.shape, g)).shape == (2, 3, H, H)
    with pytest.raises(ValueError):
        Process(basis, process.schedule, S0[..., :4])
