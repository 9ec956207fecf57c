"""Correlator analysis of configuration stores: kappa4(l), G(r), moments and the power spectrum.

Each source is read once, chunk by chunk along `sample` (NumPy, Zarr-backed or dask-backed
xarray), and reduced to per-block sums of primitive quantities; every estimate and its
blocked-jackknife error is a function of the block means (analysis.stats.jackknife).
Samples are added to their blocks one by one in sample order, so results do not depend on
chunking or thread count.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from numba import njit
from tqdm.auto import tqdm

from analysis import spectrum
from analysis.correlation import G_from_means, pair_means
from analysis.cumulants import check_sizes, corner_means, expand_corner_means, kappa4_from_means
from analysis.moments import MOMENT_ATTRS, MOMENT_NAMES, energy_magnetization, moment_estimates, moment_primitives
from analysis.profile import seam_profile
from analysis.scaling import power_law_exponent
from analysis.stats import jackknife, n_blocks_for, tau_int
from skild_phys import __version__, outputs
from skild_phys.errors import InputError

MAX_BLOCKS = 50
READ_BYTES = 16 * 2**20  # raw bytes of configurations per read
TRANSFORM_BYTES = 8 * 2**20  # float64 bytes per spectrum-transform batch
PROJECTIONS = ("sign", "none")
SPECTRUM_BASES = ("dct", "fourier")


class BlockingWarning(RuntimeWarning):
    """Jackknife blocks shorter than 2 tau_int of the analysed series: error bars may be too small."""


@dataclass
class Source:
    """One input: configurations (sample, y, x) with label and provenance."""

    label: str
    configs: xr.DataArray
    attrs: dict
    path: str
    project: str
    meta: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        """Lattice side."""
        return int(self.configs.shape[-1])

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.configs.shape[0])


def open_source(obj, label: str | None = None, project: str = "sign") -> Source:
    """A store path, xarray Dataset or DataArray (sample, y, x) as a validated Source.

    project="sign" maps values to +-1 (x >= 0 -> +1) and reads `spins` when present;
    project="none" keeps the values and reads a continuous `field` when present.
    """
    from ising.store import open_store

    if project not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {project!r}")
    if isinstance(obj, xr.DataArray):
        name = str(obj.name) if obj.name is not None else "spins"
        ds, path = obj.to_dataset(name=name), "<memory>"
    elif isinstance(obj, xr.Dataset):
        ds, path = obj, str(obj.encoding.get("source", "<memory>"))
    else:
        path = str(obj)
        ds = open_store(path)
    order = ("spins", "field") if project == "sign" else ("field", "spins")
    variable = next((v for v in order if v in ds.data_vars), None)
    if variable is None:
        raise InputError(f"{path} holds no lattice configurations (no 'spins' or 'field' variable)")
    configs = ds[variable]
    if configs.ndim != 3 or configs.shape[1] != configs.shape[2] or configs.shape[1] < 2:
        raise InputError(f"{path}: '{variable}' must have shape (sample, L, L) with L >= 2, got {configs.shape}")
    if not (np.issubdtype(configs.dtype, np.integer) or np.issubdtype(configs.dtype, np.floating)):
        raise InputError(f"{path}: '{variable}' has non-numeric type {configs.dtype}")
    if configs.shape[0] == 0:
        raise InputError(f"{path} is empty (no samples)")
    if ds.attrs.get("complete") is False:
        raise InputError(f"{path} is incomplete; finish it (run the same command again) before analysing it")
    if label is None:
        label = Path(path).stem if path != "<memory>" else variable
    return Source(label=label, configs=configs, attrs=dict(ds.attrs), path=path, project=project,
                  meta={"variable": variable, "dtype": str(configs.dtype)})


def default_sizes(L: int) -> list[int]:
    """Patch sizes 1, 2, 4, ... below L/2."""
    return [2**p for p in range(int(math.log2(L)) + 1) if 2**p < L / 2]


def default_kappa4_window(L: int) -> tuple[float, float]:
    """Patch sizes for the kappa4 exponent fits, 2 <= l <= L/4: l = 1 carries lattice corrections,
    and beyond L/4 the finite-size function is no longer quadratic in l/L."""
    return 2.0, L / 4


def default_k_window(L: int) -> tuple[float, float]:
    """Spectrum fit range in |k|: lattice wavenumber q = k/L in [pi/16, 5 pi/32] (k/pi in [8, 20] at L = 128).

    Below it the finite-size suppression of S exceeds ~10%, above it the analytic lattice
    background (S = A q^(-7/4) + B) exceeds ~2% (tests/test_spectrum.py uses the same window).
    """
    return np.pi * L / 16, np.pi * 5 * L / 32


def block_edges(n: int, chains: int, tau_samples: float, max_blocks: int = MAX_BLOCKS) -> np.ndarray:
    """Edges of contiguous jackknife blocks of whole rounds, each at least 2 tau_int rounds long."""
    chains = max(int(chains), 1)
    rounds = -(-n // chains)
    n_blocks = min(n_blocks_for(rounds, int(math.ceil(2 * tau_samples)), max_blocks), rounds)
    if n_blocks < 2:
        raise InputError(f"need at least {2 * chains} samples ({chains} chains) for jackknife error bars, got {n}")
    return np.minimum(np.linspace(0, rounds, n_blocks + 1).astype(np.int64) * chains, n)


@njit(cache=True)
def _add_rows(acc, block, rows):
    """acc[block[s]] += rows[s] for s in order (fixed summation order for any chunking)."""
    for s in range(rows.shape[0]):
        b = block[s]
        for k in range(rows.shape[1]):
            acc[b, k] += rows[s, k]


def spectrum_basis(name: str, L: int):
    """(transform of a batch (n, L, L) to mode coefficients, |k| per mode) of the SKILD basis `name`.

    "dct": orthonormal DCT-II, k = pi sqrt(u^2 + v^2) (the SKILD default).  "fourier": the
    real periodic Fourier basis of skild_phys.basis, k = 2 pi sqrt(m^2 + n^2); on a torus its
    mode variances are the structure factor.
    """
    if name == "dct":
        return spectrum.dct2, spectrum.wavenumber_grid(L, L)
    if name == "fourier":
        from skild_phys.basis import fourier_frequency, fourier_matrix

        A = fourier_matrix(L)
        m = fourier_frequency(L).astype(np.float64)

        def transform(x):
            # A x A^T as two flat GEMMs on transposed rows; numpy's broadcast A @ x is far slower
            n = x.shape[0]
            u = (x.transpose(0, 2, 1).reshape(-1, L) @ A.T).reshape(n, L, L)  # (A x)^T
            return (u.transpose(0, 2, 1).reshape(-1, L) @ A.T).reshape(n, L, L)

        return transform, 2 * np.pi * np.sqrt(m[:, None] ** 2 + m[None, :] ** 2)
    raise InputError(f"spectrum basis must be one of {', '.join(SPECTRUM_BASES)}, got {name!r}")


class BlockSums:
    """Per-block sums of every primitive of one source."""

    def __init__(self, edges: np.ndarray, L: int, sizes: np.ndarray, J: float = 1.0, basis: str | None = "dct"):
        B = len(edges) - 1
        self.edges, self.counts = edges, np.diff(edges)
        self.sizes, self.L, self.J = sizes, L, J
        self.corner = np.zeros((B, sizes.size * 10))
        self.pairs = np.zeros((B, 1 + L // 2 + 1))  # site mean, then pair means for r = 0..L//2
        self.moments = np.zeros((B, 5))
        self.profile = np.zeros((B, L // 2 + 1))  # neighbour products by distance to the array seam
        self.basis = basis
        self.modes = None
        if basis is not None:
            self.transform, self.k = spectrum_basis(basis, L)
            self.modes = np.zeros((B, 2 * L * L))  # coefficients X and X^2 per mode
        self.e, self.m = [], []

    def add(self, start: int, x: np.ndarray) -> None:
        """Add samples start, start+1, ... (x: (n, L, L), already projected)."""
        n = x.shape[0]
        block = np.searchsorted(self.edges, np.arange(start, start + n), side="right") - 1
        _add_rows(self.corner, block, corner_means(x, self.sizes).reshape(n, -1))
        site, pairs = pair_means(x)
        _add_rows(self.pairs, block, np.concatenate([site[:, None], pairs], axis=1))
        e, m = energy_magnetization(site, pairs, self.J)
        _add_rows(self.moments, block, moment_primitives(e, m))
        _add_rows(self.profile, block, seam_profile(x))
        self.e.append(e)
        self.m.append(m)
        if self.modes is not None:
            step = max(1, TRANSFORM_BYTES // (8 * self.L * self.L))
            for i in range(0, n, step):
                X = self.transform(x[i:i + step].astype(np.float64)).reshape(-1, self.L * self.L)
                _add_rows(self.modes, block[i:i + step], np.concatenate([X, X * X], axis=1))


def _project(x: np.ndarray, project: str, where: str) -> np.ndarray:
    """Apply the projection; integer data must already be +-1 spins."""
    if np.issubdtype(x.dtype, np.integer):
        if project == "sign" and np.any(np.abs(x) != 1):
            raise InputError(f"{where} holds integer values other than +-1; it is not a spin store "
                             f"(use --project none for other integer data)")
        return x
    if not np.all(np.isfinite(x)):
        raise InputError(f"{where} contains NaN or infinite values")
    return np.where(x >= 0, 1, -1).astype(np.int8) if project == "sign" else x


def _read_step(configs: xr.DataArray) -> int:
    """Samples per read: whole storage (or dask) chunks, about READ_BYTES of raw data."""
    if configs.chunks:
        chunk = max(configs.chunks[0])
    else:
        chunk = configs.encoding.get("preferred_chunks", {}).get(configs.dims[0]) or \
            (configs.encoding.get("chunks") or [None])[0]
    per_sample = configs.dtype.itemsize * configs.shape[1] * configs.shape[2]
    step = max(1, READ_BYTES // per_sample)
    if chunk:
        step = max(int(chunk), step // int(chunk) * int(chunk))
    return step


def reduce_source(src: Source, sizes: np.ndarray, edges: np.ndarray, basis: str | None = "dct", bar=None) -> BlockSums:
    """Stream one source through BlockSums (basis None: no spectrum)."""
    acc = BlockSums(edges, src.L, sizes, J=float(src.attrs.get("J", 1.0)), basis=basis)
    step = _read_step(src.configs)
    for start in range(0, src.n, step):
        x = np.asarray(src.configs[start:start + step].values)
        acc.add(start, _project(x, src.project, src.path))
        if bar is not None:
            bar.update(x.shape[0])
    return acc


def _kappa4(mean: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """kappa4 per size from the mean corner primitives (10 per size)."""
    return kappa4_from_means(expand_corner_means(mean.reshape(sizes.size, 10)))


def _kappa4_estimates(mean: np.ndarray, sizes: np.ndarray, L: int, window) -> np.ndarray:
    """kappa4 per size, then its plain log-log slope and its exponent with the torus corrections."""
    k4 = _kappa4(mean, sizes)
    slope = power_law_exponent(sizes, k4, window)[0]
    exponent = power_law_exponent(sizes, k4, window, corrections=(lambda l: l / L, lambda l: (l / L) ** 2))[0]
    return np.concatenate([k4, [slope, exponent]])


def radial_variance(mean: np.ndarray, k_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, radial spectrum, modes per shell) from the mean per-mode (X, X^2) primitives (ddof = 0 variance)."""
    L2 = k_grid.size
    X, X2 = mean[:L2], mean[L2:]
    return spectrum.radial_spectrum((X2 - X * X).reshape(k_grid.shape), k=k_grid)


