"""Few-step samplers (skild_phys.sampling.samplers) on closed forms: Gaussian data with the oracle denoiser.

For data X_0 ~ N(0, S0) the exact denoiser is linear per mode, so a deterministic sampler
maps the start state's per-mode standard deviation √S0 (the forward marginal of such data
has variance S0 at every step) to the output's: running it on X_start = √S0 gives the
per-mode gain exactly, with no sampling error.
"""

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from skild_phys.cli import main
from skild_phys.methods.skild import auto_schedule
from skild_phys.process.basis import Basis
from skild_phys.process.diffusion import Process, gaussian_denoiser, per_sample_generators, randn, reverse_chain
from skild_phys.process.transfer import axis_wavenumbers
from skild_phys.sampling.samplers import (
    churned_step,
    ddim_chain,
    heun_chain,
    heun_ode,
    network_evaluations,
    placed_steps,
    sample_chain,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

H = 16


@pytest.fixture(scope="module")
def process():
    qy, qx = np.meshgrid(axis_wavenumbers("fourier", H), axis_wavenumbers("fourier", H), indexing="ij")
    S0 = torch.as_tensor((qy**2 + qx**2 + 1e-4) ** (-0.875))
    return Process(Basis.fourier(H), auto_schedule(H, 4), S0)


def _gain2(process, chain) -> np.ndarray:
    """Output variance / S0 per mode of a deterministic chain on Gaussian data."""
    x = torch.sqrt(process.S0)[None, None]
    return (chain(x)[0, 0] ** 2 / process.S0).numpy()


def test_ddim_eta1_is_the_ancestral_chain(process):
    eps = gaussian_denoiser(process)
    n0 = process.schedule.start_step(H / 4)
    steps = placed_steps(process, n0, 12)
    X = torch.sqrt(process.S0) * randn((3, 1, H, H), per_sample_generators([1, 2, 3]))
    a = reverse_chain(process, eps, X, steps, per_sample_generators([7, 8, 9]))
    b = ddim_chain(process, eps, X, steps, per_sample_generators([7, 8, 9]), eta=1.0)
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K", [5, 20, 100])
def test_ddim_eta0_matches_its_closed_form(process, K):
    """Gaussian oracle: each DDIM step multiplies the whitened state by √(ᾱ_m ᾱ_n) + √((1−ᾱ_m)(1−ᾱ_n))."""
    n0 = process.schedule.start_step(H / 4)
    steps = placed_steps(process, n0, K)
    gain = torch.ones(H, H, dtype=torch.float64)
    for n, m in zip(steps[:-1], steps[1:]):
        a_n, a_m = process.alpha_bar(n), process.alpha_bar(m)
        gain = gain * (torch.sqrt(a_n * a_m) + torch.sqrt((1 - a_n) * (1 - a_m)))
    measured = _gain2(process, lambda x: ddim_chain(process, gaussian_denoiser(process), x, steps))
    np.testing.assert_allclose(measured, (gain**2).numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("start", ["superres", "generate"])
@pytest.mark.parametrize("K", [25, 50, 100])
def test_heun_reproduces_S0_in_every_mode(process, start, K):
    """Stated tolerance: with log-λ spacing and K ≥ 25 steps every mode keeps S0 within 3.5 %
    (the last, first-order step into n = 0 loses ᾱ_1 of the finest modes)."""
    n_start = process.schedule.start_step(H / 4) if start == "superres" else process.N
    steps = placed_steps(process, n_start, K, "log-lambda")
    ratio = _gain2(process, lambda x: heun_chain(process, gaussian_denoiser(process), x, steps))
    assert ratio.min() > 0.965 and ratio.max() < 1.005, (ratio.min(), ratio.max())
    # the deterministic first-order chain at the same steps loses more, and more with fewer steps
    euler = _gain2(process, lambda x: ddim_chain(process, gaussian_denoiser(process), x, steps))
    assert euler.min() < ratio.min()


def test_ancestral_forward_variance_is_exact_at_any_step_count(process):
    n0 = process.schedule.start_step(H / 4)
    B = 400
    gens = per_sample_generators(range(B))
    X = torch.sqrt(process.S0) * randn((B, 1, H, H), gens)
    out = reverse_chain(process, gaussian_denoiser(process), X, placed_steps(process, n0, 4), gens, variance="forward")
    ratio = ((out[:, 0] ** 2).mean(0) / process.S0).numpy()
    # per mode: a chi-square mean of B terms, relative error sqrt(2/B) = 0.07; over all 256 modes
    assert abs(ratio.mean() - 1) < 4 * math.sqrt(2 / (B * H * H))
    assert np.abs(ratio - 1).max() < 5 * math.sqrt(2 / B)


def _ancestral_variance(process, steps, forward_from: int) -> torch.Tensor:
    """Closed form of the ancestral chain's per-mode output variance on Gaussian data with the oracle:
    every step is linear, X_m = (C1 a_n + C2) X_n + noise with X̂_0 = a_n X_n, from Var = S0 at the start."""
    V = process.S0.clone()
    for n, m in zip(steps[:-1], steps[1:]):
        la = process.log_alpha_bar(n)
        ones = torch.ones_like(V)
        a = process.x0_hat(ones, torch.sqrt(-torch.expm1(la)) * ones / torch.sqrt(process.S0), n)
        C1, C2, var = process.posterior_coefficients(m, n)
        if n <= forward_from:
            var = process.S0 * -torch.expm1(la - process.log_alpha_bar(m))
        elif m == 0:
            var = torch.zeros_like(V)
        V = (C1 * a + C2) ** 2 * V + var
    return V


@pytest.mark.parametrize("variance", ["posterior", "split", "forward"])
def test_ancestral_generation_variance_matches_its_closed_form(process, variance):
    """Generation in 6 steps: the posterior variance loses power in the modes its steps resolve, the
    forward one keeps S0, and split (posterior above n0, forward from n0 down) keeps S0 in the modes
    resolved below n0 — each as its closed form says, within the chi-square error of B samples."""
    n0 = process.schedule.start_step(H / 4)
    spec = {"posterior": "posterior", "forward": "forward", "split": f"split:{n0}"}[variance]
    steps = placed_steps(process, process.N, 6)
    expected = _ancestral_variance(process, steps, {"posterior": -1, "forward": process.N, "split": n0}[variance])
    B = 400
    gens = per_sample_generators(range(B))
    X = torch.sqrt(process.S0) * randn((B, 1, H, H), gens)
    out = reverse_chain(process, gaussian_denoiser(process), X, steps, gens, variance=spec)
    ratio = ((out[:, 0] ** 2).mean(0) / expected).numpy()
    assert abs(ratio.mean() - 1) < 4 * math.sqrt(2 / (B * H * H))
    assert np.abs(ratio - 1).max() < 5 * math.sqrt(2 / B)
    deficit = (expected / process.S0).numpy()
    k2 = process.k_eff2.numpy()
    fine = k2 >= np.quantile(k2, 0.75)  # the modes the last steps resolve, all below n0
    if variance == "posterior":
        assert deficit[fine].min() < 0.9  # a real loss for the closed form to describe
    else:
        np.testing.assert_allclose(deficit[fine], 1.0, rtol=1e-6)
    if variance == "forward":
        np.testing.assert_allclose(deficit, 1.0, rtol=1e-6)


def test_split_variance_is_posterior_above_and_forward_below(process):
    eps = gaussian_denoiser(process)
    n0 = process.schedule.start_step(H / 4)
    X = torch.sqrt(process.S0) * randn((2, 1, H, H), per_sample_generators([1, 2]))

    def run(start, variance):
        return reverse_chain(process, eps, X, placed_steps(process, start, 7), per_sample_generators([3, 4]),
                             variance=variance)

    assert torch.equal(run(process.N, "split:0"), run(process.N, "posterior"))
    assert torch.equal(run(process.N, f"split:{process.N}"), run(process.N, "forward"))
    assert torch.equal(run(n0, f"split:{n0}"), run(n0, "forward"))  # super-resolution from n0: all forward
    assert not torch.equal(run(process.N, f"split:{n0}"), run(process.N, "posterior"))
    assert not torch.equal(run(process.N, f"split:{n0}"), run(process.N, "forward"))
    for bad in ("split", "split:-1", f"split:{process.N + 1}", "both"):
        with pytest.raises(ValueError, match="variance must be"):
            run(n0, bad)


def test_the_ode_is_reversible(process):
    # with the S0 oracle itself the flow is stationary (Var = S0 at every step); the oracle of
    # Gaussian data with twice that spectrum, E[ε | Y] = √(1−ᾱ) Y / (2ᾱ + 1 − ᾱ) (Y = X/√S0),
    # makes the ODE move the state
    def eps(x, n):
        ab = process.alpha_bar(n)
        X = process.basis.forward(x)
        return process.basis.inverse(torch.sqrt(1 - ab) / (2 * ab + 1 - ab) * X / torch.sqrt(process.S0))

    n0 = process.schedule.start_step(H / 4)
    X = torch.sqrt(process.S0) * randn((4, 1, H, H), per_sample_generators(range(4)))
    down = [s for s in placed_steps(process, n0, 50, "log-lambda") if s >= 5]
    down = down + ([5] if down[-1] != 5 else [])
    latent = heun_ode(process, eps, X, down[::-1])  # encode: n = 5 -> n0
    back = heun_ode(process, eps, latent, down)  # decode: n0 -> 5
    assert float((back - X).abs().max() / X.abs().max()) < 1e-4
    assert float((latent - X).abs().max() / X.abs().max()) > 0.01  # the latent is not the input


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 0.5), ("heun", 0.0), ("heun", 0.5),
                                        ("ancestral", 0.0)])
