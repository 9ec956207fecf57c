"""Block means drawn given majority block spins (ising.coarsen, `superres --lowres-start sampled`)."""

import itertools

import numpy as np
import pytest

from ising.coarsen import (_neighbourhood_codes, block_mean_counts, coarsen_batch, draw_block_means,
                           neighbourhood_classes)
from skild_base.errors import InputError

Z_MAX = 5.0


def _brute_canonical(pattern):
    """Slow twin of the class: the smallest of the 16 images (8 lattice symmetries × spin flip that puts
    the centre at +1) of a 3 × 3 ±1 pattern, written as a tuple, with explicit index loops."""
    sign = pattern[1][1]
    images = []
    for rot, mirror in itertools.product(range(4), (False, True)):
        img = [[sign * pattern[i][2 - j if mirror else j] for j in range(3)] for i in range(3)]
        for _ in range(rot):
            img = [[img[j][2 - i] for j in range(3)] for i in range(3)]
        images.append(tuple(v for row in img for v in row))
    return min(images), sign


def _brute_counts(spins, f):
    """Slow twin of block_mean_counts: {canonical pattern: {block sum × centre sign: count}} with loops."""
    n, L, _ = spins.shape
    l = L // f
    out = {}
    for s in range(n):
        sums = [[int(spins[s, f * a:f * a + f, f * b:f * b + f].sum()) for b in range(l)] for a in range(l)]
        maj = [[(1 if sums[a][b] > 0 else -1 if sums[a][b] < 0 else int(spins[s, f * a, f * b])) for b in range(l)]
               for a in range(l)]
        for a in range(l):
            for b in range(l):
                pat = [[maj[(a + i - 1) % l][(b + j - 1) % l] for j in range(3)] for i in range(3)]
                key, sign = _brute_canonical(pat)
                out.setdefault(key, {}).setdefault(sums[a][b] * sign, 0)
                out[key][sums[a][b] * sign] += 1
    return out


def test_classes_are_the_patterns_up_to_symmetry_and_flip():
    classes, centre = neighbourhood_classes()
    keys = {}
    for code in range(512):
        pat = [[2 * ((code >> (3 * i + j)) & 1) - 1 for j in range(3)] for i in range(3)]
        key, sign = _brute_canonical(pat)
        assert centre[code] == sign
        keys.setdefault(key, set()).add(int(classes[code]))
    # one class per symmetry orbit and one orbit per class: 51 orbits of the 8 neighbours under the 8 symmetries
    assert all(len(v) == 1 for v in keys.values())
    assert len(keys) == classes.max() + 1 == 51


