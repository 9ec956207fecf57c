"""Natural images: adapters, the k^−2 spectrum of photographs, embedding, metrics, and the whole pipeline."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import skild_phys.data.images  # noqa: F401  (registers the image adapters)
from analysis.spectrum import fit_power_law, radial_spectrum
from skild_base.errors import InputError
from skild_phys.cli import main
from skild_phys.data.adapters import open_dataset
from skild_phys.data.images import (
    Cifar10,
    ImageFolder,
    bicubic_resize,
    centre_crop_resize,
    to_uint8,
    write_cifar_batches,
)
from skild_phys.data.metrics import ImageScores, image_metrics, mean_sem, psnr, ssim
from skild_phys.data.photos import PHOTOS, photo_crops
from skild_phys.methods import load_trained
from skild_phys.methods.skild import estimate_spectrum
from skild_phys.process.basis import Basis, embed_low_modes
from skild_phys.sampling.images import superres_images
from tests.payloads import ShellPayload

# Natural-image power spectra fall as k^−2α with α = 0.94 ± 0.22 (SD over single images; van der
# Schaaf & van Hateren 1996, Vision Res. 36, 2759: power exponent 1.88 ± 0.43).  Twelve photographs
# give a standard error of ≈ 0.22 / √12 ≈ 0.06 on the ensemble α; 2.5 of those is the tolerance.
ALPHA_NATURAL = 1.0
ALPHA_TOL = 0.15


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def photo_cifar(tmp_path_factory):
    """CIFAR-format batches of 32×32 crops of the bundled photographs: (training dir, held-out test batch)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    write_cifar_batches(folder, photo_crops(PHOTOS, 48, 32, rng, (128,)), per_batch=300)
    (test,) = write_cifar_batches(folder, photo_crops(("astronaut",), 6, 32, rng, (128,)), name="test_batch")
    return folder, test


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """An ImageNet-style folder: two class subfolders of non-square PNG crops of the photographs."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("imagenet")
    crops = photo_crops(("chelsea", "coffee", "rocket", "grass"), 8, 64, rng, (160,))
    for i, crop in enumerate(crops):
        folder = root / ("n01" if i % 2 else "n02")
        folder.mkdir(exist_ok=True)
        Image.fromarray(crop[:, 8:56] if i % 3 else crop).save(folder / f"img{i:03d}.png")
    return root


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _train(data, run, *extra):
    result = _cli("train", "--data", data, "--out", run, "--steps", 12, "--batch", 8, "--lr", 1e-3, "--warmup", 2,
                  "--checkpoint-every", 12, "--device", "cpu", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, photo_cifar):
    return _train(f"cifar10:{photo_cifar[0]}", tmp_path_factory.mktemp("runs") / "cifar", "--preset", "cifar10_linear")


# ---- adapters ---------------------------------------------------------------------------- #
def test_cifar_batches_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (25, 32, 32, 3), dtype=np.uint8)
    write_cifar_batches(tmp_path / "cifar-10-batches-py", images, per_batch=10)
    for spec in (f"cifar10:{tmp_path}", f"cifar10:{tmp_path / 'cifar-10-batches-py'}"):
        ds = open_dataset(spec)
        assert (len(ds), ds.channels, ds.height, ds.width, ds.kind, ds.periodic) == (25, 3, 32, 32, "image", False)
        x = ds.get([0, 24, 13])
        assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
        np.testing.assert_array_equal(to_uint8(x), images[[0, 24, 13]])
        assert x.min() >= -1 and x.max() <= 1
    one = open_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py' / 'data_batch_3'}")
    np.testing.assert_array_equal(to_uint8(one.get(np.arange(5))), images[20:])
    assert ds.provenance()["data_digest"] == open_dataset(f"cifar10:{tmp_path}").provenance()["data_digest"]
    with pytest.raises(InputError):
        open_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(InputError):
        open_dataset(f"cifar10:{tmp_path}", size=64)


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path):
    import pickle
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": ShellPayload(marker), b"labels": [0]}, fh)
    with pytest.raises(InputError, match="posix.system|os.system|nt.system"):
        open_dataset(f"cifar10:{folder}")
    assert not marker.exists()
    # the plain loader would have run it: the test's payload is real
    with open(folder / "data_batch_1", "rb") as fh:
        pickle.load(fh)
    assert marker.exists()


def test_cifar_batches_of_every_pickle_protocol_load(tmp_path):
    import pickle
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for protocol in (2, 3, 4, 5):
        folder = tmp_path / f"p{protocol}"
        folder.mkdir()
        with open(folder / "test_batch", "wb") as fh:
            pickle.dump({b"data": data, b"labels": [1, 2, 3, 4], b"batch_label": b"test"}, fh, protocol=protocol)
        ds = open_dataset(f"cifar10:{folder / 'test_batch'}")
        np.testing.assert_array_equal(to_uint8(ds.get(np.arange(4))), data.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1))


def test_imagefolder_lists_once_and_decodes_only_requested(photo_folder, monkeypatch):
    ds = ImageFolder(photo_folder, size=24)
    assert len(ds) == 32 and ds.spec == f"imagefolder:{photo_folder}"
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    x = ds.get([3, 17])
    assert x.shape == (2, 3, 24, 24) and x.dtype == np.float32
    assert opened == [ds.files[3], ds.files[17]]
    # the central square of the non-square file, bicubic to 24 px, in [−1, 1]
    with real_open(ds.files[17]) as im:
        w, h = im.size
        side = min(w, h)
        ref = np.asarray(im.convert("RGB").crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side,
                                                 (h - side) // 2 + side)).resize((24, 24), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(to_uint8(x[1:]), ref[None])


def test_centre_crop_drops_the_sides():
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 10:30] = 200  # the central 20×20 square
    out = centre_crop_resize(Image.fromarray(a), 20)
    assert out.shape == (20, 20, 3) and np.all(out == 200)


def test_flip_augmentation_is_a_random_horizontal_flip_from_the_generator(photo_cifar):
    ds = Cifar10(photo_cifar[0])
    x = torch.from_numpy(ds.get(np.arange(64)))
    a = ds.augment(x, torch.Generator().manual_seed(5))
    b = ds.augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    same = (a == x).flatten(1).all(1)
    flipped = (a == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and same.any() and flipped.any()


def test_image_errors_are_one_line(tmp_path, photo_folder):
    with pytest.raises(InputError, match="--size"):
        open_dataset(f"imagefolder:{photo_folder}")
    with pytest.raises(InputError, match="no image files"):
        open_dataset(f"imagefolder:{tmp_path}", size=8)
    result = _cli("train", "--data", f"imagefolder:{photo_folder}", "--out", tmp_path / "r", "--steps", 1)
    assert result.exit_code == 2 and "--size" in result.output and "Traceback" not in result.output


# ---- the spectrum of natural images --------------------------------------------------------- #
def test_natural_photographs_have_a_k_minus_2_spectrum(photo_cifar):
    # Per channel, a pure power law S ∝ k^−2α over the scaling range π ≤ k ≤ πH/2; the highest
    # modes are steepened by the resampling filter and left out (docs/images.md).
    var, info = estimate_spectrum(Cifar10(photo_cifar[0]), "empirical")
    assert var.shape == (3, 32, 32) and len(info["fit"]) == 3
    for c in range(3):
        k, S_k, counts = radial_spectrum(var[c])
        fit = fit_power_law(k, S_k, k_range=(math.pi, math.pi * 16), counts=counts, k0sq=0.0)
        assert abs(fit.alpha - ALPHA_NATURAL) < ALPHA_TOL, (c, fit.alpha, fit.alpha_err)


# ---- embedding and metrics ----------------------------------------------------------------- #
@pytest.mark.parametrize("h", [8, 11, 16])
def test_lowres_embedding_normalisation(h):
    H = 32
    X = torch.randn(2, 3, h, h, dtype=torch.float64, generator=torch.Generator().manual_seed(h))
    if H % h == 0:  # an integer factor f: the coefficients scale by exactly f
        torch.testing.assert_close(embed_low_modes(X, H), torch.nn.functional.pad(H // h * X, (0, H - h, 0, H - h)))
    # a smooth field: the embedded bicubic-downsampled image matches the HR low modes
    y, x = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(H) + 0.5) / H, indexing="ij")
    field = torch.as_tensor(np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) / 0.08) + 0.3 * x * y)[None, None]
    X_hr = Basis.dct(H).forward(field)
    X_lr = embed_low_modes(Basis.dct(h).forward(bicubic_resize(field, h)), H, H)
    low = slice(0, h // 2)
    err = (X_lr[..., low, low] - X_hr[..., low, low]).abs().max() / X_hr.abs().max()
    assert float(err) < 0.05


def test_psnr_ssim_oracles(tmp_path, monkeypatch):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    delta = 0.05
    # constant offset δ: MSE = δ², PSNR = 10 log10(range² / δ²) with range 2
    torch.testing.assert_close(psnr(x + delta, x), torch.full((4,), 10 * math.log10(4 / delta**2)), rtol=0, atol=1e-3)
    torch.testing.assert_close(ssim(x, x), torch.ones(4), rtol=0, atol=1e-5)
    assert float(ssim(x + 0.3 * torch.randn_like(x), x).max()) < 0.9
    s = mean_sem(torch.tensor([1.0, 2.0, 3.0]))
    assert s["mean"] == 2.0 and s["n"] == 3 and abs(s["sem"] - 1 / math.sqrt(3)) < 1e-12
    # nothing downloads: without local weights LPIPS, FID and IS are skipped with one line each
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    said = []
    out = image_metrics(x, x, said.append)
    assert set(out) == {"psnr", "ssim"} and out["ssim"]["mean"] == pytest.approx(1.0)
    assert len(said) == 2 and all("\n" not in m and "skipped" in m for m in said)
    # batch by batch: the same per-image values as all at once
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    streamed = ImageScores(said.append).update(y[:1], x[:1]).update(y[1:], x[1:]).summary()
    whole = image_metrics(y, x, said.append)
    for name in ("psnr", "ssim"):
        assert streamed[name] == pytest.approx(whole[name])
    assert not any(tmp_path.rglob("*.pth"))


# ---- end to end -------------------------------------------------------------------------------- #
def test_cifar_train_generate_superres_metrics(tmp_path, cifar_run, photo_cifar):
    config = json.loads((cifar_run / "config.json").read_text())
    assert config["data_kind"] == "image" and config["channels"] == 3 and config["net"]["periodic"] is False
    assert config["preset"] == "cifar10_linear" and config["schedule"]["k_c"] == 3.0
    assert [f["alpha"] > 0 for f in config["spectrum"]["fit"]] == [True] * 3  # one S0 fit per channel
    gen = tmp_path / "gen"
    result = _cli("generate", "--checkpoint", cifar_run, "--samples", 3, "--steps", 4, "--out", gen, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (gen / "samples").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert np.load(gen / "samples.npy").shape == (3, 3, 32, 32)
    assert Image.open(gen / "grid.png").size[0] > 3 * 32
    # the few-step samplers serve image checkpoints too: the ODE changes the images and is recorded
    heun = tmp_path / "gen_heun"
    result = _cli("generate", "--checkpoint", cifar_run, "--samples", 3, "--steps", 4, "--sampler", "heun",
                  "--out", heun, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((heun / "config.json").read_text())["params"]["sampler"] == "heun"
    assert not np.array_equal(np.load(heun / "samples.npy"), np.load(gen / "samples.npy"))
    test_batch = photo_cifar[1]
    for flags in ([], ["--bicubic"]):
        out = tmp_path / f"sr{len(flags)}"
        result = _cli("superres", "--checkpoint", cifar_run, "--data", f"cifar10:{test_batch}", "--factor", 2,
                      "--factor", 2.5, "--factor", 8, *flags, "--samples", 3, "--steps", 3, "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert list(metrics) == ["2", "2.5", "8"]
        assert [metrics[f]["lowres_side"] for f in metrics] == [16, 13, 4]
        n0 = [metrics[f]["start_step"] for f in metrics]
        assert n0 == sorted(n0) and n0[0] < n0[-1]  # larger factors start from noisier steps
        for f in metrics:
            for method in ("skild", "bicubic"):
                assert metrics[f][method]["psnr"]["n"] == 3 and 0 < metrics[f][method]["ssim"]["mean"] <= 1
            assert (out / f"x{f}" / "grid.png").is_file() and len(list((out / f"x{f}" / "samples").iterdir())) == 3
        assert (out / "factors.png").is_file()
    result = _cli("metrics", "--pred", f"imagefolder:{tmp_path / 'sr1' / 'x2' / 'samples'}",
                  "--ref", f"cifar10:{test_batch}", "--out", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "m.json").read_text())
    in_memory = json.loads((tmp_path / "sr1" / "metrics.json").read_text())["2"]["skild"]["psnr"]["mean"]
    assert abs(scored["psnr"]["mean"] - in_memory) < 0.1  # 8-bit PNGs vs float samples
    again = _cli("metrics", "--pred", f"imagefolder:{tmp_path / 'sr1' / 'x2' / 'samples'}",
                 "--ref", f"cifar10:{test_batch}", "--out", tmp_path / "m.json")
    assert again.exit_code == 2 and "--overwrite" in again.output  # an existing file is not replaced unasked


def test_image_superres_does_not_depend_on_batch(tmp_path, cifar_run, photo_cifar):
    model = load_trained(cifar_run, "cpu")
    ds = Cifar10(photo_cifar[1])
    outs = []
    for batch in (1, 3):
        superres_images(tmp_path / f"b{batch}", model, ds, [3.0], "bicubic", n_samples=3, steps=3, seed=4,
                        batch=batch, progress=False, log=lambda m: None)
        outs.append(json.loads((tmp_path / f"b{batch}" / "metrics.json").read_text()))
        assert json.loads((tmp_path / f"b{batch}" / "config.json").read_text())["complete"]
    # same seeds, same chain: equal up to float32 rounding in the batched convolutions
    for method in ("skild", "bicubic"):
        for metric in ("psnr", "ssim"):
            assert outs[0]["3"][method][metric]["mean"] == pytest.approx(outs[1]["3"][method][metric]["mean"],
                                                                         rel=1e-5)
    for i in range(3):
        a, b = (np.asarray(Image.open(tmp_path / f"b{batch}" / "x3" / "samples" / f"{i:06d}.png"), dtype=int)
                for batch in (1, 3))
        assert np.abs(a - b).max() <= 1


def test_imagefolder_train_generate_superres_metrics(tmp_path, photo_folder):
    run = _train(f"imagefolder:{photo_folder}", tmp_path / "run", "--size", 32)
    assert json.loads((run / "config.json").read_text())["data"]["data"] == f"imagefolder:{photo_folder}"
    result = _cli("generate", "--checkpoint", run, "--samples", 2, "--steps", 3, "--out", tmp_path / "gen", "--quiet")
    assert result.exit_code == 0, result.output
    # real low-resolution inputs: the same folder read at round(32 / 4) = 8 px
    out = tmp_path / "sr"
    result = _cli("superres", "--checkpoint", run, "--lowres", f"imagefolder:{photo_folder}", "--factor", 4,
                  "--samples", 2, "--steps", 3, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["4"]["lowres_side"] == 8
    result = _cli("superres", "--checkpoint", run, "--lowres", f"imagefolder:{photo_folder}", "--factor", 4,
                  "--factor", 2, "--out", tmp_path / "bad", "--quiet")
    assert result.exit_code == 2 and "one --factor" in result.output
    result = _cli("metrics", "--pred", f"imagefolder:{out / 'x4' / 'samples'}", "--ref", f"imagefolder:{photo_folder}",
                  "--size", 32)
    assert result.exit_code == 0 and "psnr" in result.output and "ssim" in result.output, result.output
