"""The observables of a correlators Dataset, as a registry of named estimators.

An observable is a function of the block means of one primitive that `BlockSums` accumulates
(corner products, pair products, moment sums, seam-profile products, mode coefficients).  The
registry says, for each one, how its estimate splits into Dataset variables (names, dimensions,
attributes) and how it is compared on paired configurations.  `source_estimates`, the Dataset
assembly (`analysis.observables`) and the paired comparison (`analysis.paired`) iterate over
`OBSERVABLES`; adding an observable is one `register(...)` call here (and, for a quantity no
primitive holds yet, one more array in `BlockSums.add`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis import spectrum
from analysis.correlation import G_from_means
from analysis.cumulants import expand_corner_means, kappa4_from_means
from analysis.moments import MOMENT_ATTRS, MOMENT_NAMES, moment_estimates
from analysis.scaling import power_law_exponent


@dataclass(frozen=True)
class Context:
    """What the estimators of one source need besides its block means."""

    sizes: np.ndarray  # patch sides l
    L: int  # lattice side
    J: float  # coupling
    beta: float  # inverse temperature
    k: np.ndarray | None  # |k| of every mode (None: no spectrum)
    kappa4_window: tuple
    k_window: tuple


@dataclass(frozen=True)
class Variable:
    """One Dataset variable an observable's estimate fills (dims after `source`)."""

    name: str
    dims: tuple
    attrs: dict
    part: Callable  # (estimate vector, ctx) -> this variable's values


@dataclass(frozen=True)
class Paired:
    """The paired comparison: model (op) truth of `estimate` on the same configurations."""

    name: str  # Dataset variable
    dim: str  # its dimension after `source`
    description: str
    estimate: Callable  # (block means, ctx) -> values compared
    combine: Callable = np.subtract  # np.subtract: a difference; np.divide: a ratio


@dataclass(frozen=True)
class Observable:
    """A named estimator over the block means of one BlockSums primitive."""

    name: str
    primitive: str  # BlockSums attribute: corner, pairs, moments, profile, modes
    estimate: Callable  # (block means, ctx) -> 1-D estimate vector, jackknifed as a whole
    variables: tuple[Variable, ...]
    paired: Paired | None = None
    needs_spectrum: bool = False  # only when a spectrum basis is analysed


OBSERVABLES: dict[str, Observable] = {}


def register(observable: Observable) -> Observable:
    """Add an observable to the registry (names of its variables must be new)."""
    taken = {v.name for o in OBSERVABLES.values() for v in o.variables}
    clash = taken & {v.name for v in observable.variables}
    if observable.name in OBSERVABLES or clash:
        raise ValueError(f"observable {observable.name!r} or its variables {sorted(clash)} already registered")
    OBSERVABLES[observable.name] = observable
    return observable


def active(ctx: Context) -> list[Observable]:
    """The observables this analysis computes (spectrum ones only with a basis)."""
    return [o for o in OBSERVABLES.values() if ctx.k is not None or not o.needs_spectrum]


# ---- estimators ------------------------------------------------------------------------ #

