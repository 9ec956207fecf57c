"""Continuous super-resolution on natural images from one small CPU checkpoint (docs/images.md).

Builds CIFAR-format data from the photographs bundled with scikit-image (10 for training,
astronaut and coffee held out), measures the spectrum exponent α, trains (or resumes) a small
SKILD model on 32×32 crops, generates a grid, super-resolves the held-out crops at 2×, 3×,
4×, 6×, 8× from bicubic-downsampled inputs and by the paper protocol, and copies the figures
to docs/figures.  Every model step runs through the `skild-phys` command line.

    .venv/bin/python benchmarks/continuous_sr.py --work /tmp/skild_images
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from analysis.spectrum import fit_power_law, radial_spectrum
from skild_phys.data.images import Cifar10, write_cifar_batches
from skild_phys.data.photos import PHOTOS, photo_crops
from skild_phys.methods.skild import estimate_spectrum

HELD_OUT = ("astronaut", "coffee")
TRAIN_SCALES = (96, 128, 192, 256)  # short side of each photograph before cropping
FACTORS = (2, 3, 4, 6, 8)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "figures"


def skild(*args) -> None:
    """Run one `skild-phys` command, failing loudly."""
    cmd = [sys.executable, "-m", "skild_phys", *map(str, args)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def build_data(folder: Path, per_photo: int, seed: int) -> Path:
    """CIFAR-format training batches and a held-out test_batch made from the bundled photographs."""
    data = folder / "cifar-10-batches-py"
    if (data / "test_batch_1").is_file():
        return data
    rng = np.random.default_rng(seed)
    train = photo_crops([p for p in PHOTOS if p not in HELD_OUT], per_photo, 32, rng, TRAIN_SCALES)
    write_cifar_batches(data, train[rng.permutation(len(train))])
    write_cifar_batches(data, photo_crops(HELD_OUT, 32, 32, rng, (128,)), name="test_batch")
    return data


def spectrum_exponents(data: Path, figure: Path) -> dict:
    """α per channel: the training fit (all k, k0² free) and a pure power law over the scaling range u ≤ H/2."""
    from matplotlib.figure import Figure

    var, info = estimate_spectrum(Cifar10(data), "empirical")
    H = var.shape[-1]
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    window = []
    for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
        k, S_k, counts = radial_spectrum(var[c])
        fit = fit_power_law(k, S_k, k_range=(np.pi, np.pi * H / 2), counts=counts, k0sq=0.0)
        window.append({"alpha": fit.alpha, "alpha_err": fit.alpha_err, "k_range": list(fit.k_range)})
        ax.loglog(k[1:], S_k[1:], "o", ms=3, color=colour, label=f"{'RGB'[c]}: power law α = {fit.alpha:.3f} ± "
                                                             f"{fit.alpha_err:.3f} (π ≤ k ≤ πH/2)")
        ks = k[(k >= np.pi) & (k <= np.pi * H / 2)]
        ax.loglog(ks, fit(ks), "-", color=colour, lw=1)
        full = info["fit"][c]
        ax.loglog(k[1:], full["C"] * (k[1:] ** 2 + full["k0sq"]) ** -full["alpha"], ":", color=colour, lw=1)
    ax.plot([], [], "k:", label="training default fit (all k, k0² free)")
    ax.set(xlabel="|k| (units of 1/image side)", ylabel="S(k), per-mode variance (orthonormal DCT)",
           title=f"{H}×{H} crops of the scikit-image photographs")
    ax.legend(fontsize=7)
    fig.savefig(figure, dpi=130)
    return {"full_range_fit": info["fit"], "scaling_range_power_law": window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/skild_images"), help="Working directory.")
    parser.add_argument("--steps", type=int, default=3000, help="Training steps.")
    parser.add_argument("--net", default="small", help="Network size.")
    parser.add_argument("--per-photo", type=int, default=500, help="Training crops per photograph and scale.")
    parser.add_argument("--samples", type=int, default=64, help="Held-out crops to super-resolve.")
    parser.add_argument("--reverse-steps", type=int, default=100, help="Respaced reverse steps from n0.")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch.")
    args = parser.parse_args()

    started = time.perf_counter()
    data = build_data(args.work, args.per_photo, seed=0)
    DOCS.mkdir(parents=True, exist_ok=True)
    alpha = spectrum_exponents(data, DOCS / "images_spectrum.png")
    print(json.dumps(alpha, indent=2))
    run = args.work / "run"
    resume = ["--resume"] if (run / "resume.pt").is_file() else []  # a finished run resumes to a no-op
    skild("train", "--data", f"cifar10:{data}", "--out", run, "--net", args.net, "--steps", args.steps,
          "--batch", 16, "--lr", 4e-4, "--warmup", 200, "--spectrum", "empirical", "--checkpoint-every", 500,
          "--log-every", 100, "--threads", args.threads, "--quiet", *resume)
    skild("generate", "--checkpoint", run, "--samples", 64, "--steps", args.reverse_steps, "--out",
          args.work / "generated", "--threads", args.threads, "--quiet", "--overwrite")
    shutil.copy(args.work / "generated" / "grid.png", DOCS / "images_generated.png")
    factors = [a for f in FACTORS for a in ("--factor", f)]
    for source, flags in (("bicubic", ["--bicubic"]), ("marginal", [])):
        skild("superres", "--checkpoint", run, "--data", f"cifar10:{data / 'test_batch_1'}", *factors, *flags,
              "--out", args.work / f"sr_{source}", "--samples", args.samples, "--steps", args.reverse_steps,
              "--threads", args.threads, "--quiet", "--overwrite")
    table = {"alpha": alpha, "net": args.net, "train_steps": args.steps, "reverse_steps": args.reverse_steps}
    for source in ("bicubic", "marginal"):
        out = args.work / f"sr_{source}"
        shutil.copy(out / "factors.png", DOCS / f"images_continuous_sr_{source}.png")
        table[source] = json.loads((out / "metrics.json").read_text())
    table["wall_time_s"] = time.perf_counter() - started
    (args.work / "continuous_sr.json").write_text(json.dumps(table, indent=2) + "\n")
    markdown = metrics_table(table["bicubic"], table["marginal"])
    (args.work / "continuous_sr.md").write_text(markdown)
    print(markdown)
    print(f"wall time {table['wall_time_s'] / 60:.1f} min; results in {args.work / 'continuous_sr.json'}")


def metrics_table(real_lr: dict, paper: dict) -> str:
    """Markdown table of PSNR and SSIM (mean ± standard error) per factor: bicubic, SKILD (real LR, paper protocol)."""
    def cell(rec, metric, digits):
        return f"{rec[metric]['mean']:.{digits}f} ± {rec[metric]['sem']:.{digits}f}"

    lines = ["| factor | LR side | n0 | PSNR bicubic | PSNR SKILD (real LR) | PSNR SKILD (paper protocol) "
             "| SSIM bicubic | SSIM SKILD (real LR) | SSIM SKILD (paper protocol) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f, rec in real_lr.items():
        m = paper[f]
        lines.append(f"| {f}× | {rec['lowres_side']} | {rec['start_step']} | {cell(rec['bicubic'], 'psnr', 2)} | "
                     f"{cell(rec['skild'], 'psnr', 2)} | {cell(m['skild'], 'psnr', 2)} | "
                     f"{cell(rec['bicubic'], 'ssim', 3)} | {cell(rec['skild'], 'ssim', 3)} | "
                     f"{cell(m['skild'], 'ssim', 3)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
