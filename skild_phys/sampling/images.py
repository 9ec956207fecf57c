"""Generation and continuous super-resolution of RGB images into PNG folders, with bicubic baselines and metrics.

The reverse chain is the sampling driver (`sampling.driver.drive`), as for lattices; only the sink differs.
Super-resolution at factor f starts at n0 where r(n0) = H / f (SPEC §4), for any real f:
- "marginal" (paper protocol): the exact forward marginal of the high-resolution image at n0;
- "bicubic": a real low-resolution input, the HR image bicubic-downsampled to round(H / f),
  its DCT embedded in the low modes of the H-grid, then the forward marginal at n0;
- "lowres": the same from given low-resolution images (no reference, no metrics).
One checkpoint serves every factor; each factor gets a folder with PNGs and a grid, and one
figure compares the factors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import __version__, checkpoint
from skild_phys.data.images import bicubic_resize, image_grid, lowres_side, save_png, save_pngs
from skild_phys.data.metrics import ImageScores
from skild_phys.methods.skild import TrainedModel
from skild_phys.methods.starts import generation_start, marginal_start, start_step_for_factor, superres_start
from skild_phys.process.basis import Basis, embed_low_modes
from skild_phys.process.diffusion import per_sample_generators
from skild_phys.sampling.driver import chain_steps_for, drive, sample_seeds
from skild_phys.sampling.samplers import check_choice, choice_params

SOURCES = ("marginal", "bicubic", "lowres")
GRID_IMAGES = 8  # images per row of a grid
FIGURE_EXAMPLES = 2  # images shown in the across-factor figure
CONFIG = "config.json"


def generate_images(out, model: TrainedModel, n_samples: int, steps: int | None = None, seed: int = 0,
                    batch: int = 16, variance: str = "posterior", overwrite: bool = False, progress: bool = True,
                    log=print, sampler: str = "ancestral", eta: float = 0.0, spacing: str = "uniform") -> dict:
    """Generate n_samples images from noise into OUT/samples/*.png, OUT/samples.npy and OUT/grid.png (streamed)."""
    _check_image_model(model)
    check_choice(sampler, eta, spacing)
    start = generation_start(model)
    chain = chain_steps_for(start, steps, spacing, model.process)
    params = {"mode": "generate", "checkpoint": model.digest, "n_samples": n_samples, "seed": seed,
              "start_step": chain[0], "reverse_steps": len(chain) - 1, "variance": variance,
              **choice_params(sampler, eta, spacing)}
    out, done = _prepare(out, params, n_samples, batch, overwrite, log, inputs=(model.path,))
    if done is not None:
        return done
    head = []
    sink = ImageSink(out / "samples", n_samples, model, then=lambda idx, x: _keep(head, x, GRID_IMAGES**2))
    drive(model, start, np.arange(n_samples), chain, sink, seed, batch, variance, sampler, eta, progress=progress,
          unit="image", log=log)
    sink.close()
    save_png(image_grid(torch.cat(head), GRID_IMAGES), out / "grid.png")
    return _finish(out, params, {})


def superres_images(out, model: TrainedModel, dataset, factors, source: str = "marginal", n_samples: int | None = None,
                    steps: int | None = None, seed: int = 0, batch: int = 16, variance: str = "posterior",
                    overwrite: bool = False, progress: bool = True, log=print, sampler: str = "ancestral",
                    eta: float = 0.0, spacing: str = "uniform") -> dict:
    """Super-resolve `dataset` at each factor into OUT/x{f}/ (PNGs, grid), OUT/metrics.json, OUT/factors.png.

    Images stream batch by batch; only the first few of each kind are kept for the grids.
    """
    _check_image_model(model)
    if source not in SOURCES:
        raise InputError(f"unknown super-resolution source {source!r}; choose one of {', '.join(SOURCES)}")
    check_choice(sampler, eta, spacing)
    factors = [float(f) for f in factors]
    if not factors or any(not f > 1 for f in factors):
        raise InputError("super-resolution factors must be > 1")
    if source == "lowres" and len(factors) != 1:
        raise InputError("real low-resolution inputs have one size: give exactly one --factor")
    if source != "marginal" and model.process.basis.name != "dct":
        raise InputError("real low-resolution inputs need a DCT-basis checkpoint")
    if dataset.channels != model.config.channels:
        raise InputError(f"data have {dataset.channels} channels, the checkpoint expects {model.config.channels}")
    n = len(dataset) if n_samples is None else n_samples
    if not 1 <= n <= len(dataset):
        raise InputError(f"--samples must be between 1 and {len(dataset)}")
    H, W = model.config.H, model.config.W
    params = {"mode": "superres", "source": source, "data": getattr(dataset, "spec", ""), "factors": factors,
              "checkpoint": model.digest, "n_samples": n, "seed": seed, "steps": steps, "variance": variance,
              **choice_params(sampler, eta, spacing)}
    out, done = _prepare(out, params, n, batch, overwrite, log, inputs=(model.path, params["data"]))
    if done is not None:
        return done
    say = _once(log)
    results, examples = {}, {}
    for f in factors:
        h = lowres_side(H, f)
        if source == "lowres" and (dataset.height, dataset.width) != (h, h):
            raise InputError(f"low-resolution images are {dataset.height}x{dataset.width}; factor {f:g} needs "
                             f"{h}x{h} for this {H}x{W} checkpoint")
        if source == "marginal":
            if (dataset.height, dataset.width) != (H, W):
                raise InputError(f"data are {dataset.height}x{dataset.width} but the checkpoint was trained at {H}x{W}")
            start = superres_start(model, dataset, f, lowres=False)
        else:
            start = _lowres_start(model, dataset, f, downsample=source == "bicubic")
        chain = chain_steps_for(start, steps, spacing, model.process)
        folder = out / f"x{f:g}"
        log(f"x{f:g}: {h}x{h} -> {H}x{W}, start step {chain[0]}, {len(chain) - 1} reverse steps")
        scores = {"skild": ImageScores(say), "bicubic": ImageScores(say)}
        head = {"lr": [], "bicubic": [], "skild": [], "hr": []}

        def compare(idx, sr, folder=folder, h=h, scores=scores, head=head):
            x = torch.from_numpy(dataset.get(idx))
            lr = x if source == "lowres" else bicubic_resize(x, h)
            bicubic = bicubic_resize(lr, H).clamp(-1, 1)
            save_pngs(bicubic, folder / "bicubic", int(idx[0]))
            if source != "lowres":
                scores["skild"].update(sr, x)
                scores["bicubic"].update(bicubic, x)
            for name, images in zip(head, (lr, bicubic, sr, x)):
                _keep(head[name], images, GRID_IMAGES)

        sink = ImageSink(folder / "samples", n, model, then=compare)
        drive(model, start, np.arange(n), chain, sink, seed, batch, variance, sampler, eta, progress=progress,
              unit="image", log=log)
        sink.close()
        first = {name: torch.cat(parts) for name, parts in head.items()}
        shown = _start_images(model, start, np.arange(len(first["skild"])), seed) if source == "marginal" \
            else _nearest(first["lr"], H)
        rows = {"input": shown, "bicubic": first["bicubic"], "skild": first["skild"]}
        if source != "lowres":
            rows["hr"] = first["hr"]
        save_png(image_grid(torch.cat(list(rows.values())), len(shown)), folder / "grid.png")
        key = f"{f:g}"
        examples[key] = {name: images[:FIGURE_EXAMPLES] for name, images in rows.items()}
        results[key] = {"lowres_side": h, "start_step": chain[0], "reverse_steps": len(chain) - 1}
        if source != "lowres":
            results[key].update({name: score.summary() for name, score in scores.items()})
    plot_factors(results, examples, out / "factors.png", source)
    checkpoint.write_json(results, out / "metrics.json")
    return _finish(out, params, {"metrics": results})


def _lowres_start(model: TrainedModel, dataset, factor: float, downsample: bool):
    """Start at n0 from the forward marginal of the embedded low-resolution input (downsampled HR or given LR)."""
    H, W = model.config.H, model.config.W
    h = lowres_side(H, factor)
    n0 = start_step_for_factor(model, factor)
    lr_basis = Basis.dct(h, h)

    def clean_modes(idx, gens):
        x = torch.from_numpy(dataset.get(idx)).to(device=model.device, dtype=torch.float64)
        y = bicubic_resize(x, h) if downsample else x
        return embed_low_modes(lr_basis.forward(y), H, W)

    return marginal_start(model, n0, clean_modes)


class ImageSink:
    """Final samples into FOLDER/*.png and FOLDER.npy (clamped to [−1, 1], float32); `then(idx, x)`
    sees each batch after it is written (metrics, grids)."""

    def __init__(self, folder: Path, n: int, model: TrainedModel, then=None):
        C, H, W = model.config.channels, model.config.H, model.config.W
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.then = folder, then
        self.array = np.lib.format.open_memmap(folder.with_suffix(".npy"), mode="w+", dtype=np.float32,
                                               shape=(n, C, H, W))

    def write(self, idx, seeds, x) -> None:
        x = x.clamp(-1, 1).to("cpu", torch.float32)
        save_pngs(x, self.folder, int(idx[0]))
        self.array[idx] = x.numpy()
        if self.then is not None:
            self.then(idx, x)

    def close(self) -> None:
        self.array.flush()


def _keep(head: list, images: torch.Tensor, m: int) -> None:
    """Append to `head` the images needed to make it hold the first m."""
    have = sum(len(t) for t in head)
    if have < m:
        head.append(images[:m - have])


def _start_images(model, start, idx, seed) -> torch.Tensor:
    """The chain's start states of samples idx in pixel space (the same draws the chain started from)."""
    gens = per_sample_generators(sample_seeds(seed, idx))
    with torch.no_grad():
        return model.process.basis.inverse(start.state(idx, gens)).clamp(-1, 1).to("cpu", torch.float32)


def _nearest(lr: torch.Tensor, H: int) -> torch.Tensor:
    """Low-resolution images shown on the H-grid by pixel repetition."""
    return torch.nn.functional.interpolate(lr, size=(H, H), mode="nearest").clamp(-1, 1).to(torch.float32)


def plot_factors(results: dict, examples: dict, path, source: str) -> Path:
    """One figure across factors: input, bicubic, SKILD (and HR) for a few images; mean PSNR/SSIM per factor."""
    from matplotlib.figure import Figure

    from skild_phys.data.images import to_uint8

    keys = list(results)
    columns = list(examples[keys[0]])
    n_ex = len(examples[keys[0]]["skild"])
    fig = Figure(figsize=(1.45 * len(columns) * n_ex + 1.6, 1.5 * len(keys) + 0.7), layout="constrained")
    axes = fig.subplots(len(keys), len(columns) * n_ex, squeeze=False)
    titles = {"input": "forward marginal at n0" if source == "marginal" else "LR input",
              "bicubic": "bicubic", "skild": "SKILD", "hr": "HR reference"}
    for r, key in enumerate(keys):
        for e in range(n_ex):
            for c, name in enumerate(columns):
                ax = axes[r, e * len(columns) + c]
                ax.imshow(to_uint8(examples[key][name][e:e + 1])[0], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(titles[name], fontsize=8)
        rec = results[key]
        label = f"x{key}  ({rec['lowres_side']} px)"
        if "skild" in rec:
            label += (f"\nbicubic {rec['bicubic']['psnr']['mean']:.1f} dB / {rec['bicubic']['ssim']['mean']:.2f}"
                      f"\nSKILD {rec['skild']['psnr']['mean']:.1f} dB / {rec['skild']['ssim']['mean']:.2f}")
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("Super-resolution at several factors from one checkpoint (PSNR / SSIM: mean over the set)",
                 fontsize=9)
    fig.savefig(path, dpi=130, metadata=outputs.plot_metadata(path))
    return Path(path)


def _check_image_model(model: TrainedModel) -> None:
    if model.config.model != "skild":
        raise InputError(f"image sampling supports SKILD checkpoints, not {model.config.model}")


def _prepare(out, params: dict, n: int, batch: int, overwrite: bool, log, inputs=()):
    """(OUT as a fresh directory, None), or (OUT, its config) when the same run is already complete there
    (`outputs.begin`; an unfinished one of the same parameters starts again: images are not resumed)."""
    if n < 1 or batch < 1:
        raise InputError("--samples and --batch must be at least 1")
    out = Path(out)
    params = json.loads(json.dumps(params))
    config = out / CONFIG
    old = outputs.read_record(config)
    status = outputs.begin(out, outputs.IMAGES, params, old, overwrite, inputs)
    if status == "complete":
        log(f"{out} is already complete; nothing to do")
        return out, old
    if status == "resume":
        outputs.replace(out, outputs.IMAGES)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json({outputs.KIND_ATTR: outputs.IMAGES, "params": params, "complete": False,
                           "skild_phys_version": __version__}, config)
    return out, None


def _finish(out: Path, params: dict, extra: dict) -> dict:
    """Mark OUT complete in its config.json and return that record."""
    record = {outputs.KIND_ATTR: outputs.IMAGES, "params": json.loads(json.dumps(params)), "complete": True,
              "skild_phys_version": __version__, **extra}
    checkpoint.write_json(record, out / CONFIG)
    return record


def _once(log):
    """A log that prints each distinct message once."""
    said = set()

    def say(msg):
        if msg not in said:
            said.add(msg)
            log(msg)

    return say
