"""Where super-resolution loses the energy's variance: the replica decomposition by start step.

    python benchmarks/energy_variance.py [--checkpoint RUN] [--truth TEST.zarr] [--configs M] [--replicas R]
                                         [--rows a,b] [--out-dir DIR] [--threads T] [--table-only]
                                         [--compare OTHER_DIR] [--paired-to ROW]

The specific heat is the variance of the energy per spin (C = β² L² Var e).  Each row starts R
reverse chains from one shared start per truth configuration — its forward marginal at the
row's step n_s, one noise draw per configuration — with independent chain noise per replica,
and decomposes Var e of the super-resolved configurations against the truth's
(analysis.replicas): model variance (= C_model / C_truth on these configurations), the
covariance of two replicas of one start (the model's response to what the start says about
e), their covariance with the truth (the true response, for an exact sampler the same
number; "gap" is the difference, with its own error), the spread within one start, and the
Cauchy–Schwarz bound on the share of Var e the start determines.  Rows from smaller n_s hand
the chain more of the configuration: the row where the deficit appears says which part of the
chain loses it.  Each row is saved as
DIR/ROW.npz (the energies) and reused by later runs with the same settings.  With --compare,
the rows saved in another directory for another checkpoint with otherwise the same settings (the
same truth configurations, starts and chain seeds) are subtracted paired: this checkpoint minus
that one, jackknifed jointly (analysis.replicas.decomposition_difference); with --paired-to ROW,
every row minus that row of the same checkpoint (the same truth configurations and chain seeds).
docs/results/fidelity_campaign.md, "The specific heat", is this table for models/ising32_4x.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from analysis.replicas import decomposition_difference, variance_decomposition
from ising.model import ISING
from skild_base.errors import InputError
from skild_phys.data.adapters import LatticeStore
from skild_phys.methods import load_trained
from skild_phys.methods.starts import StartSpec, start_step_for_factor
from skild_phys.process.diffusion import per_sample_generators, randn
from skild_phys.sampling.driver import chain_steps_for, final_samples
from skild_phys.sampling.samplers import network_evaluations

# name: (start step: "n0" or an integer, reverse steps K, sampler, step spacing, the ancestral chain's variance)
ROWS = {
    "n0-forward": ("n0", 100, "ancestral", "uniform", "forward"),
    "n0-posterior": ("n0", 100, "ancestral", "uniform", "posterior"),
    "n0-forward-250": ("n0", 250, "ancestral", "uniform", "forward"),
    "n0-forward-loglam": ("n0", 100, "ancestral", "log-lambda", "forward"),
    "n0-heun-13": ("n0", 13, "heun", "log-lambda", "-"),
    "n0-heun-25": ("n0", 25, "heun", "log-lambda", "-"),
    "300-forward": (300, 100, "ancestral", "uniform", "forward"),
    "150-forward": (150, 100, "ancestral", "uniform", "forward"),
}


def start_seeds(seed: int, configs) -> list[int]:
    """The start's noise seed of each truth configuration, from (seed, configuration) only and apart from
    the chains' own seeds (driver.sample_seeds, spawn key (index,))."""
    return [int(np.random.SeedSequence(seed, spawn_key=(int(i), 1)).generate_state(1, dtype=np.uint64)[0]
                & (2**63 - 1)) for i in configs]


def shared_start(model, truth: LatticeStore, n_start: int, M: int, seed: int) -> StartSpec:
    """Sample r M + i starts from the forward marginal at n_start of truth configuration i, the same draw for
    every replica r."""
    p = model.process

    def state(idx, gens):
        configs = np.asarray(idx) % M
        X0 = p.basis.forward(torch.from_numpy(truth.get(configs)).to(device=model.device, dtype=torch.float64))
        eps = randn(X0.shape, per_sample_generators(start_seeds(seed, configs)), dtype=torch.float64,
                    device=model.device)
        return p.marginal(X0, n_start, eps)

    return StartSpec(n_start, state, source_index=lambda idx: np.asarray(idx) % M)