def kappa4(mean: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """kappa4 per size from the mean corner primitives (10 per size)."""
    return kappa4_from_means(expand_corner_means(mean.reshape(sizes.size, 10)))


def kappa4_fits(mean: np.ndarray, ctx: Context) -> np.ndarray:
    """kappa4 per size, then its plain log-log slope and its exponent with the torus corrections."""
    k4 = kappa4(mean, ctx.sizes)
    L = ctx.L
    slope = power_law_exponent(ctx.sizes, k4, ctx.kappa4_window)[0]
    exponent = power_law_exponent(ctx.sizes, k4, ctx.kappa4_window,
                                  corrections=(lambda l: l / L, lambda l: (l / L) ** 2))[0]
    return np.concatenate([k4, [slope, exponent]])


def radial_variance(mean: np.ndarray, k_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, radial spectrum, modes per shell) from the mean per-mode (X, X^2) primitives (ddof = 0 variance)."""
    L2 = k_grid.size
    X, X2 = mean[:L2], mean[L2:]
    return spectrum.radial_spectrum((X2 - X * X).reshape(k_grid.shape), k=k_grid)


def spectrum_fits(mean: np.ndarray, ctx: Context) -> np.ndarray:
    """Radial spectrum (ddof = 0 per-mode variance), then the SKILD fit (C, alpha, k0sq)."""
    k, S_k, counts = radial_variance(mean, ctx.k)
    try:
        fit = spectrum.fit_power_law(k, S_k, k_range=ctx.k_window, counts=counts)
        params = [fit.C, fit.alpha, fit.k0sq]
    except (ValueError, RuntimeError):
        params = [np.nan] * 3
    return np.concatenate([S_k, params])


def bond_energy(profile_mean: np.ndarray, J: float) -> np.ndarray:
    """Energy per spin carried by the bonds of each seam-distance class: -2 J <s s'> (averages to <e>)."""
    return -2.0 * J * np.asarray(profile_mean)


def _whole(values, ctx):
    return values


def _at(i):
    return lambda values, ctx: values[i]


# ---- the registry ---------------------------------------------------------------------- #

register(Observable(
    "kappa4", "corner", kappa4_fits,
    (Variable("kappa4", ("patch_size",), {"long_name": "joint fourth cumulant of the corner spins of an l x l "
                                                        "square"}, lambda v, ctx: v[:-2]),
     Variable("kappa4_slope", (), {"long_name": "slope p of a plain power law |kappa4| ~ l^p over kappa4_window"},
              _at(-2)),
     Variable("kappa4_exponent", (), {"long_name": "p in |kappa4| ~ l^p (1 + c1 l/L + c2 (l/L)^2) over "
                                                   "kappa4_window (expect -1/2)"}, _at(-1))),
    Paired("kappa4_paired", "patch_size", "kappa4 model - truth", lambda m, ctx: kappa4(m, ctx.sizes))))

register(Observable(
    "G", "pairs", lambda m, ctx: G_from_means(m[0], m[1:]),
    (Variable("G", ("r",), {"long_name": "connected two-point function along the axes"}, _whole),),
    Paired("G_paired", "r", "G(r) model - truth", lambda m, ctx: G_from_means(m[0], m[1:]))))

register(Observable(
    "moments", "moments", lambda m, ctx: moment_estimates(m, ctx.beta, ctx.L * ctx.L),
    tuple(Variable(name, (), MOMENT_ATTRS[name], _at(i)) for i, name in enumerate(MOMENT_NAMES)),
    Paired("moments_paired", "moment", "moment model - truth",
           lambda m, ctx: moment_estimates(m, ctx.beta, ctx.L * ctx.L))))

register(Observable(
    "bond_energy", "profile", lambda m, ctx: bond_energy(m, ctx.J),
    (Variable("bond_energy", ("seam_distance",),
              {"long_name": "energy per spin -2 J <s s'> of the bonds at distance seam_distance from the array seam "
                            "(rows/columns L-1 | 0), rows and columns averaged", "units": "J"}, _whole),),
    Paired("bond_energy_paired", "seam_distance", "bond energy by seam distance, model - truth",
           lambda m, ctx: bond_energy(m, ctx.J))))

register(Observable(
    "spectrum", "modes", spectrum_fits,
    (Variable("spectrum", ("k",), {"long_name": "radial average of the per-mode variance in the orthonormal "
                                                "spectrum_basis"}, lambda v, ctx: v[:-3]),
     Variable("spectrum_C", (), {"long_name": "C of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"}, _at(-3)),
     Variable("spectrum_alpha", (), {"long_name": "alpha of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"},
              _at(-2)),
     Variable("spectrum_k0sq", (), {"long_name": "k0^2 of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"},
              _at(-1))),
    Paired("spectrum_ratio_paired", "k", "radial spectrum model / truth",
           lambda m, ctx: radial_variance(m, ctx.k)[1], combine=np.divide),
    needs_spectrum=True))
