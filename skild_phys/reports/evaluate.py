"""The fidelity instrument: one checkpoint against a held-out truth store (SPEC §8).

For a checkpoint and a truth store, `evaluate` super-resolves the first N truth
configurations under two protocols — "marginal" (the paper's: the exact forward marginal of
the true configuration at n0) and "lowres" (a real coarse input: the block mean or block
spin of the truth, embedded) — generates configurations from noise where the schedule
allows it, and runs the same protocols with two floors: the exact SKILD reverse chain for
Gaussian data with the checkpoint's S0 ("gaussian": what the spectrum alone explains) and
the checkpoint's architecture untrained ("untrained").  Every output is a configuration
store in the evaluation directory (resumable, paired with the truth by `source_index`);
`correlators` then measures all of them against the truth in one Dataset, which gets the
cost of every source (network evaluations per configuration, wall time) and is printed as
the fidelity table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from analysis.moments import MOMENT_NAMES
from skild_base import outputs
from skild_base.errors import InputError
from skild_phys.methods.skild import TrainedModel, build_network
from skild_phys.process.diffusion import gaussian_denoiser
from skild_phys.sampling.samplers import check_choice, choice_params, network_evaluations

EVAL_FILE = "evaluation.json"
DATASET_FILE = "fidelity.nc"
TABLE_FILE = "fidelity.md"
FIGURE_FILE = "fidelity.png"
PROTOCOLS = ("marginal", "lowres", "generate")
BASELINES = ("gaussian", "untrained")
LOWRES_RULES = ("mean", "majority")
PATCH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation runs: sample counts, reverse steps, protocols, floors."""

    samples: int = 1000  # super-resolution inputs: the first `samples` truth configurations
    gen_samples: int = 500  # configurations generated from noise
    steps: int = 100  # respaced reverse steps K (capped at the start step)
    seed: int = 0
    batch: int = 50
    factor: float | None = None  # default: the checkpoint's training factor
    protocols: tuple[str, ...] = PROTOCOLS
    baselines: tuple[str, ...] = BASELINES
    lowres_rule: str = "mean"
    lowres_start: str = "conditional"
    block_reference: str | None = None  # spin store the "sampled" start counts block means on
    variance: str | None = None  # reverse-step noise; None: methods.default_variance per chain start
    spectrum_basis: str = "fourier"
    keep_field: bool = False  # also store the continuous field before the sign projection
    sampler: str = "ancestral"  # skild_phys.sampling.samplers: ancestral, ddim (with eta) or heun
    eta: float = 0.0
    spacing: str = "uniform"  # step placement: uniform in n, log-lambda or rho
    precision: str = "fp32"  # network arithmetic (skild_phys.networks.precision.accelerate)
    compile: bool = False
    window: str = "global"  # GroupNorm and attention on a larger lattice (skild_phys.methods.skild.load_model)

    def params(self) -> dict:
        """The settings an evaluation records (the sampler's only where not the default)."""
        d = asdict(self)
        for key in ("sampler", "eta", "spacing", "precision", "compile", "window"):
            d.pop(key)
        if self.block_reference is None:
            d.pop("block_reference")
        extra = {"precision": self.precision} if self.precision != "fp32" else {}
        if self.window != "global":
            extra["window"] = self.window
        return {**d, **choice_params(self.sampler, self.eta, self.spacing), **extra}

    def validate(self) -> None:
        """Raise InputError for settings no evaluation can use."""
        check_choice(self.sampler, self.eta, self.spacing)
        if self.samples < 4 or self.gen_samples < 0 or self.steps < 1 or self.batch < 1:
            raise InputError("--samples must be at least 4, --steps and --batch at least 1, --gen-samples >= 0")
        for name, values, allowed in (("protocol", self.protocols, PROTOCOLS), ("baseline", self.baselines, BASELINES)):
            bad = sorted(set(values) - set(allowed))
            if bad:
                raise InputError(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
        if not self.protocols:
            raise InputError("give at least one --protocol")
        if self.lowres_rule not in LOWRES_RULES:
            raise InputError(f"--lowres-rule must be one of {', '.join(LOWRES_RULES)}")
        if (self.block_reference is not None) != (self.lowres_start == "sampled"):
            raise InputError("--lowres-start sampled and --block-reference go together")


@dataclass
class SourceRun:
    """One evaluated source: who made it (model or a floor), under which protocol, where it is stored."""

    who: str
    protocol: str
    store: str
    nfe: int = 0  # network evaluations per configuration
    wall_s: float | None = None  # sampling wall time of the whole store
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.who}/{self.protocol}"


