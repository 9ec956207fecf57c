"""Paired comparison of a model store with the truth configurations it was made from (SPEC §8).

A super-resolved configuration i comes from truth configuration `source_index[i]`.  Every
observable is estimated on the model set and on that truth subset, and their difference is
jackknifed over joint blocks of pairs, so the error includes the pairs' correlation: far
smaller than the independent-ensemble error, it resolves biases the latter cannot.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from analysis import registry
from analysis.moments import MOMENT_NAMES
from analysis.observables import Source, block_edges, context, reduce_source
from analysis.stats import jackknife


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
    ctx = context(a, beta)
    out = {}
    for obs in registry.active(ctx):
        if obs.paired is None:
            continue
        A, B = getattr(a, obs.primitive), getattr(b, obs.primitive)
        P, pair = A.shape[1], obs.paired
        out[pair.name] = jackknife(np.concatenate([A, B], axis=1), a.counts,
                                   lambda m: pair.combine(pair.estimate(m[P:], ctx), pair.estimate(m[:P], ctx)))
    return out


def add_paired(ds: xr.Dataset, paired: dict) -> xr.Dataset:
    """Add the paired variables (and their errors) to a correlators Dataset; NaN for the reference and
    for sources that do not record which truth samples they came from."""
    if not paired:
        return ds
    ds = ds.assign_coords(moment=np.array(MOMENT_NAMES, dtype=object))
    what = "on the truth configurations each model sample was made from (source_index)"
    S = ds.sizes["source"]
    for obs in registry.OBSERVABLES.values():
        pair = obs.paired
        if pair is None or not any(pair.name in est for est in paired.values()):
            continue
        size = len(next(est[pair.name][0] for est in paired.values() if pair.name in est))
        values, errors = np.full((S, size), np.nan), np.full((S, size), np.nan)
        for s, est in paired.items():
            values[s], errors[s] = est[pair.name]
        ds[pair.name] = (("source", pair.dim), values, {"long_name": f"{pair.description} {what}"})
        ds[pair.name + "_err"] = (("source", pair.dim), errors,
                                  {"long_name": f"jackknife error of {pair.name} (joint blocks: correlation included)"})
    return ds
