"""Paired comparison of a model store with the truth configurations it was made from (SPEC §8).

A super-resolved configuration i comes from truth configuration `source_index[i]`.  Every
observable is estimated on the model set and on that truth subset, and their difference is
jackknifed over joint blocks of pairs, so the error includes the pairs' correlation: far
smaller than the independent-ensemble error, it resolves biases the latter cannot.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from analysis.correlation import G_from_means
from analysis.moments import MOMENT_NAMES, moment_estimates
from analysis.observables import Source, _kappa4, block_edges, bond_energy, radial_variance, reduce_source
from analysis.stats import jackknife

MAX_HOPS = 4  # intermediate stores (e.g. a coarsened truth) followed back to the truth


def _source_index(path) -> np.ndarray | None:
    """The `source_index` array of a store, or None if it has none."""
    from ising.store import open_store

    ds = open_store(path)
    return None if "source_index" not in ds else np.asarray(ds["source_index"].values, dtype=np.int64)


def _same(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def paired_indices(truth: Source, src: Source) -> np.ndarray | None:
    """Truth samples a model store was made from, when it records them; otherwise None.

    The store's `source` attribute names the truth store and its `source_index` the samples
    (`superres --data TRUTH`), or names an intermediate store that records its own source
    and source_index (`superres --lowres COARSE` of `coarsen TRUTH`): the indices are then
    composed back to the truth.  They must be valid and increasing.
    """
    from ising.store import read_attrs

    if truth.path == "<memory>" or src.path == "<memory>":
        return None
    idx = _source_index(src.path)
    source = src.attrs.get("source")
    if idx is None or idx.size != src.n:
        return None
    for _ in range(MAX_HOPS):
        if not source or _same(source, truth.path):
            break
        attrs, parent = read_attrs(source), None
        if attrs is not None and attrs.get("complete", True):
            parent = _source_index(source)
        if parent is None or idx.min() < 0 or idx.max() >= parent.size:
            return None
        idx, source = parent[idx], attrs.get("source")
    if not source or not _same(source, truth.path):
        return None
    if idx.size < 4 or idx.min() < 0 or idx.max() >= truth.n or np.any(np.diff(idx) <= 0):
        return None
    return idx


def paired_estimates(truth: Source, src: Source, idx: np.ndarray, sizes: np.ndarray, beta: float,
                     basis: str | None = None) -> dict:
    """Model minus truth on the same configurations, with a jackknife over joint blocks.

    Sample i of `src` was made from truth sample idx[i]; blocks of consecutive i (in Monte Carlo
    order of the truth, >= 2 tau_int) hold both.  Returns name -> (value, error): differences
    for kappa4, the moments, G and bond_energy, and with a spectrum `basis` the ratio
    model/truth of the radial spectrum ("spectrum_ratio").
    """
    sub = Source(label=truth.label, configs=truth.configs.isel({truth.configs.dims[0]: idx}), attrs=truth.attrs,
                 path=truth.path, project=truth.project)
    chains = int(truth.attrs.get("chains", 1))
    edges = block_edges(len(idx), chains, float(truth.attrs.get("tau_int_samples", 0.5)))
    a = reduce_source(sub, sizes, edges, basis=basis)
    b = reduce_source(src, sizes, edges, basis=basis)
    N = truth.L * truth.L

    def joint(primitive: str, estimate, combine=np.subtract):
        A, B = getattr(a, primitive), getattr(b, primitive)
        P = A.shape[1]
        return jackknife(np.concatenate([A, B], axis=1), a.counts, lambda m: combine(estimate(m[P:]), estimate(m[:P])))

    out = {"kappa4": joint("corner", lambda m: _kappa4(m, sizes)),
           "moments": joint("moments", lambda m: moment_estimates(m, beta, N)),
           "G": joint("pairs", lambda m: G_from_means(m[0], m[1:])),
           "bond_energy": joint("profile", lambda m: bond_energy(m, a.J))}
    if basis is not None:
        out["spectrum_ratio"] = joint("modes", lambda m: radial_variance(m, a.k)[1], combine=np.divide)
    return out


# name in paired_estimates -> (dataset variable, second dimension, description)
PAIRED_VARIABLES = {
    "kappa4": ("kappa4_paired", "patch_size", "kappa4 model - truth"),
    "moments": ("moments_paired", "moment", "moment model - truth"),
    "G": ("G_paired", "r", "G(r) model - truth"),
    "bond_energy": ("bond_energy_paired", "seam_distance", "bond energy by seam distance, model - truth"),
    "spectrum_ratio": ("spectrum_ratio_paired", "k", "radial spectrum model / truth"),
}


def add_paired(ds: xr.Dataset, paired: dict) -> xr.Dataset:
    """Add the paired variables (and their errors) to a correlators Dataset; NaN for the reference and
    for sources that do not record which truth samples they came from."""
    if not paired:
        return ds
    ds = ds.assign_coords(moment=np.array(MOMENT_NAMES, dtype=object))
    what = "on the truth configurations each model sample was made from (source_index)"
    S = ds.sizes["source"]
    names = set().union(*(est.keys() for est in paired.values()))
    for name, (var, dim, description) in PAIRED_VARIABLES.items():
        if name not in names:
            continue
        values, errors = np.full((S, ds.sizes[dim]), np.nan), np.full((S, ds.sizes[dim]), np.nan)
        for s, est in paired.items():
            values[s], errors[s] = est[name]
        ds[var] = (("source", dim), values, {"long_name": f"{description} {what}"})
        ds[var + "_err"] = (("source", dim), errors, {"long_name": f"jackknife error of {var} "
                                                                   "(joint blocks: correlation included)"})
    return ds
