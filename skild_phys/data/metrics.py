"""Image-quality metrics through torchmetrics: PSNR and SSIM always; LPIPS, FID and IS when their weights are local.

Images are (n, 3, H, W) in [−1, 1] (data range 2).  Paired metrics compare image i of a
prediction with image i of a reference and report the mean with its standard error over
images; `ImageScores` accumulates them batch by batch.  Nothing is downloaded: LPIPS, FID
and IS run only if their libraries are installed and their pretrained weights already sit
in torch's hub cache; otherwise one line says how to provide them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

DATA_RANGE = 2.0  # images in [−1, 1]
SSIM_KERNEL = 11  # Gaussian window of Wang et al. (2004), σ = 1.5
LPIPS_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet backbone of LPIPS (alex)
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID/IS Inception-v3


def psnr(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, shape (n,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pred, ref = _pair(pred, ref)
    return peak_signal_noise_ratio(pred, ref, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window of 11 pixels, smaller on tiny images), shape (n,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, ref = _pair(pred, ref)
    side = min(pred.shape[-2:])
    kernel = min(SSIM_KERNEL, side if side % 2 else side - 1)
    return structural_similarity_index_measure(pred, ref, data_range=DATA_RANGE, kernel_size=kernel,
                                               reduction="none")


def mean_sem(values: torch.Tensor) -> dict:
    """Mean, standard error of the mean and count of per-image values."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    sem = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "n": int(len(v))}


class ImageScores:
    """Image metrics over batches: per-image PSNR, SSIM (and LPIPS) against references; FID and IS of the set.

    LPIPS, FID and IS are set up once, on the first update, and only if their weights are
    local; otherwise one line each says how to provide them.
    """

    def __init__(self, log=print):
        self.log = log
        self.values: dict[str, list[torch.Tensor]] = {}
        self._ready = False
        self._lpips = self._fid = self._is = None
        self._has_ref = False

    def _setup(self) -> None:
        self._ready = True
        if _weights(LPIPS_WEIGHTS, "torchvision", "LPIPS", self.log) is not None:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self._lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none", normalize=False)
        inception = _weights(INCEPTION_WEIGHTS, "torch_fidelity", "FID and IS", self.log)
        if inception is not None:
            from torchmetrics.image.fid import FrechetInceptionDistance
            from torchmetrics.image.inception import InceptionScore

            self._fid = FrechetInceptionDistance(feature=2048, normalize=True,
                                                 feature_extractor_weights_path=str(inception))
            self._is = InceptionScore(normalize=True, splits=1)

    def update(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> "ImageScores":
        """Add a batch of predicted images (n, 3, H, W) and, when given, their references in the same order."""
        if not self._ready:
            self._setup()
        pred = _float(pred).clamp(-1, 1)
        if ref is not None:
            pred, ref = _pair(pred, _float(ref).clamp(-1, 1))
            self._add("psnr", psnr(pred, ref))
            self._add("ssim", ssim(pred, ref))
            if self._lpips is not None:
                self._add("lpips", self._lpips(pred, ref).reshape(-1))
            if self._fid is not None:
                self._fid.update((ref + 1) / 2, real=True)
                self._has_ref = True
        if self._fid is not None:
            self._fid.update((pred + 1) / 2, real=False)
            self._is.update((pred + 1) / 2)
        return self

    def summary(self) -> dict:
        """{metric: {mean, sem, n}} for per-image metrics, plus "fid" and "is" when computed."""
        out = {name: mean_sem(torch.cat(parts)) for name, parts in self.values.items()}
        if self._fid is not None and self._has_ref:
            out["fid"] = float(self._fid.compute())
        if self._is is not None:
            out["is"] = float(self._is.compute()[0])
        return out

    def _add(self, name: str, values: torch.Tensor) -> None:
        self.values.setdefault(name, []).append(values.detach().reshape(-1).to(torch.float64))


def image_metrics(pred: torch.Tensor, ref: torch.Tensor | None = None, log=print) -> dict:
    """ImageScores of one set of images (and its references) in a single batch."""
    return ImageScores(log).update(pred, ref).summary()


def _weights(filename: str, library: str, what: str, log) -> Path | None:
    """Path of pretrained weights in torch's hub cache if they and `library` are present, else None (and say so)."""
    import importlib.util

    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if importlib.util.find_spec(library) is None:
        log(f"{what} skipped: install {library.replace('_', '-')} (built for your torch) and put {filename} "
            f"in {path.parent} (or set TORCH_HOME); nothing is downloaded")
        return None
    if not path.is_file():
        log(f"{what} skipped: put {filename} in {path.parent} (or set TORCH_HOME to a cache holding "
            f"hub/checkpoints/{filename}); nothing is downloaded")
        return None
    return path


def _float(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to("cpu", torch.float32)


def _pair(pred, ref) -> tuple[torch.Tensor, torch.Tensor]:
    pred, ref = _float(pred), _float(ref)
    if pred.shape != ref.shape or pred.ndim != 4:
        raise ValueError(f"paired metrics need two (n, C, H, W) sets of one shape, got {tuple(pred.shape)} "
                         f"and {tuple(ref.shape)}")
    return pred, ref
