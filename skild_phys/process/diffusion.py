"""The SKILD diffusion process in a spectral basis: marginal, kernel, posterior, sampler, loss (SPEC §4).

Everything is per mode: coefficients X (B, C, H, W) are multiplied by real factors that
depend on k_eff² = max(|k|², k_c²) and the step, with S0 (H, W) or (C, H, W) the data
spectrum.  Coefficients of the process are computed in float64 from log ᾱ = −k_eff² λ
(expm1 for 1 − ᾱ, so nearly resolved modes keep full precision) and cast to X's dtype.

Denoiser interface: eps_hat(x, n) takes pixels x = basis.inverse(X_n) (B, C, H, W) and the
step n as a LongTensor (B,) on the original 0…N grid (also when respaced), and returns the
noise estimate in pixel space; the process compares basis.forward(ε̂) with ε, which is
white in the basis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from skild_phys.process.basis import Basis
from skild_phys.process.schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SQRT_ALPHA_BAR_FLOOR = 1e-6  # floor on √ᾱ in the x̂0 inversion (paper §4.2, official abar_cutoff)


def per_sample_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One torch.Generator per sample, seeded with the given integers."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _draws(draw, shape, generator, dtype, device) -> torch.Tensor:
    """`draw` (torch.randn or torch.rand) of `shape` from one generator, or one generator per sample."""
    if isinstance(generator, torch.Generator) or generator is None:
        dev = device if generator is None else generator.device
        return draw(shape, generator=generator, dtype=dtype, device=dev).to(device or dev)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} samples")
    out = torch.stack([draw(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device) for g in generator])
    return out if device is None else out.to(device)


def randn(shape, generator, dtype=torch.float64, device=None) -> torch.Tensor:
    """Standard normal noise of `shape` from one generator, or one generator per sample (shape[0]).

    With a list of per-sample generators, sample i's noise is drawn from generator i alone,
    so a sample's value does not depend on the batch it is drawn in.
    """
    return _draws(torch.randn, shape, generator, dtype, device)


def rand(shape, generator, dtype=torch.float64, device=None) -> torch.Tensor:
    """Uniform [0, 1) numbers of `shape`, from one generator or one per sample (shape[0]), as `randn`."""
    return _draws(torch.rand, shape, generator, dtype, device)


def respaced_steps(n_start: int, K: int) -> list[int]:
    """K + 1 decreasing steps from n_start to 0, evenly spaced on the integer grid (K capped at n_start)."""
    if n_start < 1 or K < 1:
        raise ValueError("need n_start ≥ 1 and K ≥ 1")
    grid = np.rint(np.linspace(n_start, 0, min(K, n_start) + 1)).astype(int)
    return [int(n) for n in grid]


class Process:
    """SKILD forward process on one grid: the basis, the schedule's λ_n table and the spectrum S0."""

    def __init__(self, basis: Basis, schedule: Schedule, S0):
        self.basis = basis
        self.schedule = schedule
        self.N = schedule.N
        self.k_eff2 = schedule.k_eff2(basis.k)
        self.lam = torch.as_tensor(schedule.lam_n(), dtype=torch.float64)
        S0 = torch.as_tensor(S0, dtype=torch.float64)
        if tuple(S0.shape[-2:]) != (basis.H, basis.W) or S0.ndim not in (2, 3):
            raise ValueError(f"S0 of shape {tuple(S0.shape)} must be (H, W) or (C, H, W) on the grid {(basis.H, basis.W)}")
        if not torch.all(S0 > 0):
            raise ValueError("S0 must be positive in every mode")
        self.S0 = S0

    def to(self, device) -> "Process":
        """The same process with its float64 tables on `device`."""
        other = object.__new__(Process)
        other.__dict__.update(self.__dict__)
        other.k_eff2, other.lam, other.S0 = (t.to(device) for t in (self.k_eff2, self.lam, self.S0))
        return other

    # ---- per-mode factors, float64 ---------------------------------------------------- #
    def log_alpha_bar(self, n) -> torch.Tensor:
        """log ᾱ_n = −k_eff² λ_n: shape (H, W) for an int n, (B, 1, H, W) for n of shape (B,)."""
        if isinstance(n, torch.Tensor) and n.ndim == 1:
            return -self.k_eff2 * self.lam[n.to(self.lam.device)].view(-1, 1, 1, 1)
        return -self.k_eff2 * self.lam[int(n)]

    def alpha_bar(self, n) -> torch.Tensor:
        """ᾱ_n = exp(−k_eff² λ_n)."""
        return torch.exp(self.log_alpha_bar(n))

    def posterior_coefficients(self, m, n) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(C1, C2, var) of q(X_m | X_n, X_0) = N(C1 X_0 + C2 X_n, var), m < n.

        With α = ᾱ_n/ᾱ_m, β = 1 − α (one step: m = n − 1):
        C1 = √ᾱ_m β/(1−ᾱ_n), C2 = √α (1−ᾱ_m)/(1−ᾱ_n), var = S0 β (1−ᾱ_m)/(1−ᾱ_n).
        Where ᾱ_n = 1 exactly (k_eff = 0, the carried DC mode) X_m = X_n: C1 = 0, C2 = 1, var = 0.
        """
        la_m, la_n = self.log_alpha_bar(m), self.log_alpha_bar(n)
        one_minus_m, one_minus_n = -torch.expm1(la_m), -torch.expm1(la_n)
        beta = -torch.expm1(la_n - la_m)
        frozen = one_minus_n == 0
        denom = torch.where(frozen, torch.ones_like(one_minus_n), one_minus_n)
        C1 = torch.where(frozen, 0.0, torch.exp(la_m / 2) * beta / denom)
        C2 = torch.where(frozen, 1.0, torch.exp((la_n - la_m) / 2) * one_minus_m / denom)
        var = torch.where(frozen, 0.0, self.S0 * beta * one_minus_m / denom)
        return C1, C2, var

    # ---- forward process ------------------------------------------------------------- #
    def marginal(self, X0: torch.Tensor, n, eps: torch.Tensor) -> torch.Tensor:
        """X_n = √ᾱ_n X_0 + √((1−ᾱ_n) S0) ε."""
        la = self.log_alpha_bar(n)
        return torch.exp(la / 2).to(X0) * X0 + torch.sqrt(-torch.expm1(la) * self.S0).to(X0) * eps

    def kernel(self, X_m: torch.Tensor, m, n, eps: torch.Tensor) -> torch.Tensor:
        """X_n given X_m (m < n): √α X_m + √((1−α) S0) ε with α = ᾱ_n/ᾱ_m."""
        la = self.log_alpha_bar(n) - self.log_alpha_bar(m)
        return torch.exp(la / 2).to(X_m) * X_m + torch.sqrt(-torch.expm1(la) * self.S0).to(X_m) * eps

    def x0_hat(self, X_n: torch.Tensor, eps_hat: torch.Tensor, n) -> torch.Tensor:
        """X̂_0 = (X_n − √((1−ᾱ_n) S0) ε̂) / max(√ᾱ_n, 1e−6); ε̂ in the basis."""
        la = self.log_alpha_bar(n)
        noise_std = torch.sqrt(-torch.expm1(la) * self.S0).to(X_n)
        sqrt_ab = torch.clamp(torch.exp(la / 2), min=SQRT_ALPHA_BAR_FLOOR).to(X_n)
        return (X_n - noise_std * eps_hat) / sqrt_ab

    def prior(self, shape, generator, dtype=torch.float64, device=None) -> torch.Tensor:
        """Generation start state X_N = √((1−ᾱ_N) S0) z (the data term √ᾱ_N X_0 dropped)."""
        z = randn(shape, generator, dtype=dtype, device=device)
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(self.N)) * self.S0).to(z) * z

    # ---- training --------------------------------------------------------------------- #
    def noised(self, x0: torch.Tensor, generator, n: torch.Tensor | None = None):
        """(n, ε, X_0, X_n) of one training batch: n ~ U{1…N} unless given, ε white in the basis.

        With a list of per-sample generators, each sample's n and ε come from its own
        generator.  Every loss draws through here, so losses of different weighting see the
        same (n, ε) for the same generator state.
        """
        B = x0.shape[0]
        if n is None:
            if isinstance(generator, torch.Generator):
                n = torch.randint(1, self.N + 1, (B,), generator=generator, device=generator.device)
            else:
                n = torch.cat([torch.randint(1, self.N + 1, (1,), generator=g, device=g.device) for g in generator])
        n = n.to(x0.device)
        eps = randn(x0.shape, generator, dtype=x0.dtype, device=x0.device)
        X0 = self.basis.forward(x0)
        return n, eps, X0, self.marginal(X0, n, eps)

    def loss(self, eps_hat: Denoiser, x0: torch.Tensor, generator, n: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample ε-prediction loss: mean over modes of (basis.forward(ε̂) − ε)², n ~ U{1…N}.

        Returns shape (B,); the draws are `noised`'s.
        """
        n, eps, _, X_n = self.noised(x0, generator, n)
        eps_hat_k = self.basis.forward(eps_hat(self.basis.inverse(X_n), n))
        return (eps_hat_k - eps).square().reshape(x0.shape[0], -1).mean(dim=1)


