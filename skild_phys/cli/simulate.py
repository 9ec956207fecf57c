"""`skild-phys simulate` and `skild-phys info`: critical Ising stores."""

from __future__ import annotations

import click

from skild_phys.cli.common import FINITE, finite


class _ListOf(click.ParamType):
    """A comma-separated list of numbers: `32` or `32,64,128`."""

    def __init__(self, kind):
        self.kind = kind
        self.label = "finite number" if kind is finite else kind.__name__
        self.name = f"{self.label}[,{self.label}...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return [self.kind(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"expected a comma-separated list of {self.label} values, got {value!r}", param, ctx)


@click.command()
@click.option("--L", "L", type=_ListOf(int), required=True, help="Lattice side (L x L, periodic); a list sweeps sizes.")
@click.option("--samples", type=int, default=1000, help="Configurations to save.")
@click.option("--out", "out", type=click.Path(), required=True,
              help="Zarr store to write: a directory or fsspec URL; sweeps add _L32, _T2.3, ... before .zarr.")
@click.option("--T", "T", type=_ListOf(finite), default=None,
              help="Temperature (default: T_c = 2.2691853...); a list sweeps.")
@click.option("--beta", type=_ListOf(finite), default=None,
              help="Inverse temperature (alternative to --T); a list sweeps.")
@click.option("--seed", type=int, default=0, help="Run seed; the stored data depend only on seed and parameters.")
@click.option("--chains", type=int, default=8, help="Independent Markov chains (each thermalised separately).")
@click.option("--threads", type=int, default=None,
              help="Threads [default: all cores; with a cluster: 1 per task]; never changes results.")
@click.option("--workers", type=int, default=None, help="Run chains as tasks on a local Dask cluster of N processes.")
@click.option("--scheduler", default=None, help="Run chains as tasks on the Dask cluster at tcp://HOST:PORT.")
@click.option("--bind", default="127.0.0.1", help="Address the local cluster (--workers) listens on.")
@click.option("--task-flips", type=click.IntRange(min=1), default=None,
              help="With a cluster: spins flipped per task and block [default: 1e8, ~1 s of a core]; "
                   "never changes results.")
@click.option("--thermalize", type=FINITE, default=200.0, help="Thermalisation per chain, in sweeps (L^2 flipped spins).")
@click.option("--sweeps-between", type=FINITE, default=2.0, help="Spacing of saved samples of one chain, in sweeps.")
@click.option("--overwrite", is_flag=True, help="Replace a simulation store at --out (never other data).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(L, samples, out, T, beta, seed, chains, threads, workers, scheduler, bind, task_flips, thermalize,
             sweeps_between, overwrite, quiet):
    """Sample critical 2D Ising configurations with the Wolff cluster algorithm into a Zarr store.

    Interrupted runs continue where they stopped when the same command is run again. With
    --workers or --scheduler the chains run as Dask tasks; the store is the same.
    """
    import contextlib
    import functools

    from ising.exact import BETA_C
    from ising.simulate import SimulationParams, run_simulation
    from ising.sweep import sweep_points
    from skild_base.errors import InputError

    if T is not None and beta is not None:
        raise InputError("give either --T or --beta, not both")
    if T is not None and not all(t > 0 for t in T):
        raise InputError(f"temperature must be positive, got {','.join(map(str, T))}")
    axes = {"L": L, **({"T": T} if T is not None else {"beta": beta or [BETA_C]})}
    points = sweep_points(out, axes)
    distributed = workers is not None or scheduler is not None
    if distributed and threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")

    runs = []
    for point, path in points:
        b = 1.0 / point["T"] if "T" in point else point["beta"]
        params = SimulationParams(L=point["L"], n_samples=samples, beta=b, chains=chains, seed=seed,
                                  thermalize=thermalize, sweeps_between=sweeps_between)
        params.validate()
        runs.append((params, path))

    with contextlib.ExitStack() as stack:
        engine = None
        if distributed:
            from ising.distributed import DaskChains, connect

            client = stack.enter_context(connect(workers, scheduler, bind))
            tuning = {} if task_flips is None else {"task_flips": task_flips}
            engine = functools.partial(DaskChains, client, threads=threads or 1, **tuning)
        for params, path in runs:
            try:
                attrs = run_simulation(path, params, threads=None if distributed else threads, overwrite=overwrite,
                                       progress=not quiet, engine=engine)
            except KeyboardInterrupt:
                raise click.ClickException("interrupted; run the same command again to continue where it stopped") from None
            click.echo(f"wrote {samples} samples of L={params.L} at beta={params.beta:.7g} to {path} "
                       f"(tau_int: e {attrs['tau_int_e']:.2f}, |m| {attrs['tau_int_absm']:.2f} sweeps; "
                       f"samples {attrs['sweeps_between_measured']:.2f} sweeps apart)")


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
def info(store_path):
    """Summarise a store: parameters, <e>, <|m|>, <m^2>, U4 with errors, tau_int, exact comparisons."""
    from ising.summary import format_summary, summarize

    click.echo(format_summary(summarize(store_path)))


COMMANDS = [simulate, info]