def load_row(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {"settings": json.loads(str(z["settings"])), "energy": z["energy"], "truth_energy": z["truth_energy"],
                "seconds": float(z["seconds"])}


def run_row(row: str, args, model, truth: LatticeStore) -> dict:
    where, K, sampler, spacing, variance = ROWS[row]
    n_start = start_step_for_factor(model, 4.0) if where == "n0" else int(where)
    settings = {"checkpoint": model.digest, "truth": str(args.truth), "configs": args.configs,
                "replicas": args.replicas, "start": n_start, "steps": K, "sampler": sampler, "spacing": spacing,
                "variance": variance, "seed": args.seed}
    path = Path(args.out_dir) / f"{row}.npz"
    if path.is_file():
        saved = load_row(path)
        if saved["settings"] == settings:
            return saved
        raise SystemExit(f"{path} holds another setting of row {row}; move it away or choose another --out-dir")
    M, R = args.configs, args.replicas
    start = shared_start(model, truth, n_start, M, args.seed)
    energy = np.empty(M * R)
    t0 = time.perf_counter()
    for idx, _, x in final_samples(model, start, np.arange(M * R), chain_steps_for(start, K, spacing, model.process),
                                   args.seed, args.batch,
                                   variance if sampler == "ancestral" else "posterior", sampler):
        energy[idx] = ISING.observables(ISING.project(x[:, 0].cpu().numpy()))["energy"]
    seconds = time.perf_counter() - t0
    truth_energy = ISING.observables(truth.get(np.arange(M))[:, 0].astype(np.int8))["energy"]
    out = {"settings": settings, "energy": energy.reshape(R, M), "truth_energy": truth_energy, "seconds": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, settings=json.dumps(settings), energy=out["energy"], truth_energy=truth_energy, seconds=seconds)
    return out


def table(results: dict) -> str:
    head = ("| row | start n_s | sampler | spacing | K | NFE | variance | C model / C truth | replica cov. | "
            "truth cov. | gap | within | explained ≥ | Δ⟨e⟩ | min |")
    lines = [head, "|---" * 15 + "|"]
    for row, r in results.items():
        s = r["settings"]
        d = variance_decomposition(r["truth_energy"], r["energy"])
        nfe = network_evaluations(s["sampler"], s["steps"])
        cells = [row, str(s["start"]), s["sampler"], s["spacing"], str(s["steps"]), str(nfe), s["variance"]]
        cells += [f"{d[k][0]:.3f} ± {d[k][1]:.3f}" for k in ("model_variance", "replica_covariance",
                                                              "truth_covariance", "response_gap", "within",
                                                              "explained_bound")]
        cells += [f"{d['mean_difference'][0]:+.4f} ± {d['mean_difference'][1]:.4f}", f"{r['seconds'] / 60:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def difference_table(pairs: dict) -> str:
    """Paired differences of the decomposition, one line per name -> (result, result it is compared with)."""
    head = ("| row | Δ C model / C truth | Δ replica cov. | Δ truth cov. | Δ gap | Δ within | Δ explained ≥ | "
            "Δ⟨e⟩ |")
    lines = [head, "|---" * 8 + "|"]
    for name, (r, other) in pairs.items():
        if not np.array_equal(other["truth_energy"], r["truth_energy"]):
            raise SystemExit(f"{name}: the two rows hold other truth configurations; cannot pair them")
        d = decomposition_difference(r["truth_energy"], r["energy"], other["energy"])
        cells = [name] + [f"{d[k][0]:+.3f} ± {d[k][1]:.3f}" for k in ("model_variance", "replica_covariance",
                                                                        "truth_covariance", "response_gap",
                                                                        "within", "explained_bound")]
        cells.append(f"{d['mean_difference'][0]:+.4f} ± {d['mean_difference'][1]:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def other_checkpoint_pairs(results: dict, other_dir: Path) -> dict:
    """Each row here with the same row saved in other_dir for another checkpoint, all else equal."""
    pairs = {}
    for row, r in results.items():
        path = other_dir / f"{row}.npz"
        if not path.is_file():
            continue
        other = load_row(path)
        mine = {k: v for k, v in r["settings"].items() if k != "checkpoint"}
        if {k: v for k, v in other["settings"].items() if k != "checkpoint"} != mine:
            raise SystemExit(f"{path} was run with other settings than row {row} here; cannot pair them")
        pairs[row] = (r, other)
    if not pairs:
        raise SystemExit(f"--compare {other_dir}: it holds none of the rows {', '.join(results)}")
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="models/ising32_4x")
    ap.add_argument("--truth", default="runs/ising_sr_cpu_L32/data/test.zarr")
    ap.add_argument("--configs", type=int, default=250, help="Truth configurations M (the first M of --truth).")
    ap.add_argument("--replicas", type=int, default=2, help="Chains R per start.")
    ap.add_argument("--rows", default=None, help=f"Comma-separated rows [default: all: {','.join(ROWS)}].")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="Torch threads.")
    ap.add_argument("--out-dir", default="runs/energy_variance")
    ap.add_argument("--table-only", action="store_true", help="Print the table of the rows already saved.")
    ap.add_argument("--compare", default=None, metavar="OTHER_DIR",
                    help="Also print this checkpoint minus the one whose rows OTHER_DIR holds, paired.")
    ap.add_argument("--paired-to", default=None, metavar="ROW",
                    help="Also print every row minus this one, paired on the same configurations.")
    args = ap.parse_args()
    rows = list(ROWS) if args.rows is None else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.configs < 2 or args.replicas < 2:
        raise SystemExit("--configs and --replicas must be at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_trained(args.checkpoint, device="cpu")
        truth = LatticeStore(args.truth)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    if len(truth) < args.configs:
        raise SystemExit(f"{args.truth} holds {len(truth)} configurations, fewer than --configs {args.configs}")
    results = {}
    for row in rows:
        if args.table_only and not (Path(args.out_dir) / f"{row}.npz").is_file():
            continue
        print(f"row {row}", flush=True)
        results[row] = run_row(row, args, model, truth)
    print(table(results))
    if args.paired_to:
        if args.paired_to not in results:
            raise SystemExit(f"--paired-to {args.paired_to}: that row is not among the rows run or saved")
        print(f"paired: each row minus {args.paired_to} (the same truth configurations and chain seeds)")
        print(difference_table({f"{row} − {args.paired_to}": (r, results[args.paired_to])
                                for row, r in results.items() if row != args.paired_to}))
    if args.compare:
        print(f"paired: {args.checkpoint} minus the checkpoint of {args.compare}")
        print(difference_table(other_checkpoint_pairs(results, Path(args.compare))))


if __name__ == "__main__":
    main()
