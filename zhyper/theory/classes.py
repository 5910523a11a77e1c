"""Zhyper's shared-factor hypothesis classes of one adapted layer, with exact closed-form sups.

A layer's update is ΔW = s · B · M · A with fixed shared factors A (r, d_in), B (d_out, r),
the LoRA scaling s, and the modulation M = diag(z) (``DiagClass``) or Z (``SquareClass``).
Two output variants:

* scalar (``readout=u``, u of shape (d_out,)): h(x) = uᵀ ΔW x; σ has shape (S, N);
* vector (``readout=None``): the sum over outputs, Σ_k σ_ik (ΔW x_i)_k, with an independent
  σ_ik per sample and output (Maurer's vector Rademacher complexity); σ has shape (S, N, d_out).

Writing a_i = A x_i (r,), b = Bᵀu (r,) and, for one σ draw, T_i = Bᵀσ_i (r,) (vector case)::

    diag   scalar  (1/N) Σ σ_i h(x_i) = <z, g>,  g = (s/N) Σ_i σ_i (b ⊙ a_i)
           vector                     = <z, g>,  g = (s/N) Σ_i T_i ⊙ a_i
           sup over ‖z‖_2 <= ρ  = ρ ‖g‖_2 ;  over ‖z‖_∞ <= ρ = ρ ‖g‖_1          (dual norms)
    square scalar                     = <Z, G>,  G = (s/N) b (Σ_i σ_i a_i)ᵀ      (rank one)
           vector                     = <Z, G>,  G = (s/N) Σ_i T_i a_iᵀ
           sup over ‖Z‖_F <= ρ  = ρ ‖G‖_F ;  over ‖Z‖_2 <= ρ = ρ ‖G‖_*  (nuclear, dual of spectral)

For the scalar square class G has rank one, so the Frobenius and the spectral balls give the
same value. Inclusions with matching radii: diag(ℓ2, ρ) ⊆ square(Frobenius, ρ) and
diag(ℓ∞, ρ) ⊆ square(spectral, ρ), since ‖diag z‖_F = ‖z‖_2 and ‖diag z‖_2 = ‖z‖_∞.
Every computation is batched over σ draws: one (S, N) @ (N, r) matmul (scalar) or
(S·N, d_out) @ (d_out, r) (vector); no Python loop over σ.

Each class is also a parametrised class for the Monte-Carlo estimator (``init_params``,
``outputs``, ``project_``, ``geometry``), which is how the tests compare the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._checks import ReadoutShape, check_inputs, check_matrix, check_radius, check_readout, check_sigma
from .bounds import l2_ball_bound, linf_ball_bound

DIAG_NORMS = ("l2", "linf")
SQUARE_NORMS = ("frobenius", "spectral")


@dataclass(eq=False)
class _SharedFactors(ReadoutShape):
    """Fields and helpers common to the diag and square classes (A, B fixed); a subclass names its
    ``NORMS`` and overrides ``norm``'s default."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    radius: float = 1.0
    norm: str = ""
    scaling: float = 1.0
    readout: torch.Tensor | None = None
    NORMS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self._validate(self.NORMS)

    def _validate(self, norms: tuple[str, ...]) -> None:
        self.lora_A = check_matrix("lora_A", self.lora_A)
        self.lora_B = check_matrix("lora_B", self.lora_B, (None, self.lora_A.shape[0]))
        self.radius = check_radius("radius", self.radius)
        self.scaling = check_radius("scaling", self.scaling)
        if self.norm not in norms:
            raise ValueError(f"norm must be one of {norms}, got {self.norm!r}")
        self.readout = check_readout(self.readout, self.lora_B.shape[0])

    @classmethod
    def from_layer(cls, layer, radius: float = 1.0, norm: str | None = None, readout: torch.Tensor | None = None):
        """The class over a ZLinear's shared factors (its lora_A, lora_B and scaling)."""
        if getattr(layer, "lora_A", None) is None:
            raise ValueError(f"{cls.__name__}.from_layer needs a diag/square ZLinear with shared factors, "
                             f"got mode {getattr(layer, 'mode', None)!r}")
        kwargs = {} if norm is None else {"norm": norm}
        return cls(layer.lora_A.detach().float(), layer.lora_B.detach().float(), radius=radius,
                   scaling=layer.scaling, readout=readout, **kwargs)

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    @property
    def in_features(self) -> int:
        return self.lora_A.shape[1]

    @property
    def out_features(self) -> int:
        return self.lora_B.shape[0]

    @property
    def sup_is_exact(self) -> bool:
        return True

    def _rank_inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = check_inputs(x, self.in_features)
        return x @ self.lora_A.to(x.dtype).T  # (N, r)

    def _readout_b(self, dtype: torch.dtype) -> torch.Tensor:
        return self.lora_B.to(dtype).T @ self.readout.to(dtype)  # b = Bᵀu (r,)

    def _sigma_through_b(self, sigma: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """T = σ B, (S, N, d_out) @ (d_out, r) -> (S, N, r), the per-sample Bᵀσ_i."""
        return sigma.to(dtype) @ self.lora_B.to(dtype)


@dataclass(eq=False)
class DiagClass(_SharedFactors):
    """{x -> uᵀ (s B diag(z) A) x : ‖z‖_p <= ρ}, p = 2 (``"l2"``) or ∞ (``"linf"``).

    lora_A (r, d_in), lora_B (d_out, r) fixed; readout u (d_out,) or None (vector output).
    """

    norm: str = "l2"
    NORMS: ClassVar[tuple[str, ...]] = DIAG_NORMS

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """ψ (N, r) such that Jensen's bound applies coordinate-wise: E g_j² = Σ_i ψ_ij² / N².

        Scalar output: ψ = φ = s (A x_i) ⊙ (Bᵀu), the exact feature map (h = <z, φ>).
        Vector output: ψ_ij = s ‖B_:,j‖ (A x_i)_j.
        """
        a = self._rank_inputs(x)
        if self.readout is not None:
            return self.scaling * a * self._readout_b(a.dtype)
        return self.scaling * a * self.lora_B.to(a.dtype).norm(dim=0)

    def sup(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sup_z (1/N) Σ σ_i h_z(x_i) for each draw: sigma (S, N) or (S, N, d_out) -> (S,)."""
        a = self._rank_inputs(x)
        n = a.shape[0]
        sigma = check_sigma(sigma, self.sigma_shape(n))
        if self.readout is not None:
            g = sigma.to(a.dtype) @ (a * self._readout_b(a.dtype))  # (S, r)
        else:
            g = (self._sigma_through_b(sigma, a.dtype) * a).sum(1)  # (S, r)
        g = g * (self.scaling / n)
        return self.radius * (g.norm(dim=1) if self.norm == "l2" else g.abs().sum(1))

    def bound(self, x: torch.Tensor) -> float:
        """Jensen: ρ sqrt(Σ ψ²)/N (ℓ2) or ρ Σ_j sqrt(Σ_i ψ_ij²)/N (ℓ∞); see ``features``."""
        psi = self.features(x)
        return l2_ball_bound(psi, self.radius) if self.norm == "l2" else linf_ball_bound(psi, self.radius)

    # ---- parametrised view (Monte-Carlo estimator)
    def geometry(self) -> list[tuple[str, float]]:
        return [("l2" if self.norm == "l2" else "linf", self.radius)]

    def init_params(self, batch: int, generator: torch.Generator, dtype=torch.float32) -> list[torch.Tensor]:
        z = torch.randn(batch, self.rank, generator=generator, dtype=dtype)
        return self.project_([z])

    def project_(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        (z,) = params
        with torch.no_grad():
            if self.norm == "l2":
                z.mul_((self.radius / z.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0))
            else:
                z.clamp_(-self.radius, self.radius)
        return params

    def outputs(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """h_z(x_i) for a batch of z (b, r): (b, N) scalar or (b, N, d_out) vector."""
        (z,) = params
        a = self._rank_inputs(x).to(z.dtype)
        if self.readout is not None:
            return z @ (self.scaling * a * self._readout_b(z.dtype)).T  # (b, N)
        return self.scaling * (a.unsqueeze(0) * z.unsqueeze(1)) @ self.lora_B.to(z.dtype).T


@dataclass(eq=False)
class SquareClass(_SharedFactors):
    """{x -> uᵀ (s B Z A) x : ‖Z‖ <= ρ}, Frobenius (``"frobenius"``) or spectral (``"spectral"``) norm."""

    norm: str = "frobenius"
    NORMS: ClassVar[tuple[str, ...]] = SQUARE_NORMS

    def _gram(self, sigma: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """G (S, r, r) = (s/N) Σ_i T_i a_iᵀ (vector output)."""
        t = self._sigma_through_b(sigma, a.dtype)  # (S, N, r)
        return t.transpose(1, 2) @ a * (self.scaling / a.shape[0])

    def sup(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sup_Z (1/N) Σ σ_i h_Z(x_i) for each draw: sigma (S, N) or (S, N, d_out) -> (S,)."""
        a = self._rank_inputs(x)
        n = a.shape[0]
        sigma = check_sigma(sigma, self.sigma_shape(n))
        if self.readout is not None:  # G = (s/N) b cᵀ is rank one: ‖G‖_F = ‖G‖_* = (s/N) ‖b‖ ‖c‖
            c = sigma.to(a.dtype) @ a  # (S, r)
            return self.radius * self.scaling / n * self._readout_b(a.dtype).norm() * c.norm(dim=1)
        g = self._gram(sigma, a)
        if self.norm == "frobenius":
            return self.radius * g.flatten(1).norm(dim=1)
        return self.radius * torch.linalg.svdvals(g).sum(1)

    def bound(self, x: torch.Tensor) -> float:
        """Jensen. Scalar: ρ s ‖Bᵀu‖ sqrt(Σ‖a_i‖²)/N (both norms). Vector: ρ s ‖B‖_F sqrt(Σ‖a_i‖²)/N
        (Frobenius), times sqrt(r) for the spectral ball (‖G‖_* <= sqrt(r) ‖G‖_F)."""
        a = self._rank_inputs(x)
        if self.readout is not None:
            return l2_ball_bound(a * (self.scaling * float(self._readout_b(a.dtype).norm())), self.radius)
        fro = l2_ball_bound(a * (self.scaling * float(self.lora_B.to(a.dtype).norm())), self.radius)
        return fro if self.norm == "frobenius" else math.sqrt(self.rank) * fro

    # ---- parametrised view (Monte-Carlo estimator)
    def geometry(self) -> list[tuple[str, float]]:
        return [("l2", self.radius if self.norm == "frobenius" else self.radius * math.sqrt(self.rank))]

    def init_params(self, batch: int, generator: torch.Generator, dtype=torch.float32) -> list[torch.Tensor]:
        z = torch.randn(batch, self.rank, self.rank, generator=generator, dtype=dtype)
        return self.project_([z])

    def project_(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        (z,) = params
        with torch.no_grad():
            if self.norm == "frobenius":
                norms = z.flatten(1).norm(dim=1).clamp_min(1e-30)
                z.mul_((self.radius / norms).clamp(max=1.0).view(-1, 1, 1))
            else:  # clip singular values at ρ
                u, s, vh = torch.linalg.svd(z)
                z.copy_(u @ torch.diag_embed(s.clamp(max=self.radius)) @ vh)
        return params

    def outputs(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """h_Z(x_i) for a batch of Z (b, r, r): (b, N) scalar or (b, N, d_out) vector."""
        (z,) = params
        a = self._rank_inputs(x).to(z.dtype)
        h = self.scaling * a.unsqueeze(0) @ z.transpose(1, 2)  # (b, N, r)
        if self.readout is not None:
            return h @ self._readout_b(z.dtype)
        return h @ self.lora_B.to(z.dtype).T