def _spectrum_estimates(mean: np.ndarray, k_grid: np.ndarray, window) -> np.ndarray:
    """Radial spectrum (ddof = 0 per-mode variance), then the SKILD fit (C, alpha, k0sq)."""
    k, S_k, counts = radial_variance(mean, k_grid)
    try:
        fit = spectrum.fit_power_law(k, S_k, k_range=window, counts=counts)
        params = [fit.C, fit.alpha, fit.k0sq]
    except (ValueError, RuntimeError):
        params = [np.nan] * 3
    return np.concatenate([S_k, params])


def source_estimates(acc: BlockSums, beta: float, kappa4_window, k_window) -> dict:
    """Every estimate of one source as name -> (value, jackknife error)."""
    counts, sizes, L = acc.counts, acc.sizes, acc.L
    out = {}
    values, errors = jackknife(acc.corner, counts, lambda m: _kappa4_estimates(m, sizes, L, kappa4_window))
    out["kappa4"] = (values[:-2], errors[:-2])
    out["kappa4_slope"] = (values[-2], errors[-2])
    out["kappa4_exponent"] = (values[-1], errors[-1])
    out["G"] = jackknife(acc.pairs, counts, lambda m: G_from_means(m[0], m[1:]))
    values, errors = jackknife(acc.moments, counts, lambda m: moment_estimates(m, beta, L * L))
    out.update({name: (values[i], errors[i]) for i, name in enumerate(MOMENT_NAMES)})
    out["bond_energy"] = jackknife(acc.profile, counts, lambda m: bond_energy(m, acc.J))
    if acc.modes is not None:
        values, errors = jackknife(acc.modes, counts, lambda m: _spectrum_estimates(m, acc.k, k_window))
        out["spectrum"] = (values[:-3], errors[:-3])
        for i, name in enumerate(("spectrum_C", "spectrum_alpha", "spectrum_k0sq")):
            out[name] = (values[-3 + i], errors[-3 + i])
    return out


