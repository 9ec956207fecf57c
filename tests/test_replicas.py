"""The replica decomposition (analysis.replicas) against closed forms and the exact Gaussian chain."""

import numpy as np
import pytest
import torch

from analysis.profile import bond_rows
from analysis.replicas import DECOMPOSITION, decomposition_difference, variance_decomposition
from skild_phys.methods.skild import auto_schedule
from skild_phys.process.basis import Basis
from skild_phys.process.diffusion import Process, gaussian_denoiser, randn, respaced_steps, reverse_chain
from skild_phys.process.transfer import axis_wavenumbers


def linear_gaussian(M: int, R: int, b: float, gamma: float, c: float, rng):
    """t = a + b u, x_r = γ a + c v_r with a, u, v_r independent N(0, 1): the start carries a."""
    a = rng.standard_normal(M)
    truth = a + b * rng.standard_normal(M)
    model = gamma * a + c * rng.standard_normal((R, M))
    exact = {"model_variance": (gamma**2 + c**2) / (1 + b**2), "replica_covariance": gamma**2 / (1 + b**2),
             "truth_covariance": gamma / (1 + b**2), "response_gap": (gamma - gamma**2) / (1 + b**2),
             "within": c**2 / (1 + b**2),
             "explained_bound": 1 / (1 + b**2), "mean_difference": 0.0}
    return truth, model, exact


@pytest.mark.parametrize("gamma, c", [(1.0, 0.5), (0.6, 0.9)])  # an exact sampler (c² = b²), a shrunk one
def test_decomposition_matches_its_closed_form(gamma, c):
    truth, model, exact = linear_gaussian(20000, 3, 0.5, gamma, c, np.random.default_rng(1))
    d = variance_decomposition(truth, model)
    assert set(d) == set(DECOMPOSITION)
    for name, (value, error) in d.items():
        assert 0 < error < 0.05, (name, error)
        assert abs(value - exact[name]) < 4 * error, (name, value, exact[name], error)


def test_jackknife_errors_match_the_scatter_over_repetitions():
    rng = np.random.default_rng(2)
    runs = [variance_decomposition(*linear_gaussian(400, 2, 0.7, 0.6, 0.9, rng)[:2], n_blocks=20) for _ in range(200)]
    for name in ("model_variance", "replica_covariance", "truth_covariance", "response_gap", "within"):
        values = np.array([r[name][0] for r in runs])
        errors = np.array([r[name][1] for r in runs])
        # 200 repetitions: the scatter's standard deviation is known to about 5 %
        assert 0.75 < np.median(errors) / values.std() < 1.3, (name, np.median(errors), values.std())


def two_linear_gaussians(M: int, R: int, b: float, models, rng):
    """One truth t = a + b u and two models x_r = γ a + c v_r of it that share a and the chain noise v_r."""
    a = rng.standard_normal(M)
    truth = a + b * rng.standard_normal(M)
    v = rng.standard_normal((R, M))
    return truth, [gamma * a + c * v for gamma, c in models]


def test_difference_of_two_models_matches_the_difference_of_closed_forms():
    models = [(1.0, 0.5), (0.8, 0.7)]
    truth, (xa, xb) = two_linear_gaussians(20000, 2, 0.5, models, np.random.default_rng(3))
    d = decomposition_difference(truth, xa, xb)
    assert set(d) == set(DECOMPOSITION)
    exact = [linear_gaussian(1, 1, 0.5, g, c, np.random.default_rng(0))[2] for g, c in models]
    single = variance_decomposition(truth, xa)
    for name, (value, error) in d.items():
        assert abs(value - (exact[0][name] - exact[1][name])) < 4 * error + 1e-12, (name, value, error)
    # the shared truth and chain noise cancel: the paired error is well below the two separate ones
    assert d["model_variance"][1] < 0.5 * single["model_variance"][1]


def test_difference_of_a_model_with_itself_is_exactly_zero():
    truth, (xa,) = two_linear_gaussians(500, 3, 0.5, [(0.7, 0.6)], np.random.default_rng(4))
    for value, error in decomposition_difference(truth, xa, xa.copy()).values():
        assert value == 0.0 and error == 0.0


