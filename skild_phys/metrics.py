"""Image-quality metrics through torchmetrics: PSNR and SSIM always; LPIPS, FID and IS when their weights are local.

Images are (n, 3, H, W) in [−1, 1] (data range 2).  Paired metrics compare image i of a
prediction with image i of a reference and report the mean with its standard error over
images.  Nothing is downloaded: LPIPS, FID and IS run only if their libraries are installed
and their pretrained weights already sit in torch's hub cache; otherwise one line says how
to provide them.
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


def paired_metrics(pred: torch.Tensor, ref: torch.Tensor, log=print) -> dict:
    """PSNR and SSIM (and LPIPS when available) of each predicted image against its reference."""
    out = {"psnr": mean_sem(psnr(pred, ref)), "ssim": mean_sem(ssim(pred, ref))}
    lp = lpips(pred, ref, log)
    if lp is not None:
        out["lpips"] = mean_sem(lp)
    return out


def set_metrics(pred: torch.Tensor, ref: torch.Tensor | None = None, log=print) -> dict:
    """FID of the predicted set against the reference set, and IS of the predicted set, when available."""
    out = {}
    inception = _weights(INCEPTION_WEIGHTS, "torch_fidelity", "FID and IS", log)
    if inception is None:
        return out
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    pred01 = (_float(pred).clamp(-1, 1) + 1) / 2
    if ref is not None:
        fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(inception))
        fid.update((_float(ref).clamp(-1, 1) + 1) / 2, real=True)
        fid.update(pred01, real=False)
        out["fid"] = float(fid.compute())
    score = InceptionScore(normalize=True, splits=1)
    score.update(pred01)
    out["is"] = float(score.compute()[0])
    return out


def image_metrics(pred: torch.Tensor, ref: torch.Tensor | None = None, log=print) -> dict:
    """Paired metrics against `ref` (when given, same shape) and the set metrics of `pred`."""
    out = {} if ref is None else paired_metrics(pred, ref, log)
    return {**out, **set_metrics(pred, ref, log)}


def lpips(pred: torch.Tensor, ref: torch.Tensor, log=print) -> torch.Tensor | None:
    """Per-image LPIPS (AlexNet), or None with a one-line message when its weights are not local."""
    if _weights(LPIPS_WEIGHTS, "torchvision", "LPIPS", log) is None:
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    pred, ref = _pair(pred, ref)
    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none", normalize=False)
    return metric(pred.clamp(-1, 1), ref.clamp(-1, 1)).reshape(-1)


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