def bond_energy(profile_mean: np.ndarray, J: float) -> np.ndarray:
    """Energy per spin carried by the bonds of each seam-distance class: -2 J <s s'> (averages to <e>)."""
    return -2.0 * J * np.asarray(profile_mean)


def measured_tau(acc: BlockSums, chains: int) -> float:
    """tau_int (in rounds) of the per-sample e and |m| series, each chain separately, the larger."""
    e, m = np.concatenate(acc.e), np.abs(np.concatenate(acc.m))
    chains = max(int(chains), 1)
    rounds = e.size // chains
    if rounds < 4:
        return 0.5
    shape = (rounds, chains)
    return max(tau_int(e[: rounds * chains].reshape(shape).T)[0], tau_int(m[: rounds * chains].reshape(shape).T)[0])


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

    from analysis.paired import add_paired, paired_estimates, paired_indices

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


def _source_beta(src: Source) -> float | None:
    if "beta" in src.attrs:
        return float(src.attrs["beta"])
    if "T" in src.attrs:
        return 1.0 / float(src.attrs["T"])
    return None


_ATTRS = {
    "kappa4": {"long_name": "joint fourth cumulant of the corner spins of an l x l square"},
    "kappa4_slope": {"long_name": "slope p of a plain power law |kappa4| ~ l^p over kappa4_window"},
    "kappa4_exponent": {"long_name": "p in |kappa4| ~ l^p (1 + c1 l/L + c2 (l/L)^2) over kappa4_window (expect -1/2)"},
    "G": {"long_name": "connected two-point function along the axes"},
    "bond_energy": {"long_name": "energy per spin -2 J <s s'> of the bonds at distance seam_distance from the "
                                 "array seam (rows/columns L-1 | 0), rows and columns averaged", "units": "J"},
    "spectrum": {"long_name": "radial average of the per-mode variance in the orthonormal spectrum_basis"},
    "spectrum_C": {"long_name": "C of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"},
    "spectrum_alpha": {"long_name": "alpha of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"},
    "spectrum_k0sq": {"long_name": "k0^2 of the fit S(k) = C (k^2 + k0^2)^-alpha over k_window"},
    **MOMENT_ATTRS,
}


