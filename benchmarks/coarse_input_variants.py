"""Diagnostic: coarse inputs between the block means and the majority block spins, as block-mean stores.

    python benchmarks/coarse_input_variants.py runs/transfer_L64_diag/truth.zarr OUT.zarr --factor 4 \
        --variant majority-new-modes [--scale 0.7527] [--samples 64]
    python benchmarks/coarse_input_variants.py ... --variant means-new-modes
    python benchmarks/coarse_input_variants.py ... --variant filtered --reference L32_TRUTH.zarr
    python benchmarks/coarse_input_variants.py ... --variant sampled --reference L32_TRUTH.zarr [--seed 0]

±1 majority block spins s enter super-resolution as block means a·s, a = E|block mean| of the
training data. On the coarse torus (periodic Fourier modes, q in radians per fine lattice spacing):
- majority-new-modes: the true block means, with their modes 0 < q < --qc (default 0.19: the modes
  a 4× coarse lattice of a larger L has and the training lattice L = 32 has not) taken from a·s;
- means-new-modes: a·s, with those modes taken from the true block means;
- filtered: s filtered by r(q) = <bm s*>/<|s|²>, the per-wavenumber regression of the block means
  on the block spins measured on --reference (a store at the training size), linearly
  interpolated in |q| between the reference's modes, q = 0 included;
- sampled: each block mean drawn from its distribution given the 3 × 3 neighbourhood of majority
  block spins around it, counted on --reference (`ising.coarsen.draw_block_means`, what
  `superres --lowres-start sampled` does inside the chain's start).
Each store is what `coarsen --rule mean` writes (`field`, `source_index`), so `superres --lowres`
conditions on it exactly; the chains are paired with the truth through source_index. Not a
user-facing option: it isolates which part of the majority input the model mishandles.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

VARIANTS = ("majority-new-modes", "means-new-modes", "filtered", "sampled")


def block_fields(path, f: int, n: int):
    """Block means, the block spins `coarsen --rule majority` writes, and |q| of the coarse torus's modes."""
    from ising import store
    from ising.coarsen import coarsen_batch

    spins = store.open_store(path)["spins"][:n].values
    bm = coarsen_batch(spins, f, "mean").astype(np.float64)
    s = coarsen_batch(spins, f, "majority").astype(np.float64)
    k = np.fft.fftfreq(bm.shape[-1]) * 2 * np.pi / f
    return bm, s, np.hypot(*np.meshgrid(k, k, indexing="ij"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth", help="spin store to coarsen")
    ap.add_argument("out", help="new block-mean store")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--scale", type=float, default=0.75272578125, help="a = E|block mean| (models/ising32_4x, f = 4)")
    ap.add_argument("--qc", type=float, default=0.19)
    ap.add_argument("--reference", help="training-size spin store for --variant filtered / sampled")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="--variant sampled: seed of the draws")
    ap.add_argument("--overwrite", action="store_true", help="replace a coarse store this script wrote at OUT")
    args = ap.parse_args()
    for path in (args.truth, args.reference):
        if path is not None and not Path(path).is_dir():
            ap.exit(2, f"{path}: no such store\n")
    if args.variant in ("filtered", "sampled") and args.reference is None:
        ap.exit(2, f"--variant {args.variant} needs --reference\n")

    from ising import store
    from skild_base import __version__, outputs
    from skild_base.errors import InputError

    try:
        store.prepare_path(args.out, args.overwrite, kind=outputs.COARSE, inputs=(args.truth,))
    except InputError as err:
        ap.exit(2, f"error: {err}\n")
    f = args.factor
    bm, s, q = block_fields(args.truth, f, args.samples)
    if args.variant == "filtered":
        bm_r, s_r, q_r = block_fields(args.reference, f, 1000)
        B, S = np.fft.fft2(bm_r), np.fft.fft2(s_r)
        r_mode = np.real(B * np.conj(S)).mean(0) / (np.abs(S) ** 2).mean(0)
        qs = np.unique(np.round(q_r, 9))
        r_q = np.array([r_mode[np.isclose(q_r, v)].mean() for v in qs])
        print("r(q) on the reference: " + ", ".join(f"{a:.3f}: {b:.3f}" for a, b in zip(qs, r_q)))
        y = np.real(np.fft.ifft2(np.interp(q, qs, r_q) * np.fft.fft2(s)))
    elif args.variant == "sampled":
        from ising.coarsen import block_mean_counts, draw_block_means

        counts = block_mean_counts(store.open_store(args.reference)["spins"].values, f)
        y = draw_block_means(s.astype(np.int8), counts, np.random.default_rng(args.seed).random(s.shape))
        print(f"sampled E|bm| = {np.abs(y).mean():.4f}, true E|bm| = {np.abs(bm).mean():.4f}; "
              f"corr(sampled, true) = {np.corrcoef(y.ravel(), bm.ravel())[0, 1]:.3f}")
        power = [(np.abs(np.fft.fft2(v)) ** 2).mean(0) for v in (y, bm, args.scale * s)]
        print("power / the true block means' by |q| shell: sampled, a·s")
        for lo, hi in zip((0, 1e-9, 0.05, 0.1, 0.2, 0.4, 0.8), (1e-9, 0.05, 0.1, 0.2, 0.4, 0.8, np.inf)):
            m = (q == 0) if lo == 0 else (q >= lo) & (q < hi)
            if m.any():
                print(f"  [{lo:g}, {hi:g}) {int(m.sum()):4d} modes: {power[0][m].mean() / power[1][m].mean():.3f}, "
                      f"{power[2][m].mean() / power[1][m].mean():.3f}")
    else:
        new = (q > 0) & (q < args.qc)
        low, rest = (args.scale * s, bm) if args.variant == "majority-new-modes" else (bm, args.scale * s)
        y = np.real(np.fft.ifft2(np.where(new, np.fft.fft2(low), np.fft.fft2(rest))))
        print(f"{int(new.sum())} modes with 0 < q < {args.qc} from {'a·s' if low is not bm else 'the block means'}")

    truth = store.open_store(args.truth)
    n, h, w = y.shape
    attrs = {"model": "ising2d-coarse", "L": h, "factor": f, "rule": "mean", "variant": args.variant,
             "source": str(args.truth), "beta": truth.attrs.get("beta"), "J": truth.attrs.get("J", 1.0),
             "boundary": truth.attrs.get("boundary"), "skild_phys_version": __version__, "complete": False}
    root = store.create_sample_store(args.out, n, h, w, attrs, field=True, spins=False, kind=outputs.COARSE)
    store.write_samples(root, 0, {"field": y.astype(np.float32), "seed": np.full(n, -1, dtype=np.int64),
                                  "source_index": np.arange(n, dtype=np.int64)})
    store.finalize(args.out, {"complete": True})
    print(f"wrote {n} coarse {h}x{w} inputs ({args.variant}) to {args.out}")


if __name__ == "__main__":
    main()
