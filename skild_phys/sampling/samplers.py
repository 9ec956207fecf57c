"""Few-step samplers of the SKILD process: DDIM (η), the probability-flow ODE with Heun, step placements.

Per mode the SKILD forward process is a variance-preserving diffusion in S0-whitened
coordinates Y = X/√S0 with its own ᾱ(t) = exp(−k_eff² λ(t)) (docs/theory.md, "Few-step
sampling"):

    dY = −½ β(t) Y dt + √β(t) dW,   β(t) = −d ln ᾱ/dt = k_eff² λ'(t).

Its probability-flow ODE, written in Z = Y/√ᾱ = Y0 + σ ε with σ² = (1−ᾱ)/ᾱ (per mode), is
dZ/dσ = ε̂: one ODE for every mode, all driven by the one step index the network sees.

- `ddim_chain`: the DDIM family.  From X̂_0 and ε̂ at step n,
  X_m = √ᾱ_m X̂_0 + √((1−ᾱ_m−s²) S0) ε̂ + s √S0 z,  s² = η² (1−ᾱ_m)/(1−ᾱ_n) (1 − ᾱ_n/ᾱ_m).
  η = 0 is the Euler step of the ODE in σ (deterministic), η = 1 the ancestral posterior
  step of `reverse_chain` (identical in law).
- `heun_chain`: the ODE with Heun's second-order correction (EDM, Karras et al. 2022, Alg. 1),
  in exponential-integrator form (DPM-Solver++, Lu et al. 2022): the DDIM step predicts X̃_m,
  X̂_0 is evaluated there, and the step is redone with X̂_0 linear in the half-log-SNR
  between both ends; the last step (to n = 0) stays first order.  (Heun in σ itself is
  unstable here: σ of the finest modes spans e^50 within one step.)  2K − 1 network evaluations for K
  steps.  Run upwards (`heun_ode` with increasing steps) the same scheme maps a state to
  its latent at a higher step: the ODE is deterministic and reversible.  With η > 0 ("churn",
  EDM Alg. 2) every step but the first and the last first pushes the state up to a higher step n̂ with
  the exact forward kernel (fresh noise, log λ_n̂ = log λ_n + η (log λ_n − log λ_m)) and then
  integrates the ODE from n̂: a stochastic second-order chain that re-noises what the flow got
  wrong, at the same 2K − 1 evaluations.
- `placed_steps`: where the K steps go: uniform in n (the respaced chain), uniform in
  log λ, or EDM's ρ-spacing applied to √λ (∝ the σ of every resolved mode).

Every function is pure (state in, state out) and, with per-sample generators, independent
of the batch it runs in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from skild_phys.process.diffusion import Denoiser, Process, randn, respaced_steps, reverse_chain

SAMPLERS = ("ancestral", "ddim", "heun")
SPACINGS = ("uniform", "log-lambda", "rho")
RHO = 7.0


def check_choice(sampler: str = "ancestral", eta: float = 0.0, spacing: str = "uniform") -> None:
    """One-sentence refusal of a sampler choice no chain can run."""
    from skild_base.errors import InputError

    if sampler not in SAMPLERS:
        raise InputError(f"unknown --sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if spacing not in SPACINGS:
        raise InputError(f"unknown --spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if not 0.0 <= eta <= 1.0:
        raise InputError(f"--eta must be between 0 and 1, got {eta:g}")
    if eta and sampler == "ancestral":
        raise InputError("--eta belongs to --sampler ddim or heun (ancestral is η = 1 of ddim)")


def choice_params(sampler: str = "ancestral", eta: float = 0.0, spacing: str = "uniform") -> dict:
    """The non-default sampler settings (what a store's parameters record; the defaults add nothing)."""
    chosen = {"sampler": sampler, "eta": eta, "spacing": spacing}
    defaults = {"sampler": "ancestral", "eta": 0.0, "spacing": "uniform"}
    return {k: v for k, v in chosen.items() if v != defaults[k]}


def network_evaluations(sampler: str, K: int) -> int:
    """Network evaluations per configuration of a K-step chain."""
    return 2 * K - 1 if sampler == "heun" else K


def placed_steps(process: Process, n_start: int, K: int, spacing: str = "uniform", rho: float = RHO) -> list[int]:
    """K + 1 (at most) strictly decreasing integer steps from n_start to 0."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown step spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if spacing == "uniform" or K >= n_start:
        return respaced_steps(n_start, K)
    lam = process.lam.cpu().numpy()
    lam_hi, lam_lo = lam[n_start], lam[1]
    if spacing == "log-lambda":
        targets = np.exp(np.linspace(np.log(lam_hi), np.log(lam_lo), K))
    else:
        s_hi, s_lo = np.sqrt(lam_hi) ** (1 / rho), np.sqrt(lam_lo) ** (1 / rho)
        targets = (s_hi + np.linspace(0, 1, K) * (s_lo - s_hi)) ** (2 * rho)
    n = np.searchsorted(lam[: n_start + 1], targets)  # λ_n increases with n
    n = np.clip(n, 1, n_start)
    n[0] = n_start
    steps = [int(v) for v in n] + [0]
    out = [steps[0]]
    for v in steps[1:]:  # collisions of neighbouring targets on the integer grid are dropped
        if v < out[-1]:
            out.append(v)
    return out


def _ddim_step(process: Process, X: torch.Tensor, eps_k: torch.Tensor, n: int, m: int, eta: float,
               generator) -> torch.Tensor:
    la_n, la_m = process.log_alpha_bar(n), process.log_alpha_bar(m)
    one_minus_n, one_minus_m = -torch.expm1(la_n), -torch.expm1(la_m)
    frozen = one_minus_n == 0  # a carried mode (k_eff = 0): X_m = X_n
    S0 = process.S0
    X0_hat = process.x0_hat(X, eps_k, n)
    s2 = torch.zeros_like(one_minus_m)
    if eta > 0 and m > 0:
        ratio = -torch.expm1(la_n - la_m)  # 1 − ᾱ_n/ᾱ_m
        s2 = eta**2 * one_minus_m / torch.where(frozen, torch.ones_like(one_minus_n), one_minus_n) * ratio
    c_x0 = torch.exp(la_m / 2)
    c_eps = torch.sqrt(torch.clamp(one_minus_m - s2, min=0.0) * S0)
    X_m = c_x0.to(X) * X0_hat + c_eps.to(X) * eps_k
    if eta > 0 and m > 0:
        X_m = X_m + torch.sqrt(s2 * S0).to(X) * randn(X.shape, generator, dtype=X.dtype, device=X.device)
    return torch.where(frozen.to(X.device), X, X_m)


def _eps_modes(process: Process, eps_hat: Denoiser, X: torch.Tensor, n: int) -> torch.Tensor:
    n_batch = torch.full((X.shape[0],), n, dtype=torch.long, device=X.device)
    return process.basis.forward(eps_hat(process.basis.inverse(X), n_batch))


def _check(process: Process, steps: Sequence[int], to_zero: bool = True) -> list[int]:
    steps = [int(s) for s in steps]
    down = all(a > b for a, b in zip(steps, steps[1:]))
    up = all(a < b for a, b in zip(steps, steps[1:]))
    if len(steps) < 2 or not (down or (up and not to_zero)) or min(steps) < 0 or max(steps) > process.N \
            or (to_zero and steps[-1] != 0):
        raise ValueError(f"steps must run strictly monotonically within 0…N = {process.N}"
                         + (", decreasing to 0" if to_zero else ""))
    return steps


def ddim_chain(process: Process, eps_hat: Denoiser, X_start: torch.Tensor, steps: Sequence[int], generator=None,
               eta: float = 0.0, progress=None) -> torch.Tensor:
    """DDIM from X_start at steps[0] down to 0: deterministic for η = 0, ancestral in law for η = 1."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    steps = _check(process, steps)
    X = X_start
    pairs = list(zip(steps[:-1], steps[1:]))
    for n, m in (pairs if progress is None else progress(pairs)):
        X = _ddim_step(process, X, _eps_modes(process, eps_hat, X, n), n, m, eta, generator)
    return X


def _half_log_snr(la: torch.Tensor) -> torch.Tensor:
    """l = ½ ln(ᾱ/(1−ᾱ)) per mode from log ᾱ (+inf where the mode is carried, ᾱ = 1)."""
    return 0.5 * (la - torch.log(-torch.expm1(la)))


def _ei_step(process: Process, X: torch.Tensor, x0_n: torch.Tensor, n: int, m: int,
             x0_m: torch.Tensor | None = None) -> torch.Tensor:
    """One exponential-integrator step of the ODE from n to m with the data prediction X̂_0.

    With σ̃ = √(1−ᾱ), a = √ᾱ and h = l_m − l_n per mode, the exact solution for X̂_0 constant
    is X_m = (σ̃_m/σ̃_n) X_n + a_m (1 − e^(−h)) X̂_0 (the DDIM step); with X̂_0 linear in l
    between x0_n and x0_m (second order) it gains a_m ((h − 1 + e^(−h))/h) (x0_m − x0_n).
    """
    la_n, la_m = process.log_alpha_bar(n), process.log_alpha_bar(m)
    one_minus_n, one_minus_m = -torch.expm1(la_n), -torch.expm1(la_m)
    frozen = one_minus_n == 0
    if m == 0:
        return torch.where(frozen.to(X.device), X, x0_n)
    safe_n = torch.where(frozen, torch.ones_like(one_minus_n), one_minus_n)
    ratio = torch.sqrt(one_minus_m / safe_n)
    a_m = torch.exp(la_m / 2)
    h = _half_log_snr(la_m) - _half_log_snr(torch.where(frozen, la_m, la_n))
    h = torch.where(frozen, torch.zeros_like(h), h)
    X_m = ratio.to(X) * X + (a_m * -torch.expm1(-h)).to(X) * x0_n
    if x0_m is not None:
        small = h.abs() < 1e-6
        w = torch.where(small, h / 2, (h - 1 + torch.exp(-h)) / torch.where(small, torch.ones_like(h), h))
        X_m = X_m + (a_m * w).to(X) * (x0_m - x0_n)
    return torch.where(frozen.to(X.device), X, X_m)


def _x0_modes(process: Process, eps_hat: Denoiser, X: torch.Tensor, n: int) -> torch.Tensor:
    return process.x0_hat(X, _eps_modes(process, eps_hat, X, n), n)


def heun_ode(process: Process, eps_hat: Denoiser, X_start: torch.Tensor, steps: Sequence[int],
             progress=None, churn: float = 0.0, generator=None) -> torch.Tensor:
    """The probability-flow ODE from steps[0] to steps[-1] (either direction), second order.

    Heun's predictor–corrector (EDM Alg. 1) in the exponential-integrator form: the predictor
    is the DDIM step, the corrector re-takes the step with X̂_0 interpolated linearly in the
    half-log-SNR between its values at both ends.  Down to n = 0 the last step is first order
    (X̂_0 is not evaluated on clean data); upwards from n ≥ 1 the same scheme encodes a state
    into its latent at a higher step (reversibility).  `churn` > 0 (downwards only, see
    `heun_chain`) re-noises each step but the first and the last before it is taken.
    """
    steps = _check(process, steps, to_zero=churn > 0)
    X = X_start
    pairs = list(zip(steps[:-1], steps[1:]))
    for i, (n, m) in enumerate(pairs if progress is None else progress(pairs)):
        if churn and 0 < i and m > 0:  # the start is the exact marginal; the last step returns X̂_0, a mean
            n_hat = churned_step(process, n, m, churn)
            if n_hat > n:
                X = process.kernel(X, n, n_hat, randn(X.shape, generator, dtype=X.dtype, device=X.device))
                n = n_hat
        x0_n = _x0_modes(process, eps_hat, X, n)
        X_pred = _ei_step(process, X, x0_n, n, m)
        if m == 0:
            return X_pred
        X = _ei_step(process, X, x0_n, n, m, _x0_modes(process, eps_hat, X_pred, m))
    return X


def churned_step(process: Process, n: int, m: int, churn: float) -> int:
    """Where a churned step from n to m starts: the n̂ ≥ n with log λ_n̂ ≈ log λ_n + churn (log λ_n − log λ_m).

    On the integer grid the network was trained on, at most N; the churn is a fraction of the
    step measured in log λ (EDM's σ̂ = (1 + γ) σ per mode becomes one shift of the one step index).
    """
    if churn == 0:
        return n
    with np.errstate(divide="ignore"):  # λ_0 = 0
        log_lam = np.log(process.lam.cpu().numpy())
    target = log_lam[n] + churn * (log_lam[n] - log_lam[max(m, 1)])
    return int(np.clip(np.searchsorted(log_lam, target - 1e-12), n, process.N))


def heun_chain(process: Process, eps_hat: Denoiser, X_start: torch.Tensor, steps: Sequence[int], generator=None,
               churn: float = 0.0, progress=None) -> torch.Tensor:
    """The probability-flow ODE from X_start at steps[0] down to 0: deterministic, or churned (η > 0).

    With churn > 0, every step n → m but the first and the last starts by pushing the state up to
    n̂ = churned_step(n, m) with the exact forward kernel q(X_n̂ | X_n) (noise from `generator`),
    then takes the Heun step n̂ → m: X̂_0 is evaluated afresh at n̂ instead of at n, so the
    chain still costs 2K − 1 network evaluations.  The forward kernel leaves the marginals of
    the exact process unchanged; what the noise replaces is the flow's own error.  The first
    step starts from the exact marginal, and the last (into n = 0) returns X̂_0, the posterior
    mean: churning before it would leave the modes it re-noises at their mean, a smoothed field.
    """
    if not 0.0 <= churn <= 1.0:
        raise ValueError(f"churn must be in [0, 1], got {churn}")
    return heun_ode(process, eps_hat, X_start, _check(process, steps), progress, churn, generator)


def sample_chain(process: Process, eps_hat: Denoiser, X_start: torch.Tensor, steps: Sequence[int], generator,
                 sampler: str = "ancestral", eta: float = 0.0, variance: str = "posterior") -> torch.Tensor:
    """One entry point: the named sampler from X_start along `steps`."""
    if sampler == "ancestral":
        return reverse_chain(process, eps_hat, X_start, steps, generator, variance=variance)
    if sampler == "ddim":
        return ddim_chain(process, eps_hat, X_start, steps, generator, eta=eta)
    if sampler == "heun":
        return heun_chain(process, eps_hat, X_start, steps, generator, churn=eta)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
