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


@pytest.mark.parametrize("noise_var", [0.0, 0.05])
@pytest.mark.parametrize("name", ["dct", "fourier"])
def test_conditional_law_is_gaussian_conditioning(name, noise_var):
    """For a fixed y the draws have mean S0 Mᵀ K⁻¹ y and covariance S0 − S0 Mᵀ K⁻¹ M S0, K = G + σ² I
    (dense linear algebra; σ² = 0 is the exact constraint, σ² > 0 a noisy observation of the block means)."""
    H, f, n = 8, 4, 20000
    basis = Basis.named(name, H)
    S0 = _S0(basis)
    cond = BlockMeanConditional(basis, S0, f, noise_var=noise_var)
    B = np.kron(block_mean_matrix(H, f), block_mean_matrix(H, f))  # (h², H²) on row-major pixels
    A = np.kron(basis._A_H.numpy(), basis._A_W.numpy())  # pixels -> coefficients, row-major
    M = B @ A.T
    Sd = np.diag(S0.numpy().reshape(-1))
    G = M @ Sd @ M.T + noise_var * np.eye(4)
    y = np.array([0.7, -0.2, 0.1, 0.4])
    mean = Sd @ M.T @ np.linalg.solve(G, y)
    cov = Sd - Sd @ M.T @ np.linalg.solve(G, M @ Sd)
    g = torch.Generator().manual_seed(2)
    z_obs = torch.randn((n, 1, 2, 2), generator=g, dtype=torch.float64) if noise_var else None
    X = cond.sample(torch.as_tensor(y).reshape(1, 1, 2, 2).expand(n, 1, 2, 2),
                    torch.randn((n, 1, H, H), generator=g, dtype=torch.float64), z_obs).reshape(n, -1).numpy()
    # modes the block means fix have zero conditional variance; the dense algebra leaves round-off of
    # order 1e-16 of S0 there, so "free" is relative to the prior's own scale
    free = np.diag(cov) > 1e-9 * np.diag(Sd).max()
    sd = np.sqrt(np.clip(np.diag(cov), 1e-30, None))
    z_mean = (X.mean(0) - mean) / (sd / math.sqrt(n))
    assert np.abs(z_mean[free]).max() < Z_MAX
    np.testing.assert_allclose(X.mean(0)[~free], mean[~free], atol=1e-10)
    var = X.var(0)
    z_var = (var[free] - np.diag(cov)[free]) / (np.diag(cov)[free] * math.sqrt(2 / n))
    assert np.abs(z_var).max() < Z_MAX


@pytest.mark.parametrize("noise_var", [0.0, 0.05])
@pytest.mark.parametrize("name", ["dct", "fourier"])
def test_completion_of_gaussian_data_keeps_the_prior(name, noise_var):
    """If y are the block means of X0 ~ N(0, S0) (observed with the noise the conditional assumes), a
    conditional draw is again N(0, S0): per-mode variance S0."""
    H, f, n = 8, 2, 20000
    basis = Basis.named(name, H)
    S0 = _S0(basis)
    cond = BlockMeanConditional(basis, S0, f, noise_var=noise_var)
    g = torch.Generator().manual_seed(3)
    X0 = torch.sqrt(S0) * torch.randn((n, 1, H, H), generator=g, dtype=torch.float64)
    y = cond.observe(X0)
    z_obs = None
    if noise_var:
        y = y + noise_var**0.5 * torch.randn(y.shape, generator=g, dtype=torch.float64)
        z_obs = torch.randn(y.shape, generator=g, dtype=torch.float64)
    X = cond.sample(y, torch.randn((n, 1, H, H), generator=g, dtype=torch.float64), z_obs)
    z = (X.var(dim=0)[0] - S0) / (S0 * math.sqrt(2 / n))
    assert z.abs().max() < Z_MAX


@pytest.mark.parametrize("name", ["dct", "fourier"])
def test_mean_square_is_the_block_means_second_moment(name):
    """E[block mean²] under N(0, S0), as the spread of a ±1 block spin's block mean is derived from it
    (`--lowres-start spread`): the diagonal of G against block means of draws, within their error."""
    H, f, n = 8, 4, 20000
    basis = Basis.named(name, H)
    S0 = _S0(basis)
    cond = BlockMeanConditional(basis, S0, f)
    g = torch.Generator().manual_seed(4)
    x = basis.inverse(torch.sqrt(S0) * torch.randn((n, 1, H, H), generator=g, dtype=torch.float64))
    sq = _brute_block_mean(x[:, 0].numpy(), f) ** 2
    assert abs(sq.mean() - cond.mean_square) < Z_MAX * sq.mean(axis=(1, 2)).std() / math.sqrt(n)
    with pytest.raises(ValueError, match="noisy observation needs z_obs"):
        BlockMeanConditional(basis, S0, f, noise_var=0.1).sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, H, H))


def test_spread_start_softens_block_spins_only(tmp_path, tiny_run16):
    """`--lowres-start spread` observes ±1 block spins with the block mean's spread (E[bm²] − E|bm|² of
    the checkpoint's S0 on its training lattice, > 0), and block means exactly: from a block-mean store it
    writes what `conditional` writes, from a majority store something else; the spread is the same when
    the checkpoint is carried to a 4× larger lattice (a local quantity)."""
    import xarray as xr
    from click.testing import CliRunner

    from skild_phys.cli import main
    from skild_phys.methods import load_trained
    from skild_phys.methods.skild import at_size
    from skild_phys.methods.starts import block_spin_spread

    run, data = tiny_run16
    model = load_trained(run, device="cpu")
    scale = model.config.data["block_mean_abs"]["4"]
    spread = block_spin_spread(model, 4, scale)
    assert spread > 0
    # the carried S0 returns to the training grid up to its interpolation (2 % here, 0.04 % at L = 32)
    assert abs(block_spin_spread(at_size(model, 64, 64), 4, scale) - spread) < 0.05 * spread

    def spins(lowres, start, name):
        r = CliRunner().invoke(main, ["superres", "--checkpoint", str(run), "--lowres", str(lowres), "--factor", "4",
                                      "--samples", "3", "--steps", "4", "--seed", "1", "--lowres-start", start,
                                      "--out", str(tmp_path / name), "--quiet", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        return xr.open_zarr(tmp_path / name).spins.values

    stores = {}
    for rule in ("mean", "majority"):
        stores[rule] = tmp_path / f"{rule}.zarr"
        r = CliRunner().invoke(main, ["coarsen", str(data), "--factor", "4", "--rule", rule, "--out",
                                      str(stores[rule]), "--quiet"])
        assert r.exit_code == 0, r.output
    assert (spins(stores["mean"], "spread", "a.zarr") == spins(stores["mean"], "conditional", "b.zarr")).all()
    assert (spins(stores["majority"], "spread", "c.zarr") != spins(stores["majority"], "conditional", "d.zarr")).any()
