"""`skild-phys train`, `generate`, `superres` and `coarsen`."""

from __future__ import annotations

import click

from skild_phys.cli.common import FINITE, writes

_device = click.option("--device", default="auto", help="torch device: auto (CUDA if available), cpu, cuda, cuda:1, ...")
_threads = click.option("--threads", type=int, default=None, help="CPU threads for torch [default: torch's choice].")
_block_reference = click.option(
    "--block-reference", type=click.Path(), default=None,
    help="With --lowres-start sampled: a spin store of the checkpoint's model and coupling (e.g. its training data "
         "or a fresh `simulate` at the training size) on which the block means are counted.")
_window = click.option("--window", default="global", type=click.Choice(["global", "train"]),
                       help="On a lattice larger than the checkpoint's: the network's GroupNorm statistics and "
                            "self-attention see the whole lattice (global) or the periodic window of the training "
                            "lattice around each site (train); the two are the same network at the training size.")


def _speed_options(command):
    """--precision and --compile: how the network runs (the process's tables stay float64)."""
    command = click.option("--compile", "compile_net", is_flag=True,
                           help="torch.compile the network (GPU runs; the first steps pay for compilation).")(command)
    return click.option("--precision", default="fp32", type=click.Choice(["fp32", "bf16", "tf32"]),
                        help="Network arithmetic: fp32, bf16 autocast, or TF32 matmuls on CUDA.")(command)


def _sampler_options(command):
    """--sampler, --eta and --spacing: which chain runs the K steps and where they go."""
    command = click.option("--spacing", default="uniform", type=click.Choice(["uniform", "log-lambda", "rho"]),
                           help="Step placement: uniform in n, uniform in log λ, or EDM's ρ = 7 spacing of √λ.")(command)
    command = click.option("--eta", type=FINITE, default=0.0,
                           help="Stochasticity in [0, 1]. ddim: 0 deterministic (the ODE's Euler step) ... 1 "
                                "ancestral in law; heun: the churn, re-noising each step by this fraction of "
                                "it in log λ before integrating (0: the deterministic ODE).")(command)
    return click.option("--sampler", default="ancestral", type=click.Choice(["ancestral", "ddim", "heun"]),
                        help="ancestral: the DDPM chain; ddim: the η family; heun: the probability-flow ODE, "
                             "second order (2K-1 network evaluations).")(command)