def test_results_do_not_depend_on_the_batch(process, sampler, eta):
    eps = gaussian_denoiser(process)
    steps = placed_steps(process, process.schedule.start_step(H / 4), 8, "rho")
    X = torch.sqrt(process.S0) * randn((4, 1, H, H), per_sample_generators(range(4)))
    whole = sample_chain(process, eps, X, steps, per_sample_generators([5, 6, 7, 8]), sampler=sampler, eta=eta)
    parts = [sample_chain(process, eps, X[i:i + 2], steps, per_sample_generators([5 + i, 6 + i]), sampler=sampler,
                          eta=eta) for i in (0, 2)]
    np.testing.assert_allclose(torch.cat(parts).numpy(), whole.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spacing", ["uniform", "log-lambda", "rho"])
def test_step_placements(process, spacing):
    n0 = process.schedule.start_step(H / 4)
    for K in (1, 3, 10, 50, 10 ** 4):
        steps = placed_steps(process, n0, K, spacing)
        assert steps[0] == n0 and steps[-1] == 0 and len(steps) - 1 <= min(K, n0)
        assert all(a > b for a, b in zip(steps, steps[1:]))
    if spacing == "log-lambda":
        steps = placed_steps(process, n0, 20, spacing)
        lam = process.lam.numpy()[steps[:-1]]
        gaps = np.abs(np.diff(np.log(lam)))
        assert 0.5 < gaps.min() / np.median(gaps) and gaps.max() / np.median(gaps) < 1.5  # integer rounding


def test_churned_step_moves_up_by_the_fraction_of_the_step_in_log_lambda(process):
    lam = process.lam.numpy()
    n0 = process.schedule.start_step(H / 4)
    steps = placed_steps(process, n0, 10, "log-lambda")
    for n, m in zip(steps[1:-1], steps[2:]):
        assert churned_step(process, n, m, 0.0) == n
        ups = [churned_step(process, n, m, c) for c in (0.25, 0.5, 1.0)]
        assert n <= ups[0] <= ups[1] <= ups[2] <= process.N
        # on the integer grid: the first step at or above the target in log λ
        target = np.log(lam[n]) + 1.0 * (np.log(lam[n]) - np.log(lam[max(m, 1)]))
        assert np.log(lam[ups[2] - 1]) < target <= np.log(lam[ups[2]]) or ups[2] == process.N


def test_churned_heun_keeps_S0_and_costs_2K_minus_1_evaluations(process):
    """Gaussian oracle, η = 0.5: the forward kernel keeps the exact marginal and Heun's bias stays
    that of the deterministic chain (K = 25: every mode within 3.5 % of S0); B samples give each
    mode's variance a relative error √(2/B), the mean over all modes √(2/(B H²))."""
    eps = gaussian_denoiser(process)
    calls = []

    def counted(x, n):
        calls.append(x.shape[0])
        return eps(x, n)

    n0 = process.schedule.start_step(H / 4)
    steps = placed_steps(process, n0, 25, "log-lambda")
    B = 400
    X = torch.sqrt(process.S0) * randn((B, 1, H, H), per_sample_generators(range(B)))
    out = heun_chain(process, counted, X, steps, per_sample_generators(range(B, 2 * B)), churn=0.5)
    assert len(calls) == network_evaluations("heun", len(steps) - 1)
    ratio = ((out[:, 0] ** 2).mean(0) / process.S0).numpy()
    assert 0.965 - 4 * math.sqrt(2 / (B * H * H)) < ratio.mean() < 1.005 + 4 * math.sqrt(2 / (B * H * H))
    assert np.abs(ratio - 1).max() < 0.035 + 5 * math.sqrt(2 / B)
    # η = 0 is the deterministic ODE itself, and η > 0 draws differ from it
    det = heun_chain(process, eps, X[:4], steps)
    np.testing.assert_array_equal(heun_chain(process, eps, X[:4], steps, per_sample_generators(range(4)),
                                             churn=0.0).numpy(), det.numpy())
    assert float((out[:4] - det).abs().max()) > 0.1 * float(det.abs().max())


def test_network_evaluations():
    assert network_evaluations("heun", 10) == 19 and network_evaluations("ddim", 10) == 10


def test_cli_samplers(tmp_path, tiny_run16):
    run, data = tiny_run16
    out = tmp_path / "heun.zarr"
    r = CliRunner().invoke(main, ["superres", "--checkpoint", str(run), "--data", str(data), "--factor", "4",
                                  "--samples", "3", "--steps", "5", "--sampler", "heun", "--spacing", "log-lambda",
                                  "--out", str(out), "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    attrs = xr.open_zarr(out).attrs
    assert attrs["sampler"] == "heun" and attrs["network_evaluations"] == 2 * attrs["reverse_steps"] - 1
    assert attrs["params"]["spacing"] == "log-lambda"
    r = CliRunner().invoke(main, ["superres", "--checkpoint", str(run), "--data", str(data), "--factor", "4",
                                  "--sampler", "ancestral", "--eta", "0.5", "--out", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2 and "--eta belongs to --sampler ddim" in r.output


def test_memory_bound_caps_the_batch_and_changes_no_sample(tiny_run16, tmp_path):
    """The driver runs at most as many samples at once as fit the memory share; samples do not depend
    on the batch, so a capped run writes the same configurations as an uncapped one."""
    from skild_phys.methods import load_trained
    from skild_phys.methods.starts import generation_start
    from skild_phys.sampling import driver
    from skild_phys.sampling.lattice import run_sampler

    run, _ = tiny_run16
    model = load_trained(run, "cpu")
    start = generation_start(model)
    per = driver.per_sample_bytes(model, start, [0], start.n_start)
    assert per > driver.CHAIN_COPIES * 8 * 16 * 16  # the network's activations come on top of the chain state
    assert driver.memory_batch(64, per, torch.device("cpu"), budget=3 * per + 1) == 3
    assert driver.memory_batch(64, per, torch.device("cpu"), budget=per // 2) == 1
    assert driver.memory_batch(2, per, torch.device("cpu"), budget=100 * per) == 2
    attrs = {"mode": "generate", "source": None}
    free, final = driver.free_memory, driver.final_samples
    batches = []

    def recording(*args, **kwargs):
        for idx, seeds, x in final(*args, **kwargs):
            batches.append(len(idx))
            yield idx, seeds, x

    a = run_sampler(tmp_path / "a.zarr", model, start, 5, attrs, 4, batch=5, progress=False, log=lambda m: None)
    try:
        driver.free_memory = lambda device: int(2 * per / driver.MEMORY_SHARE) + 1  # room for two samples at once
        driver.final_samples = recording
        b = run_sampler(tmp_path / "b.zarr", model, start, 5, attrs, 4, batch=5, progress=False, log=lambda m: None)
    finally:
        driver.free_memory, driver.final_samples = free, final
    assert batches == [2, 2, 1] and a["params"] == b["params"]
    sa, sb = xr.open_zarr(tmp_path / "a.zarr"), xr.open_zarr(tmp_path / "b.zarr")
    assert (sa.spins.values == sb.spins.values).all() and (sa.energy.values == sb.energy.values).all()


def test_cli_variance_defaults_per_chain_start(tmp_path, tiny_run16):
    """A SKILD lattice checkpoint super-resolves with the forward variance and generates with split (the
    posterior variance above the checkpoint's n0, the forward one from n0) unless told
    (methods.default_variance); the store records which ran, split with its switch step."""
    from skild_phys.methods import load_trained
    from skild_phys.methods.starts import start_step_for_factor

    run, data = tiny_run16
    assert json.loads((run / "config.json").read_text())["train"]["ema_decay"] == 0.99  # train's lattice default
    model = load_trained(run, device="cpu")
    n0 = start_step_for_factor(model, model.config.factor)
    assert 0 < n0 < model.process.N

    def spins(command, name, *extra):
        args = [command, "--checkpoint", str(run), "--samples", "3", "--steps", "5", "--seed", "2",
                "--out", str(tmp_path / name), "--quiet", "--device", "cpu", *extra]
        if command == "superres":
            args += ["--data", str(data), "--factor", "4"]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        ds = xr.open_zarr(tmp_path / name)
        return ds.attrs["variance"], ds.spins.values

    for command, default, recorded, others in (("superres", "forward", "forward", ("posterior",)),
                                               ("generate", "split", f"split:{n0}", ("forward", "posterior"))):
        variance, by_default = spins(command, f"{command}.zarr")
        assert variance == recorded
        assert (spins(command, f"{command}-{default}.zarr", "--variance", default)[1] == by_default).all()
        for other in others:
            variance, changed = spins(command, f"{command}-{other}.zarr", "--variance", other)
            assert variance == (f"split:{n0}" if other == "split" else other) and (changed != by_default).any()
    # super-resolution starts at n0, so split is the forward chain there
    variance, split_sr = spins("superres", "superres-split.zarr", "--variance", "split")
    assert variance == f"split:{n0}" and (split_sr == spins("superres", "superres.zarr")[1]).all()
