"""Estimators of the empirical Rademacher complexity R̂_S(H) = E_σ sup_h (1/N) Σ_i σ_i h(x_i).

* ``rademacher(cls, x)``: the class's exact sup (a closed form) for S σ draws at once, averaged,
  with a normal-approximation confidence interval over the draws. With ``sigma=all_sigmas(N)``
  (every sign vector, N <= 20) the mean is R̂ itself, not an estimate.
* ``monte_carlo_rademacher(cls, x)``: for any parametrised class (``init_params``, ``outputs``,
  ``project_``, ``geometry``), the sup is searched by projected steepest ascent with restarts,
  batched over (σ draw, restart). Every iterate is feasible, so the best value found is a lower
  bound of the sup and the estimate is an under-estimate of R̂ (``Estimate.lower_bound``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from ._checks import check_inputs


@dataclass(frozen=True)
class Estimate:
    """Mean of the per-draw sups with a confidence interval over σ draws.

    exact: every σ was enumerated and every sup computed exactly, so ``value`` is R̂ itself.
    lower_bound: the sups were found by search (feasible points), so ``value`` under-estimates R̂.
    """

    value: float
    std: float
    ci_low: float
    ci_high: float
    n_draws: int
    confidence: float
    exact: bool = False
    lower_bound: bool = False

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarise(values: torch.Tensor, confidence: float = 0.95, exact: bool = False,
              lower_bound: bool = False) -> Estimate:
    """Estimate from per-draw sups (S,): mean ± z·std/sqrt(S) (0 width when exact)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    v = values.detach().double()
    s = v.numel()
    mean = float(v.mean())
    std = float(v.std()) if s > 1 else 0.0
    half = 0.0 if exact else NormalDist().inv_cdf((1 + confidence) / 2) * std / math.sqrt(s)
    return Estimate(mean, std, mean - half, mean + half, s, confidence, exact, lower_bound)


def rademacher_signs(shape: tuple[int, ...], generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Independent uniform ±1 entries of the given shape."""
    return torch.randint(0, 2, shape, generator=generator, dtype=dtype).mul_(2).sub_(1)


def all_sigmas(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every σ ∈ {±1}^n: (2^n, n). Limited to n <= 20."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
        raise ValueError(f"all_sigmas enumerates 2^n sign vectors; n must be an int in [1, 20], got {n!r}")
    return torch.tensor(list(itertools.product((1.0, -1.0), repeat=n)), dtype=dtype)


def _check_draws(n_draws) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws <= 0:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    return n_draws


def rademacher(cls, x: torch.Tensor, n_draws: int = 1000, seed: int = 0, sigma: torch.Tensor | None = None,
               confidence: float = 0.95, max_elements: int = 1 << 26) -> Estimate:
    """R̂ of ``cls`` on inputs x (N, d_in) from its closed-form sup, batched over σ draws.

    sigma: explicit draws (S, N) or (S, N, d_out); otherwise ``n_draws`` are drawn from ``seed``
    in chunks of at most ``max_elements`` σ entries (one matmul per chunk, no loop per draw).
    """
    x = check_inputs(x, cls.in_features)
    shape = cls.sigma_shape(x.shape[0])
    if sigma is not None:
        values = cls.sup(sigma, x)
        exact = cls.sup_is_exact and _is_full_enumeration(sigma)
        return summarise(values, confidence, exact=exact, lower_bound=not cls.sup_is_exact)
    n_draws = _check_draws(n_draws)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, max_elements // math.prod(shape))
    values = []
    for start in range(0, n_draws, chunk):
        s = min(chunk, n_draws - start)
        values.append(cls.sup(rademacher_signs((s, *shape), gen, x.dtype), x))
    return summarise(torch.cat(values), confidence, lower_bound=not cls.sup_is_exact)


def _is_full_enumeration(sigma: torch.Tensor) -> bool:
    flat = sigma.reshape(sigma.shape[0], -1)
    k = flat.shape[1]
    return k <= 20 and flat.shape[0] == 2 ** k and torch.unique(flat, dim=0).shape[0] == 2 ** k


def monte_carlo_rademacher(cls, x: torch.Tensor, n_draws: int = 32, restarts: int = 4, steps: int = 200,
                           lr: float = 0.5, seed: int = 0, sigma: torch.Tensor | None = None,
                           confidence: float = 0.95, dtype: torch.dtype = torch.float64) -> Estimate:
    """R̂ with the sup found by projected steepest ascent (a lower bound of each sup).

    The batch is (draws × restarts) parameter sets; each step moves every parameter tensor by
    lr_t · scale along its steepest-ascent direction for its geometry (normalised gradient for
    an ℓ2 ball, sign of the gradient for a box), lr_t = lr / sqrt(1 + t), then projects.
    """
    x = check_inputs(x, cls.in_features).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    if sigma is None:
        sigma = rademacher_signs((_check_draws(n_draws), *cls.sigma_shape(x.shape[0])), gen, dtype)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts <= 0:
        raise ValueError(f"restarts must be a positive int, got {restarts!r}")
    s = sigma.shape[0]
    sig = sigma.to(dtype).repeat_interleave(restarts, 0)  # (S·R, N[, d_out])
    params = [p.requires_grad_(True) for p in cls.init_params(s * restarts, gen, dtype)]
    geometry = cls.geometry()
    n = x.shape[0]
    best = torch.full((s * restarts,), -float("inf"), dtype=dtype)
    for t in range(steps + 1):
        value = (sig * cls.outputs(params, x)).reshape(s * restarts, -1).sum(1) / n  # (S·R,)
        best = torch.maximum(best, value.detach())
        if t == steps:
            break
        grads = torch.autograd.grad(value.sum(), params)
        step = lr / math.sqrt(1 + t)
        with torch.no_grad():
            for p, g, (kind, scale) in zip(params, grads, geometry):
                if kind == "l2":
                    norm = g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (g.dim() - 1)))
                    p.add_(g / norm, alpha=step * scale)
                else:
                    p.add_(torch.sign(g), alpha=step * scale)
            cls.project_(params)
    return summarise(best.view(s, restarts).amax(1), confidence, lower_bound=True)