@pytest.mark.parametrize("f", [2, 4])
def test_counts_match_the_loop_twin(f):
    rng = np.random.default_rng(3)
    # correlated spins (a smoothed random field's sign), so that many neighbourhoods and sums occur
    field = rng.standard_normal((6, 24, 24))
    field += sum(np.roll(field, s, axis=a) for s in (1, -1) for a in (1, 2))
    spins = np.where(field > 0, 1, -1).astype(np.int8)
    counts = block_mean_counts(spins, f)
    brute = _brute_counts(spins, f)
    classes, _ = neighbourhood_classes()
    assert counts.sum() == 6 * (24 // f) ** 2
    for key, by_sum in brute.items():
        code = sum((v > 0) << b for b, v in enumerate(key))
        row = counts[classes[code]]
        assert {2 * c - f * f: int(row[c]) for c in np.flatnonzero(row)} == by_sum


def test_draws_follow_the_counts_and_keep_the_block_spins_sign():
    """Drawn for a lattice's own block spins, every class's block-mean frequencies are the counted ones
    within their multinomial error; the drawn sign is the block spin's wherever the mean is not 0."""
    rng = np.random.default_rng(5)
    field = rng.standard_normal((40, 32, 32))
    field += sum(np.roll(field, s, axis=a) for s in (1, -1) for a in (1, 2))
    spins = np.where(field > 0, 1, -1).astype(np.int8)
    counts = block_mean_counts(spins, 4)
    block_spins = coarsen_batch(spins, 4, "majority")
    draws = np.stack([draw_block_means(block_spins, counts, rng.random(block_spins.shape)) for _ in range(20)])
    assert set(np.unique(np.rint(draws * 16))) <= set(range(-16, 17, 2))
    nonzero = draws != 0
    assert (np.sign(draws) == block_spins[None])[nonzero].all()
    classes, centre = neighbourhood_classes()
    redrawn = np.zeros_like(counts)

    code = np.broadcast_to(_neighbourhood_codes(block_spins), draws.shape)
    column = (np.rint(draws * 16).astype(int) * centre[code] + 16) // 2
    np.add.at(redrawn, (classes[code].ravel(), column.ravel()), 1)
    expected = counts * 20
    seen = expected.sum(1) > 0
    p = counts[seen] / counts[seen].sum(1, keepdims=True)
    sigma = np.sqrt(expected[seen].sum(1, keepdims=True) * p * (1 - p)) + 1e-12
    z = np.abs(redrawn[seen] - expected[seen]) / sigma
    assert z[p > 0].max() < Z_MAX
    assert (redrawn[seen][p == 0] == 0).all()


def test_unseen_neighbourhood_and_bad_factor_are_input_errors():
    counts = block_mean_counts(np.ones((2, 12, 12), np.int8), 4)   # only the all-up class seen
    spins = np.ones((1, 3, 3), np.int8)
    spins[0, 0, 0] = -1
    with pytest.raises(InputError, match="never occurs"):
        draw_block_means(spins, counts, np.zeros((1, 3, 3)))
    assert (draw_block_means(np.ones((1, 3, 3), np.int8), counts, np.full((1, 3, 3), 0.99)) == 1).all()
    with pytest.raises(InputError, match="at least 3 blocks"):
        block_mean_counts(np.ones((1, 8, 8), np.int8), 4)


def test_sampled_start_draws_block_means_for_spins_only(tmp_path, tiny_run16, make_store):
    """`superres --lowres-start sampled --block-reference` writes what `conditional` writes from a block-mean
    store and something else from a majority store; it does not depend on the batch size, records its
    reference, and refuses a reference of another coupling or a missing pairing of the two options."""
    import xarray as xr
    from click.testing import CliRunner

    from skild_phys.cli import main

    run, data = tiny_run16
    reference = make_store("block_reference", L=16, n_samples=1100, chains=2, seed=9)  # two chunks
    other_beta = make_store("block_reference_hot", L=16, n_samples=20, chains=2, seed=9, beta=0.3)

    def superres(lowres, start, name, *extra):
        args = ["superres", "--checkpoint", str(run), "--lowres", str(lowres), "--factor", "4", "--samples", "3",
                "--steps", "4", "--seed", "1", "--lowres-start", start, "--out", str(tmp_path / name), "--quiet",
                "--device", "cpu", *extra]
        return CliRunner().invoke(main, args)

    from ising.coarsen import coarsen_store

    stores = {rule: tmp_path / f"{rule}.zarr" for rule in ("mean", "majority")}
    for rule, path in stores.items():
        coarsen_store(data, path, 4, rule, progress=False)

    def spins(lowres, start, name, *extra):
        r = superres(lowres, start, name, *extra)
        assert r.exit_code == 0, r.output
        return xr.open_zarr(tmp_path / name)

    from ising import store
    from skild_phys.methods import load_trained
    from skild_phys.methods.starts import attach_block_reference

    attached = attach_block_reference(load_trained(run, device="cpu"), reference, [4.0]).config.data
    direct = block_mean_counts(store.open_store(reference)["spins"].values, 4)
    assert (np.asarray(attached["block_mean_counts"]["4"]) == direct).all()

    ref = ("--block-reference", str(reference))
    a = spins(stores["mean"], "sampled", "a.zarr", *ref)
    assert (a.spins.values == spins(stores["mean"], "conditional", "b.zarr").spins.values).all()
    c = spins(stores["majority"], "sampled", "c.zarr", *ref)
    assert c.attrs["block_reference"] == str(reference)
    assert (c.spins.values != spins(stores["majority"], "conditional", "d.zarr").spins.values).any()
    assert (c.spins.values == spins(stores["majority"], "sampled", "e.zarr", *ref, "--batch", "1").spins.values).all()

    r = superres(stores["majority"], "sampled", "f.zarr")
    assert r.exit_code == 2 and "go together" in r.output
    r = superres(stores["majority"], "sampled", "g.zarr", "--block-reference", str(other_beta))
    assert r.exit_code == 2 and "same model" in r.output
    assert not (tmp_path / "g.zarr").exists()


def test_evaluate_settings_pair_the_sampled_start_with_its_reference():
    from skild_phys.reports.evaluate import EvalSettings

    with pytest.raises(InputError, match="go together"):
        EvalSettings(lowres_start="sampled").validate()
    with pytest.raises(InputError, match="go together"):
        EvalSettings(block_reference="ref.zarr").validate()
    EvalSettings(lowres_start="sampled", block_reference="ref.zarr", lowres_rule="majority").validate()
    # evaluations recorded before the option existed keep their parameters (and resume)
    assert "block_reference" not in EvalSettings().params()
    assert EvalSettings(lowres_start="sampled", block_reference="ref.zarr").params()["block_reference"] == "ref.zarr"
