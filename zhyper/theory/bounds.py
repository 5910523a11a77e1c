"""Upper bounds on the empirical Rademacher complexity, with every constant written out.

Notation: N samples, σ ∈ {±1}^N uniform, R̂_S(H) = E_σ sup_{h∈H} (1/N) Σ_i σ_i h(x_i).

For a linear class h(x) = <θ, φ(x)> with θ in a norm ball of radius ρ, the sup is the dual norm
(exact, see ``zhyper.theory.classes``) and Jensen's inequality E‖v‖ <= sqrt(E‖v‖²) gives
the data-dependent bounds below. They hold for every data set, no distributional assumption:

    ℓ2 ball      R̂ <= (ρ/N) · sqrt(Σ_i ‖φ(x_i)‖²)                         (constant 1)
    ℓ∞ ball      R̂ <= (ρ/N) · Σ_j sqrt(Σ_i φ_j(x_i)²)    (dual ℓ1, coordinate-wise Jensen)
    finite class R̂ <= max_c ‖F_c‖_2 · sqrt(2 ln C) / N     (Massart's lemma, C >= 2; 0 if C = 1)

where F_c = (h_c(x_1), ..., h_c(x_N)). The paper's asymptotic rates are given as rates only
(their constants are not stated in the paper): ``paper_rate_diag`` = sqrt(r/N) and
``paper_rate_full`` = sqrt(r (d_in + d_out) / N).
"""

from __future__ import annotations

import math

import torch


def l2_ball_bound(features: torch.Tensor, radius: float) -> float:
    """(ρ/N) sqrt(Σ_i ‖φ_i‖²) for features φ (N, k); bounds R̂ of {<θ, φ>: ‖θ‖_2 <= ρ}."""
    n = features.shape[0]
    return float(radius * features.double().pow(2).sum().sqrt() / n)


def linf_ball_bound(features: torch.Tensor, radius: float) -> float:
    """(ρ/N) Σ_j sqrt(Σ_i φ_ij²) for features φ (N, k); bounds R̂ of {<θ, φ>: ‖θ‖_∞ <= ρ}."""
    n = features.shape[0]
    return float(radius * features.double().pow(2).sum(0).sqrt().sum() / n)


def massart_bound(outputs: torch.Tensor) -> float:
    """Massart's lemma for a finite class: outputs (C, N) or (C, N, k) -> max_c ‖F_c‖ sqrt(2 ln C) / N."""
    c, n = outputs.shape[0], outputs.shape[1]
    if c == 1:
        return 0.0  # one function: E_σ (1/N) Σ σ_i h(x_i) = 0 exactly
    norms = outputs.double().reshape(c, -1).norm(dim=1)
    return float(norms.max() * math.sqrt(2.0 * math.log(c)) / n)


def paper_rate_diag(n: int, rank: int) -> float:
    """The paper's rate for the diagonal class, sqrt(r / N) (constant 1; the paper states O(·))."""
    return math.sqrt(rank / n)


def paper_rate_full(n: int, rank: int, d_in: int, d_out: int) -> float:
    """The paper's rate for the full class, sqrt(r (d_in + d_out) / N) (constant 1; the paper states O(·))."""
    return math.sqrt(rank * (d_in + d_out) / n)
