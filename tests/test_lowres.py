"""Gaussian conditioning on block means (skild_phys.process.lowres) against closed forms."""

import math

import numpy as np
import pytest
import torch

from skild_phys.process.basis import Basis
from skild_phys.process.lowres import BlockMeanConditional, block_mean_matrix

pytestmark = pytest.mark.usefixtures("single_torch_thread")

Z_MAX = 5.0


def _S0(basis, alpha=0.9):
    return (basis.k**2 + math.pi**2) ** (-alpha)


def _brute_block_mean(x, f):
    """Block means with explicit loops (the slow twin of the basis-space observation)."""
    n, H, W = x.shape
    y = np.zeros((n, H // f, W // f))
    for s in range(n):
        for a in range(H // f):
            for b in range(W // f):
                y[s, a, b] = x[s, f * a:f * a + f, f * b:f * b + f].mean()
    return y


@pytest.mark.parametrize("name", ["dct", "fourier"])
@pytest.mark.parametrize("f", [2, 4])
def test_draws_reproduce_the_block_means_exactly(name, f):
    H = 8
    basis = Basis.named(name, H)
    cond = BlockMeanConditional(basis, _S0(basis), f)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((5, 1, H, H), generator=g, dtype=torch.float64)
    y = torch.as_tensor(_brute_block_mean(x[:, 0].numpy(), f))[:, None]
    np.testing.assert_allclose(cond.observe(basis.forward(x)).numpy(), y.numpy(), atol=1e-12)
    X = cond.sample(y, torch.randn((5, 1, H, H), generator=g, dtype=torch.float64))
    np.testing.assert_allclose(_brute_block_mean(basis.inverse(X)[:, 0].numpy(), f), y[:, 0].numpy(), atol=1e-10)


@pytest.mark.parametrize("name", ["dct", "fourier"])
def test_conditional_law_is_gaussian_conditioning(name):
    """For a fixed y the draws have mean S0 Mᵀ G⁻¹ y and covariance S0 − S0 Mᵀ G⁻¹ M S0 (dense linear algebra)."""
    H, f, n = 8, 4, 20000
    basis = Basis.named(name, H)
    S0 = _S0(basis)
    cond = BlockMeanConditional(basis, S0, f)
    B = np.kron(block_mean_matrix(H, f), block_mean_matrix(H, f))  # (h², H²) on row-major pixels
    A = np.kron(basis._A_H.numpy(), basis._A_W.numpy())  # pixels -> coefficients, row-major
    M = B @ A.T
    Sd = np.diag(S0.numpy().reshape(-1))
    G = M @ Sd @ M.T
    y = np.array([0.7, -0.2, 0.1, 0.4])
    mean = Sd @ M.T @ np.linalg.solve(G, y)
    cov = Sd - Sd @ M.T @ np.linalg.solve(G, M @ Sd)
    g = torch.Generator().manual_seed(2)
    X = cond.sample(torch.as_tensor(y).reshape(1, 1, 2, 2).expand(n, 1, 2, 2),
                    torch.randn((n, 1, H, H), generator=g, dtype=torch.float64)).reshape(n, -1).numpy()
    sd = np.sqrt(np.clip(np.diag(cov), 1e-30, None))
    z_mean = (X.mean(0) - mean) / (sd / math.sqrt(n))
    assert np.abs(z_mean[np.diag(cov) > 1e-20]).max() < Z_MAX
    np.testing.assert_allclose(X.mean(0)[np.diag(cov) <= 1e-20], mean[np.diag(cov) <= 1e-20], atol=1e-10)
    var = X.var(0)
    free = np.diag(cov) > 1e-20
    z_var = (var[free] - np.diag(cov)[free]) / (np.diag(cov)[free] * math.sqrt(2 / n))
    assert np.abs(z_var).max() < Z_MAX


@pytest.mark.parametrize("name", ["dct", "fourier"])
def test_completion_of_gaussian_data_keeps_the_prior(name):
    """If y are the block means of X0 ~ N(0, S0), a conditional draw is again N(0, S0): per-mode variance S0."""
    H, f, n = 8, 2, 20000
    basis = Basis.named(name, H)
    S0 = _S0(basis)
    cond = BlockMeanConditional(basis, S0, f)
    g = torch.Generator().manual_seed(3)
    X0 = torch.sqrt(S0) * torch.randn((n, 1, H, H), generator=g, dtype=torch.float64)
    X = cond.sample(cond.observe(X0), torch.randn((n, 1, H, H), generator=g, dtype=torch.float64))
    z = (X.var(dim=0)[0] - S0) / (S0 * math.sqrt(2 / n))
    assert z.abs().max() < Z_MAX
