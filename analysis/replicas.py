"""Replica decomposition of a per-configuration observable: where a conditional sampler loses variance.

A super-resolution chain starts from a state built from truth configuration i (its forward
marginal at some step) and returns a sample of x | start.  Run R chains (replicas) from the
starts of each of M truth configurations and measure one number per configuration, q (the
energy per spin, say): truth t_i, replicas x_ri.  By the law of total variance, for a
sampler of the exact conditional law

    Var t = Var E[q | start] + E Var(q | start),

and the replicas estimate both parts of the *model's* law: the covariance of two replicas of
the same start is Var E_model[q | start] ("between"), their mean squared difference / 2 is
E Var_model(q | start) ("within").  The covariance of a replica with its truth is
Cov(E_true[q | start], E_model[q | start]).  An exact sampler has

    model variance = truth variance,   replica covariance = truth covariance,

and by Cauchy–Schwarz the truth's own explained share obeys
Var E_true[q | start] / Var t ≥ Cov(t, x)² / (Cov(x_r, x_s) Var t): the "explained" bound.
A model whose replicas agree with each other less than each agrees with its truth responds
too weakly to what the start says about q; if it does not make the difference up in
within-start spread, Var q of the model is too small (a specific-heat deficit for q = e).

All ratios are functions of per-configuration means and are jackknifed over contiguous blocks
of configurations (analysis.stats.jackknife), so their errors include the pairing.
"""

from __future__ import annotations

import numpy as np

from analysis.stats import block_sums, jackknife

DECOMPOSITION = ("model_variance", "replica_covariance", "truth_covariance", "response_gap", "within",
                 "explained_bound", "mean_difference")
"""The names `variance_decomposition` returns, in order: every ratio is to the truth's variance
(Var t); `response_gap` is truth covariance − replica covariance (zero for an exact sampler, positive
for a model whose response to the start is too weak), `mean_difference` ⟨x⟩ − ⟨t⟩ in the
observable's own units."""


def _primitives(truth: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Per configuration (M, 6): t, t², x̄, mean_r x_r², t x̄, mean over replica pairs r < s of x_r x_s."""
    R = model.shape[0]
    xbar = model.mean(axis=0)
    sq = (model ** 2).mean(axis=0)
    pairs = (model.sum(axis=0) ** 2 - (model ** 2).sum(axis=0)) / (R * (R - 1))  # mean of x_r x_s, r != s
    return np.stack([truth, truth ** 2, xbar, sq, truth * xbar, pairs], axis=1)


def _ratios(m: np.ndarray) -> np.ndarray:
    t, t2, x, x2, tx, xx = m
    var_t = t2 - t * t
    var_x = x2 - x * x
    c_rr = xx - x * x
    c_tx = tx - t * x
    bound = c_tx ** 2 / (c_rr * var_t) if c_rr > 0 else np.nan
    return np.array([var_x / var_t, c_rr / var_t, c_tx / var_t, (c_tx - c_rr) / var_t, (var_x - c_rr) / var_t,
                     bound, x - t])


def _checked(truth, model, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """truth (M,) and model (R, M) as float64, with R ≥ 2 and 2 ≤ n_blocks ≤ M; ValueError otherwise."""
    truth = np.asarray(truth, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    if model.ndim != 2 or truth.ndim != 1 or model.shape[1] != truth.shape[0]:
        raise ValueError(f"model must be (replicas, configurations) and truth (configurations,), got "
                         f"{model.shape} and {truth.shape}")
    R, M = model.shape
    if R < 2:
        raise ValueError("the decomposition needs at least 2 replicas per configuration")
    if not 2 <= n_blocks <= M:
        raise ValueError(f"need between 2 and {M} jackknife blocks, got {n_blocks}")
    return truth, model


def variance_decomposition(truth, model, n_blocks: int = 25) -> dict[str, tuple[float, float]]:
    """The replica decomposition of `model` (R, M) against `truth` (M,): name -> (value, jackknife error).

    Replica r of configuration i is model[r, i]; configurations are blocked in their given
    (Monte Carlo) order into n_blocks contiguous blocks.  Names: DECOMPOSITION.
    """
    truth, model = _checked(truth, model, n_blocks)
    sums, counts = block_sums(_primitives(truth, model), n_blocks)
    value, error = jackknife(sums, counts, _ratios)
    return {name: (float(v), float(e)) for name, v, e in zip(DECOMPOSITION, value, error)}


def decomposition_difference(truth, model_a, model_b, n_blocks: int = 25) -> dict[str, tuple[float, float]]:
    """The decomposition of `model_a` minus that of `model_b`, paired: name -> (value, jackknife error).

    Both (R, M) arrays are replicas of the same M truth configurations — the same starts, ideally
    the same chain noise — so one joint jackknife over blocks of configurations gives the error of
    the difference with the shared truth variance and the shared starts cancelled, which two
    separate errors would count twice.  Names: DECOMPOSITION.
    """
    truth, model_a = _checked(truth, model_a, n_blocks)
    model_b = np.asarray(model_b, dtype=np.float64)
    if model_a.shape != model_b.shape:
        raise ValueError(f"the two models must have the same (replicas, configurations), got {model_a.shape} "
                         f"and {model_b.shape}")
    prims = np.concatenate([_primitives(truth, model_a), _primitives(truth, model_b)], axis=1)
    sums, counts = block_sums(prims, n_blocks)
    value, error = jackknife(sums, counts, lambda m: _ratios(m[:6]) - _ratios(m[6:]))
    return {name: (float(v), float(e)) for name, v, e in zip(DECOMPOSITION, value, error)}