def gaussian_denoiser(process: Process) -> Denoiser:
    """ε̂(x_n, n) = E[ε | X_n] for Gaussian data X_0 ~ N(0, S0): √(1−ᾱ_n) X_n / √S0 per mode.

    The exact denoiser of the data the process's spectrum describes; with it, the reverse
    chain samples the Gaussian field of spectrum S0 (generation) or its Gaussian conditional
    given the resolved modes (super-resolution): the floor of what the spectrum alone explains.
    """

    def eps_hat(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        la = process.log_alpha_bar(n)
        X = process.basis.forward(x)
        return process.basis.inverse(torch.sqrt(-torch.expm1(la)).to(x) * X / torch.sqrt(process.S0).to(x))

    return eps_hat


def forward_from_step(variance: str, N: int) -> int:
    """The largest step n whose reverse step takes the forward variance: N for "forward", -1 for
    "posterior", S for "split:S" (0 <= S <= N); one sentence for anything else."""
    if variance == "forward":
        return N
    if variance == "posterior":
        return -1
    kind, _, value = variance.partition(":")
    if kind == "split" and value.isdigit() and int(value) <= N:
        return int(value)
    raise ValueError(f"variance must be 'posterior', 'forward' or 'split:S' with 0 <= S <= {N}, got {variance!r}")


def reverse_chain(process: Process, eps_hat: Denoiser, X_start: torch.Tensor, steps: Sequence[int],
                  generator, variance: str = "posterior", progress: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling from X_start at steps[0] down the decreasing steps to steps[-1] = 0.

    Generation starts from `process.prior` at N, super-resolution from the forward marginal
    of the (embedded) low-resolution input at n0; respacing is a shorter `steps` list.
    variance="posterior" adds the paper's q(X_m | X_n, X_0) variance S0 β (1−ᾱ_m)/(1−ᾱ_n),
    zero on the last step (m = 0); variance="forward" adds S0 β on every step, the exact
    reverse kernel for Gaussian data: with the posterior-mean denoiser it keeps Var X = S0
    for any respacing, while "posterior" loses variance at high k when steps are few
    (the two DDPM choices σ² = β̃, β of Ho et al. 2020 §3.2).  variance="split:S" takes the
    posterior variance on the steps from n > S and the forward one from n <= S: a generation
    chain as the coarse chain down to S followed by the super-resolution chain from S = n0
    (docs/results/samplers.md, "Generation from noise").
    """
    forward_from = forward_from_step(variance, process.N)
    steps = [int(s) for s in steps]
    if steps[-1] != 0 or any(a <= b for a, b in zip(steps, steps[1:])) or steps[0] > process.N:
        raise ValueError(f"steps must decrease strictly from at most N = {process.N} to 0")
    X = X_start
    B = X.shape[0]
    pairs = list(zip(steps[:-1], steps[1:]))
    for n, m in (pairs if progress is None else progress(pairs)):
        n_batch = torch.full((B,), n, dtype=torch.long, device=X.device)
        eps_k = process.basis.forward(eps_hat(process.basis.inverse(X), n_batch))
        # Algorithm: X̂_0 from ε̂, then the Gaussian posterior q(X_m | X_n, X̂_0).
        X0_hat = process.x0_hat(X, eps_k, n)
        C1, C2, var = process.posterior_coefficients(m, n)
        forward = n <= forward_from
        if forward:
            var = process.S0 * -torch.expm1(process.log_alpha_bar(n) - process.log_alpha_bar(m))
        X = C1.to(X) * X0_hat + C2.to(X) * X
        if forward or m > 0:  # the posterior variance vanishes on the final step
            X = X + torch.sqrt(var).to(X) * randn(X.shape, generator, dtype=X.dtype, device=X.device)
    return X
