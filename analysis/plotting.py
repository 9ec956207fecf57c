"""Figure of a correlator Dataset: |kappa4| vs l, deviations from the reference, G(r), spectrum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.observables import deviation_sigma, paired_sigma
from skild_base import outputs


def _guide(ax, x, x0, y0, power, label):
    """Dotted line y0 (x/x0)^power across x, for a scaling law."""
    x = np.asarray(x, dtype=np.float64)
    ax.plot(x, y0 * (x / x0) ** power, ":", color="0.3", lw=1.2, label=label, zorder=0)


def plot_correlators(ds: xr.Dataset, path) -> Path:
    """Write the 2 x 2 correlator figure to path (.png or .pdf, by extension)."""
    labels = [str(s) for s in ds.source.values]
    L = int(ds.attrs["L"])
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    (ax_k, ax_d), (ax_g, ax_s) = fig.subplots(2, 2)
    fig.suptitle(f"Corner four-point cumulant and companions, L = {L} (errors: blocked jackknife, 1 sigma)")
    markers = "osD^v<>ph*"

    l = ds.patch_size.values.astype(np.float64)
    pos = l > 0
    for s, lab in enumerate(labels):
        ax_k.errorbar(l[pos], np.abs(ds.kappa4.values[s][pos]), yerr=ds.kappa4_err.values[s][pos],
                      marker=markers[s % len(markers)], ms=5, capsize=3, lw=1.2,
                      label=f"{lab}  (p = {ds.kappa4_exponent.values[s]:+.3f} +- {ds.kappa4_exponent_err.values[s]:.3f})")
    if pos.any():
        i0 = int(np.argmax(pos))
        _guide(ax_k, l[pos], l[i0], abs(ds.kappa4.values[0][i0]), -0.5, r"$\ell^{-1/2}$ ($4\Delta_\sigma = 1/2$)")
    lo, hi = ds.attrs["kappa4_window"]
    ax_k.axvspan(lo, hi, color="0.92", zorder=-1, label=r"fit window, p from $\ell^p(1 + c_1\ell/L + c_2\ell^2/L^2)$")
    ax_k.set(xscale="log", yscale="log", xlabel=r"patch side $\ell$ (lattice spacings)",
             ylabel=r"$|\kappa_4(\ell)|$", title=r"$|\kappa_4|$ of the corners of an $\ell\times\ell$ square")
    ax_k.legend(fontsize=8)

    dev = deviation_sigma(ds)
    paired = paired_sigma(ds)
    for s, lab in enumerate(labels[1:], start=1):
        ax_d.plot(l, dev.values[s], marker=markers[s % len(markers)], ms=5, lw=1.2, color=f"C{s}", label=lab)
        if paired is not None and np.isfinite(paired.values[s]).all():
            ax_d.plot(l, paired.values[s], marker=markers[s % len(markers)], ms=5, lw=1.2, ls="--", mfc="none",
                      color=f"C{s}",
                      label=f"{lab}, paired (same truth configurations)")
    ax_d.axhline(0, color="k", lw=0.8)
    ax_d.axhspan(-2, 2, color="0.9", zorder=-1, label=r"$\pm 2\sigma$")
    ax_d.set(xscale="log", xlabel=r"patch side $\ell$ (lattice spacings)",
             ylabel=r"$(\kappa_4 - \kappa_4^{\rm ref}) / \sigma$",
             title=f"deviation from the reference '{labels[0]}'")
    if len(labels) > 1:
        ax_d.legend(fontsize=8)
    else:
        ax_d.text(0.5, 0.8, "single source: nothing to compare", transform=ax_d.transAxes, ha="center")

    r = ds.r.values.astype(np.float64)
    rp = r > 0
    for s, lab in enumerate(labels):
        ax_g.errorbar(r[rp], ds.G.values[s][rp], yerr=ds.G_err.values[s][rp], marker=markers[s % len(markers)],
                      ms=3, capsize=2, lw=1, label=lab)
    if rp.any():
        _guide(ax_g, r[rp], 1.0, ds.G.values[0][1], -0.25, r"$r^{-1/4}$ ($\eta = 1/4$)")
    ax_g.set(xscale="log", yscale="log", xlabel="distance r along an axis (lattice spacings)",
             ylabel="G(r) (connected)", title="two-point function")
    ax_g.legend(fontsize=8)

    if "spectrum" in ds:
        k = ds.k.values
        kp = k > 0
        lo, hi = ds.attrs["k_window"]
        fit_k = np.linspace(lo, hi, 100)
        for s, lab in enumerate(labels):
            line = ax_s.errorbar(k[kp] / np.pi, ds.spectrum.values[s][kp], yerr=ds.spectrum_err.values[s][kp],
                                 ms=2, marker=markers[s % len(markers)], lw=0.8, label=lab)
            C, a, k0sq = (float(ds[v].values[s]) for v in ("spectrum_C", "spectrum_alpha", "spectrum_k0sq"))
            ax_s.plot(fit_k / np.pi, C * (fit_k**2 + k0sq) ** (-a), "--", lw=1.5, color=line[0].get_color(),
                      label=fr"fit $C(k^2+k_0^2)^{{-\alpha}}$, $2\alpha$ = {2 * a:.3f}")
        ax_s.axvspan(lo / np.pi, hi / np.pi, color="0.92", zorder=-1)
        ref = ds.spectrum.values[0][kp]
        i_ref = int(np.argmin(np.abs(k[kp] - lo)))
        _guide(ax_s, k[kp] / np.pi, k[kp][i_ref] / np.pi, ref[i_ref], -1.75, r"$k^{-7/4}$ ($2-\eta$)")
        basis = {"dct": "orthonormal DCT-II", "fourier": "periodic real Fourier"}.get(ds.attrs["spectrum_basis"])
        ax_s.set(xscale="log", yscale="log", xlabel=r"$|k|/\pi$ ($k$ in units of 1/side)",
                 ylabel="S(k), per-mode variance", title=f"radial power spectrum ({basis} basis)")
        ax_s.legend(fontsize=8)
    else:
        ax_s.set_axis_off()

    path = Path(path)
    fig.savefig(path, dpi=130, metadata=outputs.plot_metadata(path))
    return path


def plot_fidelity(ds: xr.Dataset, path, sources=None) -> Path:
    """Fidelity figure of an evaluation Dataset: paired kappa4 excess vs l, spectrum ratio vs |k|,
    paired bond energy vs distance to the array seam, and kappa4(l) with generation (2 x 2)."""
    labels = [str(s) for s in ds.source.values]
    chosen = [s for s in range(1, len(labels)) if sources is None or labels[s] in sources]
    paired = [s for s in chosen if "kappa4_paired" in ds and np.isfinite(ds.kappa4_paired.values[s]).all()]
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    (ax_x, ax_s), (ax_e, ax_k) = fig.subplots(2, 2)
    fig.suptitle(f"Fidelity against the truth, L = {int(ds.attrs['L'])} (paired: on the same truth configurations)")
    l = ds.patch_size.values.astype(np.float64)
    truth = ds.kappa4.values[0]
    for s in paired:
        ex = ds.kappa4_paired.values[s] / truth
        ax_x.errorbar(l, 100 * ex, yerr=100 * np.abs(ds.kappa4_paired_err.values[s] / truth), marker="o", ms=4,
                      capsize=3, lw=1.2, color=f"C{s}", label=labels[s])
    ax_x.axhline(0, color="k", lw=0.8)
    ax_x.axhspan(-1, 1, color="0.9", zorder=-1, label=r"$\pm 1\,\%$")
    ax_x.set(xscale="log", xlabel=r"patch side $\ell$", ylabel=r"$\kappa_4^{\rm model}/\kappa_4^{\rm truth} - 1$ (%)",
             title=r"paired $\kappa_4$ excess (> 0: $|\kappa_4|$ too large)")
    ax_x.legend(fontsize=7)
    if "spectrum" in ds:
        k = ds.k.values / np.pi
        kp = k > 0
        for s in chosen:
            if "spectrum_ratio_paired" in ds and np.isfinite(ds.spectrum_ratio_paired.values[s]).all():
                r, e, ls = ds.spectrum_ratio_paired.values[s], ds.spectrum_ratio_paired_err.values[s], "-"
            else:
                r = ds.spectrum.values[s] / ds.spectrum.values[0]
                e = r * np.hypot(ds.spectrum_err.values[s] / ds.spectrum.values[s],
                                 ds.spectrum_err.values[0] / ds.spectrum.values[0])
                ls = ":"
            ax_s.errorbar(k[kp], r[kp], yerr=e[kp], ls=ls, marker=".", ms=3, lw=1, color=f"C{s}", label=labels[s])
        ax_s.axhline(1, color="k", lw=0.8)
        ax_s.set(xscale="log", xlabel=r"$|k|/\pi$", ylabel="S(k) model / truth",
                 title=f"spectrum ratio per shell ({ds.attrs['spectrum_basis']}; dotted: unpaired)")
        ax_s.legend(fontsize=7)
    d = ds.seam_distance.values
    for s in paired:
        ax_e.errorbar(d, ds.bond_energy_paired.values[s], yerr=ds.bond_energy_paired_err.values[s], marker="o",
                      ms=3, capsize=2, lw=1, color=f"C{s}", label=labels[s])
    ax_e.axhline(0, color="k", lw=0.8)
    ax_e.set(xlabel=r"distance $\delta$ of the bond from the array seam (0: rows $L-1\,|\,0$)",
             ylabel="bond energy per spin, model − truth", title="where in the lattice: the seam profile")
    ax_e.legend(fontsize=7)
    lp = l > 0
    ax_k.errorbar(l[lp], np.abs(truth[lp]), yerr=ds.kappa4_err.values[0][lp], marker="s", ms=4, capsize=3, lw=1.5,
                  color="k", label=labels[0])
    for s in chosen:
        ax_k.errorbar(l[lp], np.abs(ds.kappa4.values[s][lp]), yerr=ds.kappa4_err.values[s][lp], marker="o", ms=3,
                      capsize=2, lw=1, color=f"C{s}", label=labels[s])
    _guide(ax_k, l[lp], l[lp][0], abs(truth[lp][0]), -0.5, r"$\ell^{-1/2}$")
    ax_k.set(xscale="log", yscale="log", xlabel=r"patch side $\ell$", ylabel=r"$|\kappa_4(\ell)|$",
             title="κ4 against the whole truth (independent ensembles)")
    ax_k.legend(fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=130, metadata=outputs.plot_metadata(path))
    return path
