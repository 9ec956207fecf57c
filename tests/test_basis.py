"""Bases: orthonormality, round trips, wavenumbers, and the low-resolution embedding normalisation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.spectrum import dct2, dct_matrix, fourier_matrix, idct2
from ising.lattice import block_mean
from skild_phys.process.basis import Basis, embed_low_modes

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def test_dct_matches_scipy_and_round_trips_float64():
    x = torch.randn(3, 2, 16, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = Basis.dct(16, 12)
    X = basis.forward(x)
    np.testing.assert_allclose(X.numpy(), dct2(x.numpy()), atol=1e-12)
    np.testing.assert_allclose(idct2(X.numpy()), x.numpy(), atol=1e-12)
    assert float((basis.inverse(X) - x).abs().max()) < 1e-12


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 20), W=st.integers(1, 20), lead=st.lists(st.integers(1, 3), max_size=2),
       dtype=st.sampled_from([torch.float32, torch.float64]), name=st.sampled_from(["dct", "fourier"]),
       seed=st.integers(0, 2**16))
def test_round_trip_and_parseval(H, W, lead, dtype, name, seed):
    basis = Basis.named(name, H, W)
    x = torch.randn(*lead, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    X = basis.forward(x)
    assert X.dtype == dtype and X.shape == x.shape
    scale = float(x.abs().max()) + 1
    assert float((basis.inverse(X) - x).abs().max()) <= TOL[dtype] * scale
    assert float((basis.forward(basis.inverse(x)) - x).abs().max()) <= TOL[dtype] * scale
    # Orthonormal: the squared norm is preserved per field.
    torch.testing.assert_close(X.square().sum((-2, -1)), x.square().sum((-2, -1)),
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * scale**2 * H * W)


@pytest.mark.parametrize("N", [1, 2, 5, 8, 9])
def test_matrices_are_orthogonal(N):
    for A in (dct_matrix(N), fourier_matrix(N)):
        np.testing.assert_allclose(A @ A.T, np.eye(N), atol=1e-13)


def test_wavenumbers_measure_the_same_physical_scale():
    # A wave with wavelength ℓ = 1/m of the side has k = 2π m in both bases.
    N = 16
    j = np.arange(N)
    m = 3
    dct, fourier = Basis.dct(N), Basis.fourier(N)
    x_dct = np.cos(np.pi * 2 * m * (j + 0.5) / N)[:, None] * np.ones(N)[None, :]
    x_per = np.cos(2 * np.pi * m * j / N)[:, None] * np.ones(N)[None, :]
    for basis, x in ((dct, x_dct), (fourier, x_per)):
        X = basis.forward(torch.as_tensor(x))
        power = X.square() / X.square().sum()
        k_mean = float((power * basis.k).sum())
        assert k_mean == pytest.approx(2 * np.pi * m, rel=1e-12)


def test_radial_factors_commute_with_torus_symmetries():
    # In the Fourier basis a radial per-mode factor is a translation- and rotation-invariant filter.
    N = 12
    basis = Basis.fourier(N)
    x = torch.randn(N, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gain = torch.exp(-0.01 * basis.k**2) + 0.3 * torch.cos(basis.k / 5)

    def filt(y):
        return basis.inverse(gain * basis.forward(y))

    for op in (lambda y: torch.roll(y, (1, 3), (0, 1)), lambda y: torch.rot90(y, 1, (0, 1)), lambda y: y.T):
        torch.testing.assert_close(filt(op(x)), op(filt(x)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("f", [2, 4])
def test_embedding_normalisation_exact_per_mode(f):
    # Block-averaging an HR DCT mode (u, v) gives the LR mode (u, v) times D(u)D(v)/f, with
    # D(u) = sin(π u f / 2H) / (f sin(π u / 2H)); embedding multiplies by f.
    H = 16
    h = H // f
    hr, lr = Basis.dct(H), Basis.dct(h)

    def D(u):
        return 1.0 if u == 0 else math.sin(math.pi * u * f / (2 * H)) / (f * math.sin(math.pi * u / (2 * H)))

    for u, v in [(0, 0), (1, 0), (1, 2), (h - 1, 1)]:
        e = torch.zeros(H, H, dtype=torch.float64)
        e[u, v] = 1.0
        X = embed_low_modes(lr.forward(block_mean(hr.inverse(e), f)), H)
        expected = torch.zeros_like(e)
        expected[u, v] = D(u) * D(v)
        torch.testing.assert_close(X, expected, rtol=0, atol=1e-12)


def test_embedding_of_smooth_field_matches_low_modes():
    H, f = 32, 4
    h = H // f
    y, x = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(H) + 0.5) / H, indexing="ij")
    field = torch.as_tensor(np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.08) + 0.3 * x * y)
    X_hr = Basis.dct(H).forward(field)
    X = embed_low_modes(Basis.dct(h).forward(block_mean(field, f)), H)
    low = slice(0, h // 2)
    # Smooth field: the low modes agree to the block-average attenuation 1 − D(u)D(v) ≤ 5% at u, v < h/2.
    err = (X[low, low] - X_hr[low, low]).abs().max() / X_hr.abs().max()
    assert float(err) < 0.05
    assert torch.all(X[h:, :] == 0) and torch.all(X[:, h:] == 0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        Basis.dct(8).forward(torch.zeros(4, 8))
    with pytest.raises(ValueError):
        embed_low_modes(torch.zeros(9, 9), 8)
    with pytest.raises(ValueError):
        Basis.named("wavelet", 8)
