"""Validated summary of a spin store: thermodynamic moments with errors, and exact comparisons."""

from __future__ import annotations

import math

from analysis.moments import MOMENT_NAMES, moment_estimates, moment_primitives
from analysis.stats import block_sums, jackknife, n_blocks_for
from ising import exact, store
from skild_base.errors import InputError


def thermo_moments(energy, magnetization, L: int, beta: float, block_min: int) -> dict:
    """Per-spin <e>, <|m|>, <m^2>, <m^4>, U4, specific heat and susceptibility with jackknife errors.

    energy, magnetization: per-spin series ordered in Monte Carlo time (blocks of at least
    block_min consecutive samples are treated as independent).  Returns name -> (value, error).
    """
    prim = moment_primitives(energy, magnetization)
    sums, counts = block_sums(prim, n_blocks_for(len(prim), block_min))
    value, err = jackknife(sums, counts, lambda mean: moment_estimates(mean, beta, L * L))
    return {k: (float(v), float(s)) for k, v, s in zip(MOMENT_NAMES, value, err)}


def exact_reference(L: int, beta: float, J: float) -> tuple[dict, str]:
    """Exact per-spin values available for (L, beta): enumeration for tiny L, else Kaufman's energy."""
    if J != 1.0:
        return {}, ""
    if L <= exact.DOS_MAX_L:
        ex = exact.exact_moments(L, beta)
        keys = ("e", "abs_m", "m2", "m4", "binder", "specific_heat")
        return {k: float(ex[k]) for k in keys}, "exact enumeration"
    return {"e": float(exact.kaufman_energy(L, beta)),
            "specific_heat": float(exact.kaufman_specific_heat(L, beta))}, "Kaufman 1949"


def summarize(path) -> dict:
    """Parameters, moments with errors, autocorrelation times and exact comparisons of a spin store."""
    ds = store.open_store(path)
    attrs = dict(ds.attrs)
    if attrs.get("model") != "ising2d" or "energy" not in ds:
        raise InputError(f"{path} is not an Ising spin store written by `skild-phys simulate`")
    if not attrs.get("complete", False):
        raise InputError(f"{path} is incomplete; run the same `simulate` command again to finish it")
    L, beta, chains = int(attrs["L"]), float(attrs["beta"]), int(attrs["chains"])
    n = ds.sizes["sample"]
    if n < 2 * chains:
        raise InputError(f"{path} has too few samples ({n}) for error bars; need at least {2 * chains}")
    block_min = int(math.ceil(2 * attrs.get("tau_int_samples", 0.5))) * chains
    moments = thermo_moments(ds["energy"].values, ds["magnetization"].values, L, beta, block_min)
    reference, source = exact_reference(L, beta, float(attrs.get("J", 1.0)))
    deviations = {k: (moments[k][0] - v) / moments[k][1] if moments[k][1] > 0 else math.inf
                  for k, v in reference.items()}
    return {"path": str(path), "samples": n, "attrs": attrs, "moments": moments, "checksums": store.has_checksums(path),
            "exact": reference, "exact_source": source, "deviation_sigma": deviations}


def format_summary(s: dict) -> str:
    """Human-readable table for `skild-phys info`."""
    a = s["attrs"]
    lines = [
        f"store      {s['path']}",
        f"model      2D Ising, L={a['L']}, beta={a['beta']:.7g} (T={a['T']:.7g}), J={a.get('J', 1.0)}, {a['boundary']}",
        f"samples    {s['samples']} from {a['chains']} chains, seed {a['seed']}",
        f"sampling   thermalised {a['thermalize_sweeps']} sweeps; {a['updates_between']} cluster updates "
        f"= {a['sweeps_between_measured']:.2f} sweeps between saves (mean cluster {a['mean_cluster_size']:.1f})",
        f"tau_int    e: {a['tau_int_e']:.2f} sweeps, |m|: {a['tau_int_absm']:.2f} sweeps; "
        f"saved series: {a['tau_int_samples']:.2f} samples per chain",
        "verified   every chunk present and readable, spins ±1, energies and magnetisations match the spins"
        + ("; chunks CRC-32C checksummed" if s.get("checksums") else "; no chunk checksums (older store)"),
        "",
        f"{'observable':<16}{'estimate':>24}{'exact':>16}{'deviation':>12}",
    ]
    for k, (v, err) in s["moments"].items():
        ex = s["exact"].get(k)
        ex_s = f"{ex:.6f}" if ex is not None else "-"
        dev = f"{s['deviation_sigma'][k]:+.2f} sigma" if ex is not None else ""
        lines.append(f"{k:<16}{v:>14.6f} +- {err:<8.6f}{ex_s:>14}{dev:>14}")
    if s["exact_source"]:
        lines.append(f"(exact values: {s['exact_source']})")
    return "\n".join(lines)
