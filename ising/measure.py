"""Correlators of lattice stores: read each store, reduce it with the estimators of `analysis`,
pair model stores with the truth configurations they record, write the Dataset.

The estimators themselves (kappa4, G, moments, spectrum, blocked jackknife) are pure functions
over arrays in `analysis.observables`; this module is what knows about stores, their
provenance attributes and output files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from analysis import spectrum
from analysis.cumulants import check_sizes
from analysis.observables import (
    PROJECTIONS,
    SPECTRUM_BASES,
    BlockingWarning,
    Source,
    _assemble,
    _source_beta,
    as_source,
    block_edges,
    default_k_window,
    default_kappa4_window,
    default_sizes,
    measured_tau,
    reduce_source,
    source_estimates,
    spectrum_basis,
)
from analysis.paired import add_paired, paired_estimates
from ising.store import open_store, read_attrs
from skild_base import outputs
from skild_base.errors import InputError

MAX_HOPS = 4  # intermediate stores (e.g. a coarsened truth) followed back to the truth


def open_source(obj, label: str | None = None, project: str = "sign") -> Source:
    """A store path, xarray Dataset or DataArray (sample, y, x) as a validated Source (see `as_source`)."""
    if project not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {project!r}")
    if isinstance(obj, xr.DataArray):
        name = str(obj.name) if obj.name is not None else "spins"
        return as_source(obj.to_dataset(name=name), "<memory>", label, project)
    if isinstance(obj, xr.Dataset):
        return as_source(obj, str(obj.encoding.get("source", "<memory>")), label, project)
    return as_source(open_store(str(obj)), str(obj), label, project)


def correlators(inputs, sizes=None, labels=None, project: str = "sign", kappa4_window=None, k_window=None,
                basis: str | None = "dct", progress: bool = True) -> xr.Dataset:
    """kappa4(l), G(r), moments and power spectrum of each input (store path, Dataset or DataArray).

    The first input is the reference (truth).  `basis` ("dct", "fourier", or None to skip)
    selects the spectrum basis.  Returns a Dataset over dims (source, patch_size), (source, r),
    (source, k) and (source,), every estimate `X` with its jackknife error `X_err`.
    """
    if basis is not None and basis not in SPECTRUM_BASES:
        raise InputError(f"spectrum basis must be one of {', '.join(SPECTRUM_BASES)}, got {basis!r}")
    inputs = list(inputs)
    if not inputs:
        raise InputError("give at least one store to analyse")
    if labels is not None and len(labels) != len(inputs):
        raise InputError(f"got {len(labels)} labels for {len(inputs)} stores; give one --label per store")
    sources = [open_source(obj, None if labels is None else labels[i], project) for i, obj in enumerate(inputs)]
    if labels is None and len({s.label for s in sources}) < len(sources):
        for s in sources:
            s.label = s.path
    if len({s.label for s in sources}) < len(sources):
        raise InputError(f"source labels must be distinct, got {[s.label for s in sources]}")
    Ls = {s.L for s in sources}
    if len(Ls) > 1:
        raise InputError(f"all stores must have the same lattice size, got L = {sorted(Ls)}")
    L = Ls.pop()
    sizes = np.asarray(default_sizes(L) if sizes is None else sizes, dtype=np.int64)
    try:
        sizes = check_sizes(sizes, L)
    except ValueError:
        raise InputError(f"patch sizes must lie between 0 and L - 1 = {L - 1}, got {sizes.tolist()}") from None
    kappa4_window = tuple(map(float, default_kappa4_window(L) if kappa4_window is None else kappa4_window))
    k_window = tuple(map(float, default_k_window(L) if k_window is None else k_window))
    beta_ref = next((b for b in map(_source_beta, sources) if b is not None), np.nan)

    results = []
    bar = tqdm(total=sum(s.n for s in sources), unit="sample", disable=not progress, dynamic_ncols=True)
    with bar:
        for src in sources:
            bar.set_description(src.label)
            chains = int(src.attrs.get("chains", 1))
            recorded = src.attrs.get("tau_int_samples")
            tau = 0.5 if recorded is None else float(recorded)
            try:
                edges = block_edges(src.n, chains, tau)
            except ValueError as err:
                raise InputError(f"{src.path}: {err}") from None
            acc = reduce_source(src, sizes, edges, basis, bar)
            beta = _source_beta(src)
            results.append(source_estimates(acc, beta_ref if beta is None else beta, kappa4_window, k_window))
            tau_measured = measured_tau(acc, chains)
            if recorded is None and np.min(acc.counts) < 2 * tau_measured * chains:
                warnings.warn(f"{src.label}: jackknife blocks of {np.min(acc.counts)} samples are shorter than "
                              f"2 tau_int = {2 * tau_measured:.1f} rounds measured on e and |m|; errors may be low",
                              BlockingWarning, stacklevel=2)
            src.meta.update(chains=chains, beta=beta, n_blocks=len(edges) - 1, block_min=int(np.min(acc.counts)),
                            tau_int_samples=tau, tau_int_measured=tau_measured,
                            tau_origin="store attribute tau_int_samples" if recorded is not None
                            else "not recorded; samples taken as independent")

    paired = {}
    for s, src in enumerate(sources[1:], start=1):
        idx = paired_indices(sources[0], src)
        if idx is not None:
            beta = _source_beta(src)
            paired[s] = paired_estimates(sources[0], src, idx, sizes, beta_ref if beta is None else beta, basis)
    k = None if basis is None else spectrum.radial_spectrum(np.zeros((L, L)), k=spectrum_basis(basis, L)[1])[0]
    config = {"sizes": sizes.tolist(), "project": project, "kappa4_window": kappa4_window, "k_window": k_window,
              "spectrum_basis": basis, "labels": [s.label for s in sources], "paths": [s.path for s in sources]}
    return add_paired(_assemble(sources, results, sizes, L, k, config), paired)


def _source_index(path) -> np.ndarray | None:
    """The `source_index` array of a store, or None if it has none."""
    ds = open_store(path)
    return None if "source_index" not in ds else np.asarray(ds["source_index"].values, dtype=np.int64)


def _same(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def paired_with_reference(truth: Source, ref: Source, src: Source, sizes, n: int | None = None) -> dict:
    """Paired estimates of src − ref, two model stores made from the same truth configurations.

    The reference stands in the truth's place: its configurations, the truth's Monte Carlo blocks
    (`analysis.paired.paired_estimates`), over the first n configurations both hold (default: all
    of the shorter). InputError where the two did not super-resolve the same truth configurations."""
    ref_idx, idx = paired_indices(truth, ref), paired_indices(truth, src)
    common = 0 if ref_idx is None or idx is None else min(len(ref_idx), len(idx))
    n = common if n is None else n
    if common == 0 or n > common or not np.array_equal(idx[:n], ref_idx[:n]):
        raise InputError(f"{src.path} and {ref.path} did not super-resolve the same configurations of {truth.path}")
    base = replace(ref, configs=ref.configs[:n], attrs=truth.attrs)
    return paired_estimates(base, replace(src, configs=src.configs[:n]), np.arange(n), np.asarray(sizes),
                            float(truth.attrs["beta"]))


def paired_indices(truth: Source, src: Source) -> np.ndarray | None:
    """Truth samples a model store was made from, when it records them; otherwise None.

    The store's `source` attribute names the truth store and its `source_index` the samples
    (`superres --data TRUTH`), or names an intermediate store that records its own source
    and source_index (`superres --lowres COARSE` of `coarsen TRUTH`): the indices are then
    composed back to the truth.  They must be valid and increasing.
    """
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


def write_dataset(ds: xr.Dataset, path, overwrite: bool = False, inputs=()) -> Path:
    """Write the result as NetCDF (.nc) or Zarr v3 (.zarr), chosen by extension.

    An existing file is replaced only with overwrite and only if it is a correlators Dataset
    skild-phys wrote (`outputs.check_file`), never one of the `inputs`.
    """
    p = outputs.check_file(path, (".nc", ".zarr"), "output", overwrite, kind=outputs.CORRELATORS, inputs=inputs)
    outputs.replace(p, outputs.CORRELATORS)
    if p.suffix.lower() == ".nc":
        ds.to_netcdf(p, mode="w", engine="netcdf4")
    else:
        ds.to_zarr(p, mode="w", zarr_format=3, consolidated=False)
    return p