def test_paired_jackknife_errors_match_the_scatter_over_repetitions():
    rng = np.random.default_rng(5)
    runs = [decomposition_difference(*_pair(rng), n_blocks=20) for _ in range(200)]
    for name in ("model_variance", "replica_covariance", "truth_covariance", "response_gap", "within"):
        values = np.array([r[name][0] for r in runs])
        errors = np.array([r[name][1] for r in runs])
        assert 0.75 < np.median(errors) / values.std() < 1.3, (name, np.median(errors), values.std())


def _pair(rng):
    truth, (xa, xb) = two_linear_gaussians(400, 2, 0.7, [(0.6, 0.9), (0.8, 0.7)], rng)
    return truth, xa, xb


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        variance_decomposition(np.zeros(10), np.zeros((1, 10)))  # one replica
    with pytest.raises(ValueError):
        variance_decomposition(np.zeros(10), np.zeros((2, 9)))
    with pytest.raises(ValueError):
        variance_decomposition(np.zeros(10), np.zeros((2, 10)), n_blocks=11)
    with pytest.raises(ValueError):
        decomposition_difference(np.zeros(10), np.zeros((2, 10)), np.zeros((3, 10)))


H = 16


def field_bonds(x: torch.Tensor) -> np.ndarray:
    """Mean nearest-neighbour product of each field (B, 1, H, W): a quadratic 'energy' of Gaussian data."""
    return bond_rows(x[:, 0].numpy()).mean(axis=1)


def gaussian_replicas(variance: str, K: int, M: int = 1500, R: int = 2):
    """Truth fields of spectrum S0, and R oracle super-resolution chains from each one's forward marginal at n0
    (one shared start per truth field, independent chain noise per replica)."""
    qy, qx = np.meshgrid(axis_wavenumbers("fourier", H), axis_wavenumbers("fourier", H), indexing="ij")
    process = Process(Basis.fourier(H), auto_schedule(H, 4), torch.as_tensor((qy**2 + qx**2 + 1e-2) ** (-0.875)))
    n0 = process.schedule.start_step(H / 4)
    g = torch.Generator().manual_seed(3)
    X0 = randn((M, 1, H, H), g) * torch.sqrt(process.S0)
    start = process.marginal(X0, n0, randn(X0.shape, g))
    steps = respaced_steps(n0, K)
    model = [field_bonds(process.basis.inverse(reverse_chain(process, gaussian_denoiser(process), start, steps, g,
                                                             variance=variance))) for _ in range(R)]
    return field_bonds(process.basis.inverse(X0)), np.stack(model)


def test_exact_gaussian_chain_has_no_deficit():
    """The oracle chain with the forward step's variance samples the exact Gaussian conditional at any step
    count (tests/test_process.py): every identity of an exact sampler holds within errors."""
    truth, model = gaussian_replicas("forward", K=10)
    d = variance_decomposition(truth, model)
    for name, exact in (("model_variance", 1.0), ("mean_difference", 0.0)):
        assert abs(d[name][0] - exact) < 4 * d[name][1], (name, d[name])
    assert abs(d["response_gap"][0]) < 4 * d["response_gap"][1], d


def test_the_posterior_chain_deficit_is_found_in_within_start_spread():
    """With 5 steps the posterior variance loses variance in the modes the chain resolves (tests/test_process.py):
    the decomposition puts the loss where it is, in the spread of the samples of one start (and the mean
    of the quadratic), not in the response to the start: replica and truth covariance still agree."""
    truth, model = gaussian_replicas("posterior", K=5, M=3000)
    exact_truth, exact_model = gaussian_replicas("forward", K=5, M=3000)
    d, e = variance_decomposition(truth, model), variance_decomposition(exact_truth, exact_model)
    assert d["within"][0] < e["within"][0] - 4 * np.hypot(d["within"][1], e["within"][1]), (d, e)
    assert d["mean_difference"][0] < -5 * d["mean_difference"][1], d
    assert abs(d["response_gap"][0]) < 4 * d["response_gap"][1], d
