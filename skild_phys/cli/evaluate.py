"""`skild-phys evaluate`: the fidelity table of one checkpoint against a held-out truth store."""

from __future__ import annotations

import click

from skild_phys.cli.common import FINITE, writes
from skild_phys.cli.model import (_block_reference, _device, _sampler_options, _set_threads, _speed_options,
                                  _threads, _window)


@click.command()
@click.option("--checkpoint", "run", required=True, type=click.Path(), help="Run directory of a trained model.")
@click.option("--truth", required=True, type=click.Path(),
              help="Held-out spin store from `simulate` (never seen in training).")
@click.option("--out", required=True, type=click.Path(),
              help="Evaluation directory: one store per source, fidelity.nc, fidelity.md.")
@click.option("--samples", type=int, default=1000, help="Super-resolve the first N truth configurations.")
@click.option("--gen-samples", type=int, default=500, help="Configurations generated from noise (0: none).")
@click.option("--steps", type=int, default=100, help="Respaced reverse steps K per chain.")
@click.option("--factor", type=FINITE, default=None, help="Super-resolution factor [default: the checkpoint's].")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(["marginal", "lowres", "generate"]),
              help="marginal: forward marginal of the true configuration at n0 (paper); lowres: its block "
                   "mean/spin as a real coarse input; generate: from noise [default: all three].")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["gaussian", "untrained", "none"]),
              help="Floors run under the same protocols: gaussian (the exact chain for Gaussian data with the "
                   "checkpoint's S0), untrained (the architecture at initialisation) [default: both].")
@click.option("--lowres-rule", default="mean", type=click.Choice(["mean", "majority"]),
              help="Coarse input of the lowres protocol: block mean or majority block spin.")
@click.option("--lowres-start", default="conditional",
              type=click.Choice(["conditional", "spread", "embed", "sampled"]),
              help="How the coarse input becomes a clean state: Gaussian conditioning on the block means under "
                   "S0; spread: the same, with ±1 block spins observed as block means of size E|block mean| "
                   "with S0's spread around it; sampled: the same, with ±1 block spins replaced by block means "
                   "drawn given their 3x3 neighbourhoods as on --block-reference; or its DCT coefficients "
                   "placed in the low modes (DCT only).")
@_block_reference
@click.option("--seed", type=int, default=0, help="Base seed of every chain (sample i: seed derived from (seed, i)).")
@click.option("--batch", type=int, default=50, help="Samples per batch (results do not depend on it).")
@click.option("--variance", default=None, type=click.Choice(["posterior", "forward", "split"]),
              help="Reverse-step noise: q(X_m | X_n, X_0)'s (the paper's), the forward step's β (exact for "
                   "Gaussian data at any step count), or split: posterior above the checkpoint's "
                   "super-resolution start n0, forward from n0 down (SKILD) [default: for SKILD lattice "
                   "checkpoints forward for super-resolution, split for generation; posterior for SR3].")
@click.option("--spectrum-basis", default="fourier", type=click.Choice(["fourier", "dct"]),
              help="Basis of the spectrum ratio (fourier: the torus structure factor).")
@click.option("--keep-field", is_flag=True, help="Also store each chain's continuous field (before the sign).")
@_sampler_options
@_speed_options
@_window
@click.option("--overwrite", is_flag=True, help="Replace an evaluation with other settings in --out (never other data).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_device
@_threads
@writes("out")
def evaluate(run, truth, out, samples, gen_samples, steps, factor, protocols, baselines, lowres_rule, lowres_start,
             block_reference, seed, batch, variance, spectrum_basis, keep_field, sampler, eta, spacing, precision,
             compile_net, window, overwrite, quiet, device, threads):
    """Fidelity of a checkpoint: super-resolution (both protocols) and generation against the truth.

    Prints and writes OUT/fidelity.md (and fidelity.nc, fidelity.png): paired kappa4 excess per patch size, paired <e>, <|m|>, U4
    and G(r), unpaired deviations, the spectrum ratio per |k| shell, the bond-energy profile
    against distance to the array seam, and network evaluations and wall time per source —
    for the model and for the floors. Rerunning the same command resumes it.
    """
    import warnings

    from analysis.observables import BlockingWarning
    from skild_phys.reports.evaluate import BASELINES, PROTOCOLS, TABLE_FILE, EvalSettings
    from skild_phys.reports.evaluate import evaluate as run_evaluation

    _set_threads(threads)
    chosen = tuple(b for b in (baselines or BASELINES) if b != "none")
    settings = EvalSettings(samples=samples, gen_samples=gen_samples, steps=steps, seed=seed, batch=batch,
                            factor=factor, protocols=tuple(protocols or PROTOCOLS), baselines=chosen,
                            lowres_rule=lowres_rule, lowres_start=lowres_start,
                            block_reference=block_reference, variance=variance,
                            spectrum_basis=spectrum_basis, keep_field=keep_field, sampler=sampler, eta=eta,
                            spacing=spacing, precision=precision, compile=compile_net, window=window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlockingWarning)  # model stores: independent samples by construction
        ds = run_evaluation(run, truth, out, settings, device=device, overwrite=overwrite, progress=not quiet,
                            log=lambda m: click.echo(m, err=True))
    from skild_phys.reports.evaluate import format_fidelity

    click.echo(format_fidelity(ds))
    click.echo(f"wrote {out}/{TABLE_FILE}, {out}/fidelity.nc and {out}/fidelity.png")


COMMANDS = [evaluate]
