"""Tests of the U-Net backbone: shapes, symmetry, determinism, initialisation and trainability."""

import dataclasses

import numpy as np

import pytest
import torch

from skild_phys.networks.unet import CONFIGS, UNet, build_unet, count_parameters

N_STEPS = 1000


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The model in float64 with every parameter perturbed, so no zero-initialised layer hides a path."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def _inputs(batch: int, channels: int, size: tuple[int, int], seed: int):
    """Random float64 images and random integer steps 0..N."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *size, generator=generator, dtype=torch.float64)
    n = torch.randint(0, N_STEPS + 1, (batch,), generator=generator)
    return x, n


@pytest.mark.parametrize("name, low, high", [("tiny", 1e5, 3e5), ("small", 1e6, 3e6), ("base", 3e7, 6e7)])
def test_parameter_counts_in_target_ranges(name, low, high):
    model = build_unet(name)
    assert low <= count_parameters(model) <= high
    assert f"{count_parameters(model):,} parameters" in model.summary()


def test_unknown_size_raises():
    with pytest.raises(ValueError, match="tiny"):
        build_unet("huge")


def test_output_is_zero_at_init():
    model = build_unet("tiny", cond_channels=1).double()
    x, n = _inputs(3, 1, (16, 16), seed=0)
    cond, _ = _inputs(3, 1, (16, 16), seed=1)
    assert torch.count_nonzero(model(x, n, cond)) == 0


def test_same_seed_gives_same_weights():
    torch.manual_seed(7)
    first = build_unet("tiny").state_dict()
    torch.manual_seed(7)
    second = build_unet("tiny").state_dict()
    torch.manual_seed(8)
    other = build_unet("tiny").state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def _torus_shift_error(periodic: bool, shift: tuple[int, int], film: bool = False) -> float:
    """max |f(T x) − T f(x)| for a torus translation T of x and of its conditioning image."""
    config = dataclasses.replace(CONFIGS["tiny"], film=film)
    model = _randomised(UNet(config, cond_channels=1, periodic=periodic), seed=1)
    x, n = _inputs(2, 1, (16, 16), seed=2)
    cond, _ = _inputs(2, 1, (16, 16), seed=3)

    def roll(image):
        return torch.roll(image, shifts=shift, dims=(-2, -1))

    with torch.no_grad():
        return (model(roll(x), n, roll(cond)) - roll(model(x, n, cond))).abs().max().item()


@pytest.mark.parametrize("film", [False, True])
@pytest.mark.parametrize("shift", [(4, 0), (0, 8), (12, 4)])
def test_periodic_net_is_equivariant_under_torus_shifts_by_multiples_of_2_pow_downsamplings(shift, film):
    assert CONFIGS["tiny"].downsamplings == 2
    assert _torus_shift_error(periodic=True, shift=shift, film=film) < 1e-10


def test_periodic_net_is_not_equivariant_under_a_single_site_shift():
    # stride-2 sampling picks a sublattice, so only shifts by multiples of 2^downsamplings commute
    assert _torus_shift_error(periodic=True, shift=(1, 0)) > 1e-3


def test_zero_padded_net_is_not_equivariant_under_torus_shifts():
    assert _torus_shift_error(periodic=False, shift=(4, 0)) > 1e-3


def test_sample_output_does_not_depend_on_the_rest_of_the_batch():
    model = _randomised(build_unet("tiny"), seed=4)
    x, n = _inputs(5, 1, (16, 16), seed=5)
    with torch.no_grad():
        together = model(x, n)
        alone = torch.cat([model(x[i:i + 1], n[i:i + 1]) for i in range(5)])
        reordered = model(x.flip(0), n.flip(0)).flip(0)
    assert (together - alone).abs().max() < 1e-12
    assert (together - reordered).abs().max() < 1e-12


def test_output_depends_on_step_and_condition():
    model = _randomised(build_unet("tiny", cond_channels=1), seed=6)
    x, n = _inputs(2, 1, (16, 16), seed=7)
    cond, _ = _inputs(2, 1, (16, 16), seed=8)
    with torch.no_grad():
        reference = model(x, n, cond)
        assert (model(x, n + 1, cond) - reference).abs().max() > 1e-6
        assert (model(x, n, 2 * cond) - reference).abs().max() > 1e-6


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (16, 48)])
def test_runs_at_any_size_divisible_by_2_pow_downsamplings(size):
    model = _randomised(build_unet("tiny", in_channels=2, out_channels=3), seed=9)
    x, n = _inputs(1, 2, size, seed=10)
    with torch.no_grad():
        out = model(x, n)
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_bad_inputs_raise_value_error():
    plain = build_unet("tiny")
    conditional = build_unet("tiny", cond_channels=1)
    x = torch.zeros(2, 1, 16, 16)
    n = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="divisible"):
        plain(torch.zeros(2, 1, 30, 32), n)
    with pytest.raises(ValueError, match="n must be"):
        plain(x, torch.zeros(2))
    with pytest.raises(ValueError, match="n must be"):
        plain(x, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="cond_channels=0"):
        plain(x, n, torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="cond must"):
        conditional(x, n)
    with pytest.raises(ValueError, match="cond must"):
        conditional(x, n, torch.zeros(2, 1, 8, 8))


def test_adam_steps_reduce_mse_to_a_fixed_target():
    torch.manual_seed(11)
    model = build_unet("tiny")
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(4, 1, 16, 16, generator=generator)
    n = torch.randint(1, N_STEPS + 1, (4,), generator=generator)
    target = torch.randn(4, 1, 16, 16, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = torch.mean((model(x, n) - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the zero output starts at loss = mean(target²) ≈ 1; 30 steps must cut it tenfold
    assert losses[-1] < 0.1 * losses[0]


# --- windowed GroupNorm and attention (a checkpoint on a lattice larger than its training one) ---

@pytest.mark.parametrize("window", [3, 4])
def test_window_mean_and_attention_match_their_site_by_site_twins(window):
    from skild_phys.networks.unet import _window_mean, windowed_attention
    from tests import naive

    generator = torch.Generator().manual_seed(20)
    x = torch.randn(2, 3, 10, 10, generator=generator, dtype=torch.float64)
    np.testing.assert_allclose(_window_mean(x, (window, window)).numpy(), naive.window_mean(x.numpy(), window),
                               atol=1e-12)
    q, k, v = torch.randn(3, 1, 5, 10, 10, generator=generator, dtype=torch.float64).unbind(0)
    fast = windowed_attention(q, k, v, (window, window))[0].numpy()
    np.testing.assert_allclose(fast, naive.window_attention(q[0].numpy(), k[0].numpy(), v[0].numpy(), window),
                               atol=1e-12)


def test_windowed_attention_over_the_whole_grid_is_global_attention():
    from skild_phys.networks.unet import windowed_attention

    generator = torch.Generator().manual_seed(21)
    q, k, v = torch.randn(3, 2, 4, 6, 6, generator=generator, dtype=torch.float64).unbind(0)
    flat = [t.flatten(2).transpose(1, 2) for t in (q, k, v)]
    full = torch.nn.functional.scaled_dot_product_attention(*flat).transpose(1, 2).reshape(q.shape)
    assert (windowed_attention(q, k, v, (6, 6)) - full).abs().max() < 1e-12


def test_window_of_the_training_size_leaves_the_network_unchanged_there_and_sees_one_period_of_a_tiling():
    model = _randomised(build_unet("small", periodic=True), seed=22)
    x, n = _inputs(2, 1, (32, 32), seed=23)
    tiled = x.repeat(1, 1, 2, 2)  # a 32-periodic 64 x 64 lattice
    other, _ = _inputs(2, 1, (64, 64), seed=24)
    with torch.no_grad():
        plain, plain_big = model(x, n), model(other, n)
        model.set_window((32, 32))
        windowed = model(x, n)
        # each site's window is one period of the tiling (even window: half-weight ends on one site)
        tiled_out = model(tiled, n)
        windowed_big = model(other, n)
        model.set_window(None)
        assert (model(other, n) - plain_big).abs().max() == 0
    assert (windowed - plain).abs().max() == 0
    assert (tiled_out - windowed.repeat(1, 1, 2, 2)).abs().max() < 1e-10
    # on a larger non-periodic-at-32 lattice the windowed statistics differ from the global ones
    assert (windowed_big - plain_big).abs().max() > 1e-4


def test_windowed_net_stays_equivariant_under_torus_shifts_on_a_larger_lattice():
    model = _randomised(build_unet("tiny", periodic=True), seed=25)
    model.set_window((16, 16))
    x, n = _inputs(2, 1, (48, 48), seed=26)
    roll = lambda t: torch.roll(t, shifts=(12, 4), dims=(-2, -1))  # noqa: E731
    with torch.no_grad():
        assert (model(roll(x), n) - roll(model(x, n))).abs().max() < 1e-10


def test_set_window_refuses_an_empty_window():
    with pytest.raises(ValueError, match="at least one pixel"):
        build_unet("tiny").set_window((0, 16))
