"""Correlator estimators of configuration sets: kappa4(l), G(r), moments and the power spectrum.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from numba import njit

from analysis import registry, spectrum
from analysis.correlation import pair_means
from analysis.cumulants import corner_means
from analysis.moments import MOMENT_NAMES, energy_magnetization, moment_primitives
from analysis.profile import seam_profile
from analysis.stats import jackknife, n_blocks_for, tau_int
from skild_base import __version__, outputs
from skild_base.errors import InputError

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


def as_source(ds: xr.Dataset, path: str, label: str | None = None, project: str = "sign") -> Source:
    """A Dataset holding `spins` or `field` (sample, y, x) as a validated Source.

    project="sign" maps values to +-1 (x >= 0 -> +1) and reads `spins` when present;
    project="none" keeps the values and reads a continuous `field` when present.
    """
    if project not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {project!r}")
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
    real periodic Fourier basis (analysis.spectrum.fourier_matrix), k = 2 pi sqrt(m^2 + n^2); on a torus its
    mode variances are the structure factor.
    """
    if name == "dct":
        return spectrum.dct2, spectrum.wavenumber_grid(L, L)
    if name == "fourier":
        A = spectrum.fourier_matrix(L)
        m = spectrum.fourier_frequency(L).astype(np.float64)

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


def source_estimates(acc: BlockSums, beta: float, kappa4_window, k_window) -> dict:
    """Every registered estimate of one source as variable name -> (value, jackknife error)."""
    ctx = context(acc, beta, kappa4_window, k_window)
    out = {}
    for obs in registry.active(ctx):
        values, errors = jackknife(getattr(acc, obs.primitive), acc.counts, lambda m: obs.estimate(m, ctx))
        out.update({v.name: (v.part(values, ctx), v.part(errors, ctx)) for v in obs.variables})
    return out


def context(acc: BlockSums, beta: float, kappa4_window=None, k_window=None) -> registry.Context:
    """The estimators' context of a source's sums."""
    k = acc.k if acc.modes is not None else None
    return registry.Context(sizes=acc.sizes, L=acc.L, J=acc.J, beta=beta, k=k, kappa4_window=kappa4_window,
                            k_window=k_window)


def measured_tau(acc: BlockSums, chains: int) -> float:
    """tau_int (in rounds) of the per-sample e and |m| series, each chain separately, the larger."""
    e, m = np.concatenate(acc.e), np.abs(np.concatenate(acc.m))
    chains = max(int(chains), 1)
    rounds = e.size // chains
    if rounds < 4:
        return 0.5
    shape = (rounds, chains)
    return max(tau_int(e[: rounds * chains].reshape(shape).T)[0], tau_int(m[: rounds * chains].reshape(shape).T)[0])


def _source_beta(src: Source) -> float | None:
    if "beta" in src.attrs:
        return float(src.attrs["beta"])
    if "T" in src.attrs:
        return 1.0 / float(src.attrs["T"])
    return None


def _assemble(sources, results, sizes, L, k, config) -> xr.Dataset:
    """Stack per-source estimates into the output Dataset."""
    coords = {"source": np.array([s.label for s in sources], dtype=object), "patch_size": sizes,
              "r": np.arange(L // 2 + 1), "seam_distance": np.arange(L // 2 + 1)}
    if k is not None:
        coords["k"] = k
    variables = [v for obs in registry.OBSERVABLES.values() for v in obs.variables if v.name in results[0]]
    data = {}
    for v in variables:
        d = ("source",) + v.dims
        data[v.name] = (d, np.stack([np.asarray(res[v.name][0]) for res in results]), v.attrs)
        data[v.name + "_err"] = (d, np.stack([np.asarray(res[v.name][1]) for res in results]),
                                 {"long_name": f"jackknife standard error of {v.name}"})
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
    scalars = [v.name for obs in registry.OBSERVABLES.values() if obs.name not in ("kappa4", "spectrum")
               for v in obs.variables if not v.dims and v.name in ds]
    lines += ["", row("moments", labels)]
    lines += [row(f"  {name}", [value(name, s, "+.5f") for s in range(len(labels))]) for name in scalars]
    return "\n".join(lines)