def _set_threads(threads):
    import torch

    from skild_base.errors import InputError

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _shape(channels, blocks, attention, mid_attention) -> dict:
    """Network shape overrides from the train options (only those given)."""
    from skild_base.errors import InputError

    shape = {}
    if channels is not None:
        shape["base_channels"] = channels
    if blocks is not None:
        shape["blocks_per_level"] = blocks
    if attention is not None:
        text = attention.strip().lower()
        try:
            shape["attention_levels"] = [] if text == "none" else [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--attention must be comma-separated levels or 'none', got {attention!r}") from None
    if mid_attention is not None:
        shape["mid_attention"] = mid_attention
    for name in ("base_channels", "blocks_per_level"):
        if name in shape and shape[name] < 1:
            raise InputError(f"--{'channels' if name == 'base_channels' else 'blocks'} must be at least 1")
    return shape


@click.command()
@click.option("--data", "data_spec", required=True,
              help="Training data: a Zarr store, cifar10:DIR or imagefolder:DIR.")
@click.option("--out", "run", type=click.Path(), required=True, help="Run directory (checkpoints, config, log).")
@click.option("--preset", default="auto", help="Schedule preset name, or 'auto' (the preset rule at the data's size and --factor).")
@click.option("--factor", type=FINITE, default=4.0, help="Super-resolution factor the schedule must reach (auto preset).")
@click.option("--k-c", "k_c", type=FINITE, default=None, help="IR cutoff k_c [default: pi for auto, the preset's otherwise].")
@click.option("--net", default="tiny", type=click.Choice(["tiny", "small", "base"]), help="Network size.")
@click.option("--periodic/--no-periodic", default=None, help="Circular padding [default: yes for lattice stores].")
@click.option("--basis", default=None, type=click.Choice(["dct", "fourier"]),
              help="Spectral basis of the process [default: fourier (periodic) for lattice stores, dct for images].")
@click.option("--spectrum", default=None, type=click.Choice(["fit", "empirical", "fit-low"]),
              help="S0 in the process's basis: power-law fit, per-mode variance, or the fit with the measured "
                   "variance of the lowest modes (DC and first shells) [default: empirical for lattice stores, "
                   "fit for images].")
@click.option("--size", type=int, default=None, help="Image size H for image-folder data.")
@click.option("--steps", type=int, default=None,
              help="Total optimisation steps [default: 8000 for lattice stores (about an hour at L = 32, --net "
                   "small, on 2 CPU cores), 2000 for images].")
@click.option("--batch", type=int, default=16, help="Batch size.")
@click.option("--lr", type=FINITE, default=2e-4, help="AdamW learning rate (after warm-up).")
@click.option("--warmup", type=int, default=100, help="Linear learning-rate warm-up steps.")
@click.option("--ema", "ema_decay", type=FINITE, default=None,
              help="EMA decay of the sampling weights [default: 0.99 for SKILD on lattice stores, 0.999 for "
                   "images and SR3].")
@click.option("--seed", type=int, default=0, help="Seed of initialisation, data order and noise.")
@click.option("--no-augment", is_flag=True, help="Disable symmetry augmentation.")
@click.option("--checkpoint-every", type=int, default=250, help="Steps between checkpoints.")
@click.option("--log-every", type=int, default=10, help="Steps averaged into one line of RUN/log.jsonl.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its resume checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a training run in --out (never other data).")
@click.option("--model", "model_kind", default="skild", type=click.Choice(["skild", "sr3"]),
              help="Method: SKILD, or the SR3 conditional DDPM baseline (block-mean input at --factor).")
@click.option("--parameterization", default="v", type=click.Choice(["v", "eps"]),
              help="Network output: v (per-mode v-prediction, stable with small networks) or eps (the paper's).")
@click.option("--lr-decay", default=None, type=click.Choice(["none", "cosine"]),
              help="Learning rate after warm-up: constant, or cosine decay to zero at --steps [default: cosine "
                   "for lattice stores, none for images].")
@click.option("--n-sampling", default="uniform", type=click.Choice(["uniform", "sr"]),
              help="Steps n of the loss: uniform on 1..N, or sr (3/4 of them uniform on the steps a --factor "
                   "super-resolution chain runs through, 1/4 on all).")
@click.option("--loss-weight", default=None, type=click.Choice(["eps", "v", "v-sr", "v-octave"]),
              help="SKILD loss per mode. eps: the paper's ε-MSE (a mode still mostly noise weighs little); v: the "
                   "v-MSE (every mode's X0 error weighted by 1 + SNR); v-sr: v on the steps of a --factor "
                   "super-resolution chain, eps above them; v-octave: v only on the steps where that chain resolves its "
                   "first octave (H/factor to 2H/factor), eps elsewhere. The v weights need --parameterization v "
                   "[default: v-sr for SKILD on lattice stores with --parameterization v, eps otherwise].")
@click.option("--noise-weight", type=float, default=1.0, show_default=True,
              help="Where a v --loss-weight acts, weigh each mode's X0 error by SNR + this: 1 is the v-MSE, 0 the "
                   "eps-MSE, between them a mode still pure noise counts this much against a resolved one.")
@click.option("--channels", type=int, default=None, help="Network base width [default: the --net size's].")
@click.option("--blocks", type=int, default=None, help="Residual blocks per level [default: the --net size's].")
@click.option("--attention", default=None,
              help="Levels (in downsamplings) with self-attention, comma-separated, or 'none' [default: the --net size's].")
@click.option("--mid-attention/--no-mid-attention", default=None,
              help="Self-attention in the bottleneck [default: yes].")
@click.option("--val-data", type=click.Path(), default=None,
              help="Held-out store: log a validation loss by bins of n next to the training loss.")
@click.option("--val-samples", type=int, default=32, help="Configurations of --val-data (and of the training set) "
                                                          "in the validation loss.")
@click.option("--val-every", type=int, default=500, help="Steps between validation losses.")
@_speed_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_device
@_threads
def train(data_spec, run, preset, factor, k_c, net, periodic, basis, spectrum, size, steps, batch, lr, warmup,
          ema_decay, seed, no_augment, checkpoint_every, log_every, resume, overwrite, model_kind, parameterization,
          lr_decay, n_sampling, loss_weight, noise_weight, channels, blocks, attention, mid_attention, val_data,
          val_samples, val_every, precision, compile_net, quiet, device, threads):
    """Train a diffusion model (SKILD, or the SR3 baseline) on a configuration store or image set.

    Writes RUN/model.pt (EMA weights for sampling), RUN/resume.pt (full training state),
    RUN/config.json and RUN/log.jsonl. Ctrl-C saves a resume checkpoint; rerun with --resume.
    Data-parallel on N processes or GPUs: `torchrun --nproc-per-node N -m skild_phys train ...`
    (--batch stays the global batch; see docs/scaling.md).
    """
    import contextlib
    import os

    from skild_base import outputs
    from skild_base.errors import InputError

    if k_c is not None and not k_c >= 0:
        raise InputError(f"--k-c must be 0 or positive, got {k_c:g}")
    if loss_weight not in (None, "eps") and (model_kind != "skild" or parameterization != "v"):
        raise InputError(f"--loss-weight {loss_weight} is a SKILD loss of the v parameterization "
                         f"(got --model {model_kind} --parameterization {parameterization})")
    from skild_phys.training.train import check_noise_weight

    check_noise_weight(noise_weight, loss_weight if model_kind == "skild" and parameterization == "v" else "eps")
    from skild_phys.methods.skild import pick_device

    pick_device(device)  # a device this machine lacks is refused before the run directory exists
    _set_threads(threads)
    import skild_phys.data.images  # noqa: F401  (registers the cifar10: and imagefolder: adapters)

    inputs = (data_spec, val_data)
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun's rank; one process writes the run directory
    if main:  # the run directory is checked before any data are read
        from skild_phys.training.train import RUN_HINT

        outputs.claim(run, outputs.RUN, overwrite=overwrite, resume=resume, inputs=inputs, hint=RUN_HINT)
    with outputs.lock(run) if main else contextlib.nullcontext():
        _train(data_spec, run, preset, factor, k_c, net, periodic, basis, spectrum, size, steps, batch, lr, warmup,
               ema_decay, seed, no_augment, checkpoint_every, log_every, resume, overwrite, model_kind,
               parameterization, lr_decay, n_sampling, channels, blocks, attention, mid_attention, val_data,
               val_samples, val_every, quiet, device, inputs, precision, compile_net, loss_weight, noise_weight)


def _train(data_spec, run, preset, factor, k_c, net, periodic, basis, spectrum, size, steps, batch, lr, warmup,
           ema_decay, seed, no_augment, checkpoint_every, log_every, resume, overwrite, model_kind, parameterization,
           lr_decay, n_sampling, channels, blocks, attention, mid_attention, val_data, val_samples, val_every, quiet,
           device, inputs, precision="fp32", compile_net=False, loss_weight=None, noise_weight=1.0):
    from skild_phys.data.adapters import open_dataset
    from skild_phys.methods import get_method
    from skild_phys.methods.skild import data_defaults
    from skild_phys.training import ddp
    from skild_phys.training.train import TrainSettings, prepare_run_dir
    from skild_phys.training.train import train as run_training

    dataset = open_dataset(data_spec, size=size)
    defaults = data_defaults(dataset, model_kind)
    lr_decay = lr_decay or defaults["lr_decay"]
    if steps is None:  # --resume continues to the run's own end; a new run takes the data's default
        steps = _recorded_steps(run) if resume else None
        steps = defaults["steps"] if steps is None else steps
    ema_decay = defaults["ema_decay"] if ema_decay is None else ema_decay
    loss_weight = loss_weight or (defaults["loss_weight"] if parameterization == "v" else "eps")
    ranks = ddp.init_from_env(device)
    settings = TrainSettings(steps=steps, batch=batch, lr=lr, warmup=warmup, ema_decay=ema_decay, seed=seed,
                             augment=not no_augment, checkpoint_every=checkpoint_every,
                             log_every=log_every, device=device, lr_decay=lr_decay, n_sampling=n_sampling,
                             loss_weight=loss_weight, noise_weight=noise_weight,
                             val_data=val_data, val_samples=val_samples, val_every=val_every,
                             precision=precision, compile=compile_net)
    settings.validate()
    shape = _shape(channels, blocks, attention, mid_attention)
    method = get_method(model_kind)
    config, S0 = method.resolve_config(dataset, preset, factor, k_c, net, periodic, basis, spectrum, settings,
                                       parameterization, shape)
    run_dir = ddp.main_first(lambda: prepare_run_dir(run, resume=resume, overwrite=overwrite, inputs=inputs), ranks)
    try:
        record = run_training(run_dir, dataset, config, S0, resume=resume, progress=not quiet,
                              log=lambda m: click.echo(m, err=True), objective=method.objective(config))
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; state saved, continue with the same command plus --resume") from None
    if ranks.main:
        click.echo(f"trained to step {config.train['steps']}: loss {record.get('loss', float('nan')):.4f}; "
                   f"checkpoint {run_dir}/model.pt")


def _recorded_steps(run) -> int | None:
    """The step count RUN/config.json records, or None where there is none to read."""
    import json
    from pathlib import Path

    from skild_phys import checkpoint

    try:
        steps = json.loads((Path(run) / checkpoint.CONFIG_FILE).read_text())["train"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if isinstance(steps, int) else None


def _chain_options(f):
    """The options generate and superres share: seeds, batches, the sampler, the network's speed, output."""
    options = [click.option("--seed", type=int, default=0, help="Base seed; sample i uses a seed derived from (seed, i)."),
               click.option("--batch", type=int, default=16, help="Samples per batch (results do not depend on it)."),
               click.option("--variance", default=None, type=click.Choice(["posterior", "forward", "split"]),
                            help="Reverse-step noise: q(X_m | X_n, X_0)'s (the paper's), the forward step's β "
                                 "(exact for Gaussian data at any step count), or split: posterior above the "
                                 "checkpoint's super-resolution start n0, forward from n0 down (SKILD) "
                                 "[default: for SKILD lattice checkpoints forward for super-resolution, "
                                 "split for generation; posterior for images and SR3]."),
               click.option("--keep-field", is_flag=True, help="Also store the raw continuous field."),
               _sampler_options, _speed_options, _window,
               click.option("--overwrite", is_flag=True,
                            help="Replace samples skild-phys wrote at --out (never other data)."),
               click.option("--quiet", is_flag=True, help="No progress bar."),
               _device, _threads]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.option("--checkpoint", "run", required=True, type=click.Path(), help="Run directory of a trained model.")
@click.option("--samples", type=int, default=64, help="Configurations to generate.")
@click.option("--out", type=click.Path(), required=True,
              help="Output Zarr store (lattice models) or directory of PNGs and a grid (image models).")
@click.option("--steps", type=int, default=100,
              help="Reverse steps K from n = N (the exact respaced chain); K >= N runs the full chain "
                   "(docs/results/samplers.md).")
@_chain_options
@writes("out")
def generate(run, samples, out, steps, seed, batch, variance, keep_field, sampler, eta, spacing, precision,
             compile_net, window, overwrite, quiet, device, threads):
    """Generate configurations from noise (reverse chain from n = N)."""
    from skild_phys.methods import load_trained, resolve_variance
    from skild_phys.sampling.lattice import generate_lattices

    _set_threads(threads)
    model = load_trained(run, device, precision, compile_net, window)
    variance = resolve_variance(model, variance, generate=True)
    if model.config.data_kind == "image":
        from skild_phys.sampling.images import generate_images

        generate_images(out, model, samples, steps, seed=seed, batch=batch, variance=variance, overwrite=overwrite,
                        sampler=sampler, eta=eta, spacing=spacing,
                        progress=not quiet, log=lambda m: click.echo(m, err=True))
        click.echo(f"wrote {samples} generated images to {out}/samples (grid {out}/grid.png)")
        return
    generate_lattices(out, model, samples, steps, checkpoint=str(run), seed=seed, batch=batch,
                      keep_field=keep_field, variance=variance, overwrite=overwrite, progress=not quiet,
                      log=lambda m: click.echo(m, err=True), sampler=sampler, eta=eta, spacing=spacing)
    click.echo(f"wrote {samples} generated configurations to {out}")


@click.command()
@click.option("--checkpoint", "run", required=True, type=click.Path(), help="Run directory of a trained model.")
@click.option("--data", "hr", type=click.Path(), default=None,
              help="High-resolution store or image set (cifar10:DIR, imagefolder:DIR): start from the exact "
                   "forward marginal at n0 (paper protocol).")
@click.option("--lowres", "lr", type=click.Path(), default=None,
              help="Low-resolution store (e.g. from `coarsen`) or image set (resized to round(H/factor)).")
@click.option("--bicubic", is_flag=True,
              help="Image models: super-resolve --data bicubic-downsampled by the factor (real LR inputs, --data "
                   "as reference) instead of its forward marginal.")
@click.option("--factor", type=FINITE, required=True, multiple=True,
              help="Super-resolution factor (the input has H/factor pixels per side); image models take any real "
                   "factor, repeated for several (--factor 2 --factor 3 ...).")
@click.option("--out", type=click.Path(), required=True,
              help="Output Zarr store (lattice models) or directory with one folder per factor (image models).")
@click.option("--samples", type=int, default=None, help="Use only the first N inputs [default: all].")
@click.option("--lowres-start", default="conditional",
              type=click.Choice(["conditional", "spread", "embed", "sampled"]),
              help="Lattice --lowres: draw the clean state from its Gaussian conditional given the block means "
                   "under the checkpoint's S0 (any basis); spread: the same, with ±1 block spins observed as "
                   "block means of size E|block mean| with S0's spread around it; sampled: the same, with ±1 "
                   "majority block spins replaced by block means drawn given each block's 3x3 neighbourhood "
                   "of block spins, as often as on --block-reference (the cascade's start, "
                   "docs/results/transfer_L128.md); embed: place the coarse DCT coefficients in the low modes.")
@_block_reference
@click.option("--steps", type=int, default=100,
              help="Reverse steps K from n0, each stage of a cascade; K >= n0 runs the full chain (docs/results/samplers.md).")
@click.option("--cascade", is_flag=True,
              help="Lattice --lowres: climb the repeated --factor one at a time (--factor 4 --factor 4: 8 -> 32 -> "
                   "128), each stage's output the next one's coarse input, stage j with seed + j; the stages "
                   "before the last are kept beside --out as OUT.L<side>.zarr.")
@_chain_options
@writes("out")
def superres(run, hr, lr, bicubic, factor, out, samples, lowres_start, block_reference, steps, cascade, seed, batch,
             variance, keep_field, sampler, eta, spacing, precision, compile_net, window, overwrite, quiet, device,
             threads):
    """Super-resolve configurations by the reverse chain from n0, where r(n0) = H / factor.

    A lattice larger than the checkpoint's runs in lattice units (docs/theory.md); --cascade climbs
    several factors in turn.
    """
    from skild_base.errors import InputError
    from skild_phys.methods import load_trained, resolve_variance
    from skild_phys.sampling.lattice import cascade_lattices, superres_lattices

    if (hr is None) == (lr is None):
        raise InputError("give exactly one of --data (high-resolution store) or --lowres (coarse store)")
    _set_threads(threads)
    if (block_reference is not None) != (lowres_start == "sampled"):
        raise InputError("--lowres-start sampled and --block-reference go together")
    model = load_trained(run, device, precision, compile_net, window)
    variance = resolve_variance(model, variance)
    if block_reference is not None:
        from skild_phys.methods.starts import attach_block_reference

        if lr is None or model.config.data_kind == "image":
            raise InputError("--block-reference is for a lattice checkpoint's --lowres input")
        model = attach_block_reference(model, block_reference, set(factor))
    if model.config.data_kind == "image":
        if cascade:
            raise InputError("--cascade is for lattice checkpoints; image models take several --factor at once")
        _superres_images(model, hr, lr, bicubic, factor, out, samples, steps, seed, batch, variance, overwrite, quiet,
                         sampler, eta, spacing)
        return
    if bicubic:
        raise InputError("--bicubic is for image models; for lattices pass a coarse store with --lowres")
    options = dict(seed=seed, batch=batch, keep_field=keep_field, variance=variance, overwrite=overwrite,
                   progress=not quiet, log=lambda m: click.echo(m, err=True), sampler=sampler, eta=eta,
                   spacing=spacing)
    if cascade:
        if lr is None:
            raise InputError("--cascade starts from a coarse store: pass it with --lowres")
        stages = cascade_lattices(out, model, lr, factor, samples, steps, checkpoint=str(run),
                                  lowres_start=lowres_start, **options)
        for path, side, n_start in stages:
            click.echo(f"cascade: {side}x{side} (from step {n_start}) in {path}")
        click.echo(f"wrote the x{' x'.join(f'{f:g}' for f in factor)} cascade to {out}")
        return
    if len(factor) != 1:
        raise InputError("lattice super-resolution takes one --factor (several in turn with --cascade)")
    n, n_start = superres_lattices(out, model, hr or lr, lr is not None, factor[0], samples, steps,
                                   checkpoint=str(run), lowres_start=lowres_start, **options)
    click.echo(f"wrote {n} super-resolved configurations (x{factor[0]:g}, from step {n_start}) to {out}")


def _superres_images(model, hr, lr, bicubic, factors, out, samples, steps, seed, batch, variance, overwrite, quiet,
                     sampler, eta, spacing):
    """`superres` for an image checkpoint: PNG folders per factor, metrics.json and factors.png in OUT."""
    import skild_phys.data.images  # noqa: F401  (registers the cifar10: and imagefolder: adapters)
    from skild_base.errors import InputError
    from skild_phys.data.adapters import open_dataset
    from skild_phys.data.images import lowres_side
    from skild_phys.sampling.images import superres_images

    if lr is not None and (bicubic or len(factors) != 1):
        raise InputError("--lowres images have one size: give one --factor and no --bicubic")
    H = model.config.H
    dataset = open_dataset(hr, size=H) if hr else open_dataset(lr, size=lowres_side(H, factors[0]))
    source = "lowres" if lr else ("bicubic" if bicubic else "marginal")
    record = superres_images(out, model, dataset, factors, source, samples, steps, seed=seed, batch=batch,
                             sampler=sampler, eta=eta, spacing=spacing,
                             variance=variance, overwrite=overwrite, progress=not quiet,
                             log=lambda m: click.echo(m, err=True))
    for f, rec in record.get("metrics", {}).items():
        if "skild" in rec:
            skild, bicubic = rec["skild"], rec["bicubic"]
            click.echo(f"x{f}: SKILD PSNR {skild['psnr']['mean']:.2f} dB, SSIM {skild['ssim']['mean']:.3f} | "
                       f"bicubic PSNR {bicubic['psnr']['mean']:.2f} dB, SSIM {bicubic['ssim']['mean']:.3f}")
    click.echo(f"wrote super-resolved images ({source}, factors {', '.join(f'{f:g}' for f in factors)}) to {out}")


@click.command()
@click.option("--pred", required=True,
              help="Images to score: imagefolder:DIR (e.g. OUT/x4/samples) or cifar10:PATH.")
@click.option("--ref", default=None, help="Reference images in the same order (PSNR, SSIM, LPIPS; FID).")
@click.option("--size", type=int, default=None, help="Side of image-folder images [default: the reference's].")
@click.option("--out", type=click.Path(), default=None, help="Also write the metrics to this JSON file.")
@click.option("--overwrite", is_flag=True, help="Replace a metrics file skild-phys wrote at --out.")
@writes("out")
def metrics(pred, ref, size, out, overwrite):
    """Image metrics: PSNR and SSIM against --ref; LPIPS, FID and IS when their weights are local."""
    import json
    from pathlib import Path

    import numpy as np
    import torch

    import skild_phys.data.images  # noqa: F401  (registers the cifar10: and imagefolder: adapters)
    from skild_base import outputs
    from skild_base.errors import InputError
    from skild_phys.data.adapters import open_dataset
    from skild_phys.data.metrics import image_metrics

    if out:
        outputs.check_file(out, (".json",), "--out", overwrite, kind=outputs.METRICS, inputs=(pred, ref))
    ref_set = None if ref is None else open_dataset(ref, size=size)
    pred_set = open_dataset(pred, size=size or (None if ref_set is None else ref_set.height))
    n = len(pred_set)
    y = None
    if ref_set is not None:
        if len(ref_set) < n or (ref_set.height, ref_set.width) != (pred_set.height, pred_set.width):
            raise InputError(f"--ref must hold at least {n} images of {pred_set.height}x{pred_set.width}")
        y = torch.from_numpy(ref_set.get(np.arange(n)))
    x = torch.from_numpy(pred_set.get(np.arange(n)))
    result = image_metrics(x, y, log=lambda m: click.echo(m, err=True))
    for name, value in result.items():
        click.echo(f"{name}: {value['mean']:.4f} +- {value['sem']:.4f} (n = {value['n']})" if isinstance(value, dict)
                   else f"{name}: {value:.4f}")
    if out:
        record = {outputs.KIND_ATTR: outputs.METRICS, "pred": pred, "ref": ref, "n": n, **result}
        Path(out).write_text(json.dumps(record, indent=2) + "\n")


@click.command()
@click.argument("source", type=click.Path())
@click.option("--factor", type=int, required=True, help="Block size f (L must be divisible by f).")
@click.option("--rule", default="majority", type=click.Choice(["majority", "decimate", "mean"]), help="Block-spin rule.")
@click.option("--out", type=click.Path(), required=True, help="Output Zarr store.")
@click.option("--overwrite", is_flag=True, help="Replace a coarse store at --out (never other data).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@writes("out")
def coarsen(source, factor, rule, out, overwrite, quiet):
    """Block-spin coarse-grain a spin store (majority rule, decimation or block mean)."""
    from ising.coarsen import coarsen_store

    attrs = coarsen_store(source, out, factor, rule, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote {out}: L={attrs['L']} ({rule} x{factor})")


COMMANDS = [train, generate, superres, coarsen, metrics]