@dataclass
class GaussianFloor(TrainedModel):
    """The exact SKILD chain for Gaussian data of spectrum S0: ε̂ = E[ε | X_n] = √(1−ᾱ_n) X_n / √S0."""

    def eps_hat(self, x, n, cond=None):
        return gaussian_denoiser(self.process)(x, n)


def floor_model(model: TrainedModel, who: str, seed: int) -> TrainedModel:
    """The Gaussian floor or the untrained architecture, sharing the checkpoint's config and process."""
    if who == "gaussian":
        return GaussianFloor(model.config, model.process, None, f"gaussian-S0:{model.digest}", model.device)
    torch.manual_seed(seed)
    net = build_network(model.config).to(model.device).eval()
    return TrainedModel(model.config, model.process, net, f"untrained-seed{seed}:{model.digest}", model.device)


def fidelity_sizes(L: int) -> list[int]:
    """Patch sizes of the fidelity table: 1, 2, 3, 4, 6, 8, 12, ... below L/2."""
    return [l for l in PATCH_SIZES if l < L / 2]


def _prepare_dir(out: Path, params: dict, overwrite: bool, inputs=()) -> dict:
    """The evaluation record of OUT: the existing one with the same parameters (its finished sources are
    kept, with or without --overwrite), or a new one (`outputs.begin`: an evaluation with other settings
    there is replaced only with --overwrite)."""
    record = outputs.read_record(out / EVAL_FILE)
    if record is not None and record.get("params") == params:
        outputs.check_not_input(out, inputs)
        return record
    outputs.begin(out, outputs.EVALUATION, params, record, overwrite, inputs,  # other settings: always "fresh"
                  hint="it has other settings: pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return {"params": params, "sources": {}}


def _write_record(out: Path, record: dict) -> None:
    tmp = out / (EVAL_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / EVAL_FILE)


def evaluate(run, truth, out, settings: EvalSettings = EvalSettings(), device: str = "auto",
             overwrite: bool = False, progress: bool = True, log=print) -> xr.Dataset:
    """Evaluate checkpoint RUN against the truth store; writes OUT/fidelity.nc and fidelity.md, returns the Dataset."""
    from ising import store
    from ising.coarsen import coarsen_store
    from ising.measure import correlators
    from skild_phys.data.adapters import LatticeStore
    from skild_phys.methods import at_data_size, load_trained, resolve_variance, superres_start_for
    from skild_phys.methods.starts import generation_start
    from skild_phys.sampling.driver import chain_steps_for
    from skild_phys.sampling.lattice import run_sampler

    settings.validate()
    out = Path(out)
    model = load_trained(run, device, settings.precision, settings.compile, settings.window)
    if model.config.data_kind == "image":
        raise InputError("evaluate measures lattice models; for image checkpoints use `superres` and `metrics`")
    truth_set = LatticeStore(truth)
    if truth_set.kind != "spins":
        raise InputError(f"{truth} holds no spins; the truth must be a spin store from `simulate`")
    if settings.samples > len(truth_set):
        raise InputError(f"--samples {settings.samples} exceeds the {len(truth_set)} configurations of {truth}")
    chains = int(truth_set.attrs.get("chains", 1))
    if settings.samples < 2 * chains:  # paired errors need two blocks of whole rounds of the truth's chains
        raise InputError(f"--samples {settings.samples} is too few for error bars: {truth} has {chains} chains, "
                         f"so at least {2 * chains} configurations are needed")
    factor = float(settings.factor or model.config.factor)
    model = at_data_size(model, truth_set, factor, lowres=False)  # a larger truth: the model in lattice units
    if settings.block_reference is not None:
        from skild_phys.methods.starts import attach_block_reference

        model = attach_block_reference(model, settings.block_reference, [factor])
    H = model.config.H
    settings = replace(settings, factor=factor)
    params = {"checkpoint": model.digest, "truth": str(truth), "settings": settings.params()}
    record = _prepare_dir(out, json.loads(json.dumps(params)), overwrite, inputs=(run, truth))
    _write_record(out, record)  # claims the directory: an interrupted evaluation resumes
    method = model.config.model

    runs: list[SourceRun] = []
    whos = ["model"] + ([] if method != "skild" else list(settings.baselines))
    coarse = None
    for protocol in settings.protocols:
        if protocol == "generate" and settings.gen_samples == 0:
            continue  # --gen-samples 0: no generation, and no store for it
        if protocol == "generate" and (method != "skild" or model.config.schedule["k_c"] <= 0):
            log(f"skipping generation: a {method} checkpoint with k_c = {model.config.schedule['k_c']:g} "
                "cannot generate from noise")
            continue
        if protocol == "lowres" and coarse is None:
            coarse = out / f"coarse_x{factor:g}_{settings.lowres_rule}.zarr"
            if not (coarse / "zarr.json").is_file():
                coarsen_store(truth, coarse, int(round(factor)), settings.lowres_rule, overwrite=True, progress=False)
        for who in whos:
            runs.append(SourceRun(who, protocol, str(out / f"{who}_{protocol}.zarr")))

    for src in runs:
        sampler = model if src.who == "model" else floor_model(model, src.who, settings.seed)
        if src.protocol == "generate":
            start, n, attrs = generation_start(sampler), settings.gen_samples, {"mode": "generate", "source": None}
        else:
            lowres = src.protocol == "lowres"
            data = LatticeStore(coarse) if lowres else truth_set
            start = superres_start_for(sampler, data, factor, lowres=lowres, lowres_start=settings.lowres_start)
            n = settings.samples
            attrs = {"mode": "superres", "source": str(coarse if lowres else truth), "factor": factor,
                     "input": f"lowres-{settings.lowres_start}" if lowres else "forward-marginal"}
        steps = chain_steps_for(start, settings.steps, settings.spacing, sampler.process)
        src.nfe = 0 if src.who == "gaussian" else network_evaluations(settings.sampler, len(steps) - 1)
        attrs.update(checkpoint=str(run), evaluation=src.label)
        done = record["sources"].get(src.label)
        log(f"{src.label}: {n} configurations, {len(steps) - 1} reverse steps from n = {steps[0]}")
        t0 = time.perf_counter()
        existing = store.read_attrs(src.store)
        run_sampler(src.store, sampler, start, n, attrs, settings.steps, seed=settings.seed, batch=settings.batch,
                    variance=resolve_variance(model, settings.variance, generate=src.protocol == "generate"),
                    keep_field=settings.keep_field, progress=progress,
                    log=log, sampler=settings.sampler, eta=settings.eta, spacing=settings.spacing)
        if done is not None and existing is not None and existing.get("complete"):
            src.wall_s, src.note = done["wall_s"], done["note"]
        else:
            src.wall_s = time.perf_counter() - t0
            src.note = "resumed: wall time of the last part" if existing is not None else ""
        record["sources"][src.label] = asdict(src)
        _write_record(out, record)
    if not runs:
        raise InputError("nothing to evaluate with these protocols for this checkpoint")

    L = H
    ds = correlators([str(truth)] + [s.store for s in runs], sizes=fidelity_sizes(L),
                     labels=["truth"] + [s.label for s in runs], basis=settings.spectrum_basis,
                     k_window=(np.pi * 2, np.pi * L / 4), progress=progress)
    ds = _add_costs(ds, runs)
    ds.attrs.update(evaluation=json.dumps(record["params"]), checkpoint_config=json.dumps(model.config.to_dict()))
    from ising.measure import write_dataset

    (out / DATASET_FILE).unlink(missing_ok=True)  # this evaluation's own result, rewritten whole
    write_dataset(ds, out / DATASET_FILE)
    (out / TABLE_FILE).write_text(format_fidelity(ds) + "\n")
    from analysis.plotting import plot_fidelity

    plot_fidelity(ds, out / FIGURE_FILE)
    return ds


def _add_costs(ds: xr.Dataset, runs: list[SourceRun]) -> xr.Dataset:
    """Per-source who / protocol / network evaluations / wall time (the truth: Monte Carlo, no network)."""
    who = ["truth"] + [s.who for s in runs]
    protocol = ["wolff"] + [s.protocol for s in runs]
    nfe = [0] + [s.nfe for s in runs]
    wall = [np.nan] + [np.nan if s.wall_s is None else s.wall_s for s in runs]
    return ds.assign(
        who=("source", np.array(who, dtype=object), {"long_name": "model, gaussian floor, untrained network"}),
        protocol=("source", np.array(protocol, dtype=object),
                  {"long_name": "marginal (paper), lowres (real coarse input) or generate"}),
        nfe=("source", np.asarray(nfe), {"long_name": "network evaluations per configuration"}),
        wall_s=("source", np.asarray(wall, dtype=np.float64), {"long_name": "sampling wall time of the source",
                                                                 "units": "s"}))


# ---- the table ---------------------------------------------------------------------------- #

def _ve(v, e, fmt="+.4f") -> str:
    """value(error) cell; n/a for NaN."""
    if not np.isfinite(v):
        return "n/a"
    return f"{v:{fmt}} ± {e:.1g}"


def kappa4_excess(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Paired κ4 excess κ4(model)/κ4(truth subset) − 1 and its error (κ4 < 0: positive = |κ4| too large)."""
    truth_sub = ds.kappa4.isel(source=0)  # the paired difference is against the truth subset; its κ4
    excess = ds.kappa4_paired / truth_sub  # differs from the full truth's by its own statistical error only
    return excess, np.abs(ds.kappa4_paired_err / truth_sub)


TABLE_MOMENTS = (("e", "+.4f"), ("abs_m", "+.4f"), ("binder", "+.4f"), ("specific_heat", "+.3f"),
                 ("susceptibility", "+.2f"))
"""The moments in the fidelity tables, with their number formats: ⟨e⟩, ⟨|m|⟩, U4, the specific heat C and
the susceptibility χ per spin (C and χ are variances across configurations: a model can match every mean
and still miss them)."""


def format_fidelity(ds: xr.Dataset) -> str:
    """Markdown fidelity table of an evaluation Dataset: paired, unpaired, G, spectrum, seam profile, cost."""
    labels = [str(s) for s in ds.source.values]
    sizes = [int(l) for l in ds.patch_size.values]
    mi = {name: i for i, name in enumerate(MOMENT_NAMES)}
    lines = []
    paired_rows = [s for s in range(1, len(labels)) if "kappa4_paired" in ds and
                   np.isfinite(ds.kappa4_paired.values[s]).all()]
    if paired_rows:
        excess, excess_err = kappa4_excess(ds)
        lines += ["Super-resolution, paired on the same truth configurations (model − truth, joint jackknife):", "",
                  "| source | NFE | wall s | " + " | ".join(f"κ4 excess ℓ={l}" for l in sizes)
                  + " | Δ⟨e⟩ | Δ⟨\\|m\\|⟩ | ΔU4 | ΔC | Δχ |", "|---" * (8 + len(sizes)) + "|"]
        for s in paired_rows:
            cells = [f"{100 * excess.values[s, i]:+.1f} % ({excess.values[s, i] / excess_err.values[s, i]:+.1f}σ)"
                     for i in range(len(sizes))]
            mom = [_ve(ds.moments_paired.values[s, mi[m]], ds.moments_paired_err.values[s, mi[m]], fmt)
                   for m, fmt in TABLE_MOMENTS]
            lines.append(f"| {labels[s]} | {int(ds.nfe.values[s])} | {ds.wall_s.values[s]:.0f} | "
                         + " | ".join(cells + mom) + " |")
        lines.append("")
    lines += ["Against the whole truth as independent ensembles (deviation in σ of the two errors combined):", "",
              "| source | n | " + " | ".join(f"κ4(ℓ={l})" for l in sizes) + " | ⟨e⟩ | ⟨\\|m\\|⟩ | U4 | C | χ |",
              "|---" * (7 + len(sizes)) + "|"]
    for s in range(len(labels)):
        cells = []
        for i in range(len(sizes)):
            v, e = ds.kappa4.values[s, i], ds.kappa4_err.values[s, i]
            z = "" if s == 0 else f" ({(v - ds.kappa4.values[0, i]) / np.hypot(e, ds.kappa4_err.values[0, i]):+.1f}σ)"
            cells.append(f"{v:+.4f}{z}")
        for m, fmt in TABLE_MOMENTS:
            v, e = ds[m].values[s], ds[m + "_err"].values[s]
            z = "" if s == 0 else f" ({(v - ds[m].values[0]) / np.hypot(e, ds[m + '_err'].values[0]):+.1f}σ)"
            cells.append(_ve(v, e, fmt) + z)
        lines.append(f"| {labels[s]} | {int(ds.n_samples.values[s])} | " + " | ".join(cells) + " |")
    lines.append("")
    if paired_rows:
        rs = [r for r in (1, 2, 4, 8, 16, 32, 64) if r <= int(ds.r.max())]
        lines += ["Paired ΔG(r) along the axes, in σ:", "", "| source | " + " | ".join(f"r={r}" for r in rs) + " |",
                  "|---" * (1 + len(rs)) + "|"]
        for s in paired_rows:
            z = ds.G_paired.values[s] / ds.G_paired_err.values[s]
            lines.append(f"| {labels[s]} | " + " | ".join(f"{ds.G_paired.values[s, r]:+.4f} ({z[r]:+.1f}σ)"
                                                         for r in rs) + " |")
        lines.append("")
    if "spectrum" in ds:
        k_pi = ds.k.values / np.pi
        shells = np.unique(np.clip(np.rint(np.geomspace(1, len(k_pi) - 1, 8)).astype(int), 1, len(k_pi) - 1))
        lines += [f"Spectrum ratio model/truth per |k| shell ({ds.attrs['spectrum_basis']} basis; paired where "
                  "available):", "", "| source | " + " | ".join(f"\\|k\\|/π≈{k_pi[j]:.1f}" for j in shells) + " |",
                  "|---" * (1 + len(shells)) + "|"]
        for s in range(1, len(labels)):
            if "spectrum_ratio_paired" in ds and np.isfinite(ds.spectrum_ratio_paired.values[s]).all():
                r, e = ds.spectrum_ratio_paired.values[s], ds.spectrum_ratio_paired_err.values[s]
            else:
                r = ds.spectrum.values[s] / ds.spectrum.values[0]
                e = r * np.hypot(ds.spectrum_err.values[s] / ds.spectrum.values[s],
                                 ds.spectrum_err.values[0] / ds.spectrum.values[0])
            lines.append(f"| {labels[s]} | " + " | ".join(f"{r[j]:.3f} ± {e[j]:.1g}" for j in shells) + " |")
        lines.append("")
    if paired_rows:
        deltas = [d for d in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if d <= int(ds.seam_distance.max())]
        lines += ["Paired bond energy by distance δ to the array seam (δ = 0: the bond L−1 | 0; model − truth):", "",
                  "| source | " + " | ".join(f"δ={d}" for d in deltas) + " |", "|---" * (1 + len(deltas)) + "|"]
        for s in paired_rows:
            v, e = ds.bond_energy_paired.values[s], ds.bond_energy_paired_err.values[s]
            lines.append(f"| {labels[s]} | " + " | ".join(_ve(v[d], e[d]) for d in deltas) + " |")
        lines.append("")
    return "\n".join(lines)


def summary(ds: xr.Dataset, who: str = "model") -> dict:
    """Headline numbers of one evaluated model: per protocol, the paired κ4 excess per ℓ and the paired
    differences of TABLE_MOMENTS (super-resolution, keys d_NAME), and every one of them against the whole
    truth (value, error, deviation in σ; keys NAME)."""
    out = {}
    labels = [str(s) for s in ds.source.values]
    mi = {name: i for i, name in enumerate(MOMENT_NAMES)}
    if "kappa4_paired" in ds:
        excess, excess_err = kappa4_excess(ds)
    for protocol in PROTOCOLS:
        label = f"{who}/{protocol}"
        if label not in labels:
            continue
        s = labels.index(label)
        entry = {"nfe": int(ds.nfe.values[s]), "wall_s": float(ds.wall_s.values[s]), "n": int(ds.n_samples.values[s])}
        if protocol != "generate" and "kappa4_paired" in ds and np.isfinite(ds.kappa4_paired.values[s]).all():
            entry["kappa4_excess"] = {int(l): (float(excess.values[s, i]), float(excess_err.values[s, i]))
                                      for i, l in enumerate(ds.patch_size.values)}
            entry.update({f"d_{m}": (float(ds.moments_paired.values[s, mi[m]]),
                                     float(ds.moments_paired_err.values[s, mi[m]])) for m, _ in TABLE_MOMENTS})
        for m, _ in TABLE_MOMENTS:
            v, e = float(ds[m].values[s]), float(ds[m + "_err"].values[s])
            ref, ref_e = float(ds[m].values[0]), float(ds[m + "_err"].values[0])
            entry[m] = (v, e, (v - ref) / float(np.hypot(e, ref_e)))
        out[protocol] = entry
    return out


HEADLINE_SIZES = (1, 2, 4, 8, 12)


def format_headline(ds: xr.Dataset) -> str:
    """Short truth-vs-model table: κ4(ℓ) (with the paired excess for super-resolution), ⟨e⟩ and U4 per source."""
    labels = [str(s) for s in ds.source.values]
    all_sizes = [int(l) for l in ds.patch_size.values]
    shown = [i for i, l in enumerate(all_sizes) if l in HEADLINE_SIZES] or list(range(len(all_sizes)))
    has_pairs = "kappa4_paired" in ds
    if has_pairs:
        excess, excess_err = kappa4_excess(ds)
    mi = {name: i for i, name in enumerate(MOMENT_NAMES)}
    head = f"{'':<18}" + "".join(f"{f'κ4(ℓ={all_sizes[i]})':>20}" for i in shown) + f"{'⟨e⟩':>21}{'U4':>20}"
    lines = [head]
    for s, label in enumerate(labels):
        row = f"{label:<18}"
        paired = has_pairs and np.isfinite(ds.kappa4_paired.values[s]).all()
        for i in shown:
            cell = f"{ds.kappa4.values[s, i]:+.4f}"
            if paired:
                cell += f" {100 * excess.values[s, i]:+.1f}±{100 * excess_err.values[s, i]:.1f}%"
            row += f"{cell:>20}"
        for m in ("e", "binder"):
            cell = f"{ds[m].values[s]:+.4f}±{ds[m + '_err'].values[s]:.4f}"
            if paired:
                cell = f"Δ {ds.moments_paired.values[s, mi[m]]:+.4f}±{ds.moments_paired_err.values[s, mi[m]]:.4f}"
            row += cell.rjust(21 if m == "e" else 20)
        lines.append(row)
    lines += ["", "super-resolution rows: κ4 with its paired excess κ4(model)/κ4(truth, same configurations) − 1 and",
              "its error, and Δ = model − truth on the same configurations; generation and floors: values against",
              "the whole truth (the deviations in σ are in the full table)."]
    return "\n".join(lines)