def _assemble(sources, results, sizes, L, k, config) -> xr.Dataset:
    """Stack per-source estimates into the output Dataset."""
    coords = {"source": np.array([s.label for s in sources], dtype=object), "patch_size": sizes,
              "r": np.arange(L // 2 + 1), "seam_distance": np.arange(L // 2 + 1)}
    dims = {"kappa4": ("source", "patch_size"), "kappa4_slope": ("source",), "kappa4_exponent": ("source",),
            "G": ("source", "r"), "bond_energy": ("source", "seam_distance")}
    dims.update({name: ("source",) for name in MOMENT_NAMES})
    if k is not None:
        coords["k"] = k
        dims["spectrum"] = ("source", "k")
        dims.update({name: ("source",) for name in ("spectrum_C", "spectrum_alpha", "spectrum_k0sq")})
    data = {}
    for name, d in dims.items():
        data[name] = (d, np.stack([np.asarray(res[name][0]) for res in results]), _ATTRS[name])
        data[name + "_err"] = (d, np.stack([np.asarray(res[name][1]) for res in results]),
                               {"long_name": f"jackknife standard error of {name}"})
    per_source = {
        "n_samples": ([s.n for s in sources], {"long_name": "configurations analysed"}),
        "n_blocks": ([s.meta["n_blocks"] for s in sources], {"long_name": "jackknife blocks, contiguous in Monte Carlo time"}),
        "block_min": ([s.meta["block_min"] for s in sources], {"long_name": "samples in the shortest block"}),
        "tau_int_samples": ([s.meta["tau_int_samples"] for s in sources],
                            {"long_name": "tau_int (rounds of saved samples) used to size the blocks"}),
        "tau_int_measured": ([s.meta["tau_int_measured"] for s in sources],
                             {"long_name": "tau_int (rounds) of the analysed e and |m| series"}),
    }
    for name, (values, attrs) in per_source.items():
        data[name] = (("source",), np.asarray(values), attrs)
    data["path"] = (("source",), np.array([s.path for s in sources], dtype=object), {"long_name": "input store"})
    ds = xr.Dataset(data, coords=coords)
    ds.patch_size.attrs.update(long_name="patch side l", units="lattice spacings")
    ds.r.attrs.update(long_name="distance along an axis", units="lattice spacings")
    ds.seam_distance.attrs.update(long_name="distance of a bond from the array seam (0: the bond L-1 | 0, "
                                            "L/2: the middle)", units="lattice spacings")
    if k is not None:
        ds.k.attrs.update(long_name="|k| of the modes in a unit shell of |k|/pi, bin mean", units="1/(lattice side)")
    provenance = [{"label": s.label, "path": s.path, **{key: s.meta[key] for key in
                   ("variable", "dtype", "chains", "beta", "tau_origin")}, "store_attrs": _jsonable(s.attrs)}
                  for s in sources]
    ds.attrs.update({
        "title": "connected four-point cumulants of corner spins, with companions (skild-phys correlators)",
        "L": int(L),
        "project": config["project"],
        "spectrum_basis": str(config["spectrum_basis"]),
        "reference_source": str(sources[0].label),
        "kappa4_window": list(config["kappa4_window"]),
        "k_window": list(config["k_window"]),
        "kappa4_definition": "E[abcd] - sum_4 E[a]E[bcd] - sum_3 E[ab]E[cd] + 2 sum_6 E[a]E[b]E[cd] "
                             "- 6 E[a]E[b]E[c]E[d]; a=s(i,j), b=s(i+l,j), c=s(i,j+l), d=s(i+l,j+l) mod L, "
                             "means over all L^2 anchors and all samples",
        "error_method": "delete-one-block jackknife; blocks contiguous in Monte Carlo time, >= 2 tau_int",
        "config": json.dumps(config),
        "sources": json.dumps(provenance),
        "skild_phys_version": __version__,
        outputs.KIND_ATTR: outputs.CORRELATORS,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return ds


def _jsonable(attrs: dict) -> dict:
    return json.loads(json.dumps(attrs, default=str))


def deviation_sigma(ds: xr.Dataset, name: str = "kappa4") -> xr.DataArray:
    """(X_source - X_reference) / sqrt(err_source^2 + err_reference^2), reference = first source."""
    ref = ds[name].isel(source=0)
    ref_err = ds[name + "_err"].isel(source=0)
    return (ds[name] - ref) / np.sqrt(ds[name + "_err"] ** 2 + ref_err**2)


def paired_sigma(ds: xr.Dataset, name: str = "kappa4") -> xr.DataArray | None:
    """Paired deviation (model - truth on the same configurations) / its error; None without pairs.
    name: "kappa4" (source, patch_size) or "moments" (source, moment); NaN for unpaired sources."""
    if f"{name}_paired" not in ds:
        return None
    return ds[f"{name}_paired"] / ds[f"{name}_paired_err"]


def format_table(ds: xr.Dataset) -> str:
    """Terminal table: kappa4 per l and source with errors and deviation from the first source; fits; moments."""
    labels = [str(s) for s in ds.source.values]
    dev = deviation_sigma(ds)
    width = 38

    def row(head, cells):
        return f"{head:<20}" + "".join(f"{cell:<{width}}" for cell in cells)

    def value(name, s, fmt, scale=1.0):
        if not np.isfinite(ds[name].values[s]):
            return "n/a (too few points in the fit window)"
        return f"{scale * ds[name].values[s]:{fmt}} +- {abs(scale) * ds[name + '_err'].values[s]:.2g}"

    lines = [row("kappa4(l)", [lab if s == 0 else f"{lab} (dev. from {labels[0]})" for s, lab in enumerate(labels)])]
    for i, l in enumerate(ds.patch_size.values):
        cells = []
        for s in range(len(labels)):
            cell = f"{ds.kappa4.values[s, i]:+.4e} +- {ds.kappa4_err.values[s, i]:.1e}"
            cells.append(cell if s == 0 else f"{cell} ({dev.values[s, i]:+.1f} sig)")
        lines.append(row(f"  l = {int(l)}", cells))
    lo, hi = ds.attrs["kappa4_window"]
    lines += ["", f"kappa4 ~ l^p on {lo:g} <= l <= {hi:g} (expect p = -4 Delta_sigma = -1/2):"]
    lines += [f"  {lab}: p = {value('kappa4_exponent', s, '+.4f')} with torus terms (1 + c1 l/L + c2 (l/L)^2); "
              f"plain power law {value('kappa4_slope', s, '+.3f')}" for s, lab in enumerate(labels)]
    if "spectrum" in ds:
        lo, hi = np.asarray(ds.attrs["k_window"]) / np.pi
        lines += [f"spectrum on {lo:g} <= |k|/pi <= {hi:g} (critical Ising: 2 - eta = 7/4):"]
        lines += [f"  {lab}: 2 alpha = {value('spectrum_alpha', s, '.4f', 2.0)} from C (k^2 + k0^2)^-alpha, "
                  f"{ds.attrs['spectrum_basis']} basis" for s, lab in enumerate(labels)]
    z4, zm = paired_sigma(ds), paired_sigma(ds, "moments")
    if z4 is not None:
        lines += ["", "paired: model - truth on the same truth configurations (source_index), "
                      "in joint-jackknife sigma:"]
        for s, lab in enumerate(labels):
            if s == 0 or not np.isfinite(z4.values[s]).all():
                continue
            lines.append(f"  {lab}: kappa4 " + ", ".join(f"l={int(l)} {v:+.1f}"
                                                         for l, v in zip(ds.patch_size.values, z4.values[s])))
            lines.append(f"  {' ' * len(lab)}  " + ", ".join(f"{name} {v:+.1f}"
                                                            for name, v in zip(MOMENT_NAMES, zm.values[s])))
    lines += ["", row("moments", labels)]
    lines += [row(f"  {name}", [value(name, s, "+.5f") for s in range(len(labels))]) for name in MOMENT_NAMES]
    return "\n".join(lines)


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
