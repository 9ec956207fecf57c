"""`skild-phys correlators`: kappa4 across patch sizes, G(r), moments and spectrum of stores."""

from __future__ import annotations

import math

import click

from skild_phys.cli.common import writes


def _ints(text: str | None, what: str) -> list[int] | None:
    from skild_base.errors import InputError

    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def _sizes(text: str | None) -> list[int] | None:
    from skild_base.errors import InputError

    sizes = _ints(text, "--sizes")
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise InputError(f"--sizes must be patch sides of at least 1, got {text!r}")
    return sizes


def _window(text: str | None, what: str) -> tuple[float, float] | None:
    from skild_base.errors import InputError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{what} must be two numbers LO,HI, got {text!r}") from None
    if not (0 < lo < hi and math.isfinite(hi)):
        raise InputError(f"{what} needs 0 < LO < HI, got {text!r}")
    return lo, hi


@click.command()
@click.argument("stores", nargs=-1, required=True, metavar="TRUTH.zarr [OTHER.zarr ...]")
@click.option("--sizes", default=None, help="Patch sides l, comma-separated [default: powers of two below L/2].")
@click.option("--label", "labels", multiple=True, help="Name of each store in order (repeat once per store).")
@click.option("--out", required=True, type=click.Path(), help="Result Dataset: .nc (NetCDF) or .zarr.")
@click.option("--plot", "plot_path", default=None, type=click.Path(), help="Figure: .png or .pdf.")
@click.option("--project", type=click.Choice(["sign", "none"]), default="sign",
              help="sign: analyse spins (continuous fields mapped to +-1); none: keep continuous values.")
@click.option("--kappa4-window", default=None, help="Patch sides LO,HI fitted for the kappa4 exponent [default: 2,L/4].")
@click.option("--k-window", default=None, help="Spectrum fit range LO,HI in |k|/pi [default: L/16,5L/32].")
@click.option("--spectrum-basis", type=click.Choice(["dct", "fourier"]), default="dct",
              help="Power spectrum basis: dct (the SKILD default) or fourier (periodic; the structure factor).")
@click.option("--no-spectrum", is_flag=True, help="Skip the power spectrum (the slowest part).")
@click.option("--threads", type=int, default=None, help="Worker threads [default: all cores]; never changes results.")
@click.option("--overwrite", is_flag=True, help="Replace --out / --plot files that skild-phys wrote (never other files).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@writes("out", "plot_path")
def correlators(stores, sizes, labels, out, plot_path, project, kappa4_window, k_window, spectrum_basis, no_spectrum,
                threads, overwrite, quiet):
    """Connected four-point cumulant kappa4(l) of the corners of l x l squares, per store.

    The first store is the reference (truth); the table gives every other store's deviation
    from it in standard errors.  Also computes G(r), <e>, <|m|>, <m^2>, <m^4>, Binder U4,
    susceptibility and the power spectrum with its power-law fit.
    """
    import math
    import warnings

    import numba

    from analysis.observables import BlockingWarning, format_table
    from ising.measure import correlators as run
    from ising.measure import write_dataset
    from skild_base import outputs
    from skild_base.errors import InputError

    outputs.check_file(out, (".nc", ".zarr"), "--out", overwrite, kind=outputs.CORRELATORS, inputs=stores)
    if plot_path is not None:
        outputs.check_file(plot_path, (".png", ".pdf"), "--plot", overwrite, kind=outputs.PLOT, inputs=stores)
    if threads is not None:
        if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
            raise InputError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {threads}")
        numba.set_num_threads(threads)
    k_window = _window(k_window, "--k-window")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BlockingWarning)
        ds = run(list(stores), sizes=_sizes(sizes), labels=list(labels) or None, project=project,
                 kappa4_window=_window(kappa4_window, "--kappa4-window"),
                 k_window=None if k_window is None else (k_window[0] * math.pi, k_window[1] * math.pi),
                 basis=None if no_spectrum else spectrum_basis, progress=not quiet)
    for w in caught:
        if issubclass(w.category, BlockingWarning):
            click.echo(f"warning: {w.message}", err=True)
    write_dataset(ds, out, overwrite=overwrite, inputs=stores)
    click.echo(format_table(ds))
    click.echo(f"\nwrote {out}")
    if plot_path is not None:
        from analysis.plotting import plot_correlators

        plot_correlators(ds, plot_path)
        click.echo(f"wrote {plot_path}")


COMMANDS = [correlators]
