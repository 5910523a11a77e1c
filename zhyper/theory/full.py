"""The full (Text-to-LoRA-style) class: both factors free, ΔW = s · B_c · A_c.

    FullClass(norm="frobenius"):  {x -> uᵀ s B A x : ‖A‖_F <= ρ_A, ‖B‖_F <= ρ_B}
    FullClass(norm="entrywise"):  {x -> uᵀ s B A x : max|A_jl| <= a, max|B_kj| <= b}

with A (r, d_in), B (d_out, r). The class is bilinear in (A, B), hence not convex, yet its sup
has a closed form in three of the four cases. Write g = (1/N) Σ_i σ_i x_i (d_in,) for the
scalar output and G = (1/N) Σ_i σ_i x_iᵀ (d_out, d_in) with σ_i ∈ {±1}^{d_out} for the vector
output (scalar: G = u gᵀ). Then sup (1/N) Σ σ_i h(x_i) = s · sup_{A,B} <B A, G>:

* Frobenius: {BA : ‖A‖_F <= ρ_A, ‖B‖_F <= ρ_B} is the nuclear-norm ball of radius ρ_A ρ_B
  restricted to rank <= r (‖BA‖_* <= ‖B‖_F ‖A‖_F), whose extreme points are rank one, so
  sup = s ρ_A ρ_B ‖G‖_2 (spectral norm) for every r >= 1. Scalar: s ρ_A ρ_B ‖u‖_2 ‖g‖_2.
  The value does not depend on r: Frobenius-bounded factors do not "pay" for the rank.
* Entry-wise: the problem separates over the r rank-one terms B_:,j A_j,:, each a box
  bilinear form, so sup = s r a b ‖G‖_{∞→1} with ‖G‖_{∞→1} = max_{β∈±1^{d_out}, α∈±1^{d_in}} βᵀGα.
  Scalar: exactly s r a b ‖u‖_1 ‖g‖_1. Vector: ‖G‖_{∞→1} is NP-hard in general; it is computed
  exactly by enumerating the sign vectors of the smaller side when that side has at most
  ``exact_limit`` entries, and otherwise by alternating sign ascent with restarts, which returns
  a feasible value: a lower bound of the sup, hence an under-estimate of R̂ (``sup_is_exact``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ._checks import ReadoutShape, check_inputs, check_radius, check_readout, check_sigma
from .bounds import l2_ball_bound, linf_ball_bound

FULL_NORMS = ("frobenius", "entrywise")


def sign_vectors(m: int, dtype=torch.float32) -> torch.Tensor:
    """All ±1 vectors of length m with first entry +1 (the other half are negatives): (2^(m-1), m)."""
    rows = [(1.0, *rest) for rest in itertools.product((1.0, -1.0), repeat=m - 1)]
    return torch.tensor(rows, dtype=dtype)


def inf_to_one_norm(g: torch.Tensor, exact_limit: int = 12, restarts: int = 8, iters: int = 50,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
    """‖G‖_{∞→1} = max_{β, α ∈ ±1} βᵀ G α for a batch G (S, m, n) -> ((S,), exact).

    Exact by enumeration when min(m, n) <= exact_limit; otherwise the best of ``restarts``
    alternating sign ascents (α = sign(Gᵀβ), β = sign(Gα)), a lower bound.
    """
    if min(g.shape[1], g.shape[2]) <= exact_limit:
        if g.shape[1] > g.shape[2]:
            g = g.transpose(1, 2)
        signs = sign_vectors(g.shape[1], g.dtype)  # (K, m)
        chunk = max(1, (1 << 24) // (signs.shape[0] * g.shape[2]))
        out = [(signs @ part).abs().sum(-1).amax(-1) for part in g.split(chunk)]  # (K, m)@(s, m, n)
        return torch.cat(out), True
    s, m, _ = g.shape
    beta = torch.randint(0, 2, (restarts, s, m), generator=generator).to(g.dtype) * 2 - 1
    best = torch.full((s,), -float("inf"), dtype=g.dtype)
    for _ in range(iters):
        alpha = torch.sign(torch.einsum("rsm,smn->rsn", beta, g)).clamp_min(0) * 2 - 1  # sign, 0 -> +1
        gb = torch.einsum("smn,rsn->rsm", g, alpha)
        new_beta = torch.sign(gb).clamp_min(0) * 2 - 1
        best = torch.maximum(best, gb.abs().sum(-1).amax(0))
        if torch.equal(new_beta, beta):
            break
        beta = new_beta
    return best, False


@dataclass(eq=False)
class FullClass(ReadoutShape):
    """Both factors free: A (r, d_in), B (d_out, r) in Frobenius balls or entry-wise boxes.

    radius_a, radius_b: ρ_A, ρ_B (Frobenius) or the box half-widths a, b (entry-wise).
    readout u (d_out,) or None (vector output, σ per output).
    """

    rank: int
    in_features: int
    out_features: int
    radius_a: float = 1.0
    radius_b: float = 1.0
    norm: str = "frobenius"
    scaling: float = 1.0
    readout: torch.Tensor | None = None
    exact_limit: int = 12

    def __post_init__(self) -> None:
        for name in ("rank", "in_features", "out_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.radius_a = check_radius("radius_a", self.radius_a)
        self.radius_b = check_radius("radius_b", self.radius_b)
        self.scaling = check_radius("scaling", self.scaling)
        if self.norm not in FULL_NORMS:
            raise ValueError(f"norm must be one of {FULL_NORMS}, got {self.norm!r}")
        self.readout = check_readout(self.readout, self.out_features)

    @property
    def sup_is_exact(self) -> bool:
        return (self.readout is not None or self.norm == "frobenius"
                or min(self.in_features, self.out_features) <= self.exact_limit)

    @property
    def _factor(self) -> float:
        """s ρ_A ρ_B (Frobenius) or s r a b (entry-wise)."""
        c = self.scaling * self.radius_a * self.radius_b
        return c if self.norm == "frobenius" else c * self.rank

    def sup(self, sigma: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """sup_{A,B} (1/N) Σ σ_i h(x_i) per draw: sigma (S, N) or (S, N, d_out) -> (S,)."""
        x = check_inputs(x, self.in_features)
        n = x.shape[0]
        sigma = check_sigma(sigma, self.sigma_shape(n)).to(x.dtype)
        if self.readout is not None:
            g = sigma @ x / n  # (S, d_in): one (S, N) @ (N, d_in) matmul
            u = self.readout.to(x.dtype)
            if self.norm == "frobenius":
                return self._factor * u.norm() * g.norm(dim=1)
            return self._factor * u.abs().sum() * g.abs().sum(1)
        g = sigma.transpose(1, 2) @ x / n  # (S, d_out, d_in)
        if self.norm == "frobenius":
            return self._factor * torch.linalg.matrix_norm(g, ord=2)
        if generator is None:  # the searched cut norm is reproducible by default
            generator = torch.Generator().manual_seed(0)
        values, _ = inf_to_one_norm(g, self.exact_limit, generator=generator)
        return self._factor * values

    def bound(self, x: torch.Tensor) -> float:
        """Jensen with ‖G‖_2 <= ‖G‖_F and ‖G‖_{∞→1} <= Σ_kl |G_kl|.

        Frobenius: s ρ_A ρ_B ‖u‖_2 sqrt(Σ_i ‖x_i‖²)/N (scalar), s ρ_A ρ_B sqrt(d_out Σ_i ‖x_i‖²)/N (vector).
        Entry-wise: s r a b ‖u‖_1 Σ_l sqrt(Σ_i x_il²)/N (scalar), d_out in place of ‖u‖_1 (vector).
        """
        x = check_inputs(x, self.in_features)
        if self.norm == "frobenius":
            scale = float(self.readout.norm()) if self.readout is not None else self.out_features ** 0.5
            return self._factor * scale * l2_ball_bound(x, 1.0)
        scale = float(self.readout.abs().sum()) if self.readout is not None else float(self.out_features)
        return self._factor * scale * linf_ball_bound(x, 1.0)

    # ---- parametrised view (Monte-Carlo estimator)
    def geometry(self) -> list[tuple[str, float]]:
        kind = "l2" if self.norm == "frobenius" else "linf"
        return [(kind, self.radius_a), (kind, self.radius_b)]

    def init_params(self, batch: int, generator: torch.Generator, dtype=torch.float32) -> list[torch.Tensor]:
        a = torch.randn(batch, self.rank, self.in_features, generator=generator, dtype=dtype)
        b = torch.randn(batch, self.out_features, self.rank, generator=generator, dtype=dtype)
        return self.project_([a, b])

    def project_(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, radius in zip(params, (self.radius_a, self.radius_b)):
                if self.norm == "frobenius":
                    norms = p.flatten(1).norm(dim=1).clamp_min(1e-30)
                    p.mul_((radius / norms).clamp(max=1.0).view(-1, 1, 1))
                else:
                    p.clamp_(-radius, radius)
        return params

    def outputs(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """h_{A,B}(x_i) for a batch A (b, r, d_in), B (b, d_out, r): (b, N) scalar or (b, N, d_out)."""
        a, b = params
        x = check_inputs(x, self.in_features).to(a.dtype)
        h = self.scaling * (x.unsqueeze(0) @ a.transpose(1, 2))  # (b, N, r)
        if self.readout is not None:
            bu = b.transpose(1, 2) @ self.readout.to(a.dtype).unsqueeze(-1)  # (b, r, 1) = Bᵀu
            return (h @ bu).squeeze(-1)
        return h @ b.transpose(1, 2)
