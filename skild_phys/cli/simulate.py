"""`skild-phys simulate` and `skild-phys info`: critical Ising stores."""

from __future__ import annotations

import click


@click.command()
@click.option("--L", "L", type=int, required=True, help="Lattice side (L x L, periodic).")
@click.option("--samples", type=int, default=1000, help="Configurations to save.")
@click.option("--out", "out", type=click.Path(), required=True, help="Zarr store to write (a directory).")
@click.option("--T", "T", type=float, default=None, help="Temperature (default: T_c = 2.2691853...).")
@click.option("--beta", type=float, default=None, help="Inverse temperature (alternative to --T).")
@click.option("--seed", type=int, default=0, help="Run seed; the stored data depend only on seed and parameters.")
@click.option("--chains", type=int, default=8, help="Independent Markov chains (each thermalised separately).")
@click.option("--threads", type=int, default=None, help="Worker threads [default: all cores]; never changes results.")
@click.option("--thermalize", type=float, default=200.0, help="Thermalisation per chain, in sweeps (L^2 flipped spins).")
@click.option("--sweeps-between", type=float, default=2.0, help="Spacing of saved samples of one chain, in sweeps.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(L, samples, out, T, beta, seed, chains, threads, thermalize, sweeps_between, overwrite, quiet):
    """Sample critical 2D Ising configurations with the Wolff cluster algorithm into a Zarr store.

    Interrupted runs continue where they stopped when the same command is run again.
    """
    from ising.exact import BETA_C
    from ising.simulate import SimulationParams, run_simulation
    from skild_phys.errors import InputError

    if T is not None and beta is not None:
        raise InputError("give either --T or --beta, not both")
    if T is not None:
        if not T > 0:
            raise InputError(f"temperature must be positive, got {T}")
        beta = 1.0 / T
    params = SimulationParams(L=L, n_samples=samples, beta=BETA_C if beta is None else beta, chains=chains,
                              seed=seed, thermalize=thermalize, sweeps_between=sweeps_between)
    try:
        attrs = run_simulation(out, params, threads=threads, overwrite=overwrite, progress=not quiet)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; run the same command again to continue where it stopped") from None
    click.echo(f"wrote {samples} samples of L={L} at beta={params.beta:.7g} to {out} "
               f"(tau_int: e {attrs['tau_int_e']:.2f}, |m| {attrs['tau_int_absm']:.2f} sweeps; "
               f"samples {attrs['sweeps_between_measured']:.2f} sweeps apart)")


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
def info(store_path):
    """Summarise a store: parameters, <e>, <|m|>, <m^2>, U4 with errors, tau_int, exact comparisons."""
    from ising.summary import format_summary, summarize

    click.echo(format_summary(summarize(store_path)))


COMMANDS = [simulate, info]
