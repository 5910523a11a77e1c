"""The class realised by a trained hypernetwork: one ZLinear and the modulations it emitted.

H = {x -> uᵀ ΔW(m_c) x : c = 1..C} for modulations m_c (C, *layer.modulation_shape), e.g. what a
hypernetwork produced for C contexts. It is finite, so the sup is an exact max over contexts:

    sup_c (1/N) Σ_i σ_i h_c(x_i) = max_c <σ, F_c> / N,   F (C, N) or (C, N, d_out)

(one (S, N·k) @ (N·k, C) matmul for all σ draws), and Massart's lemma bounds it by
max_c ‖F_c‖_2 sqrt(2 ln C) / N. The frozen base output W x is the same for every context;
adding a fixed function leaves R̂ unchanged (E_σ Σ σ_i f(x_i) = 0), so only ΔW enters.
The class does not depend on how the modulations were produced (no hypernetwork import).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import ReadoutShape, check_inputs, check_readout, check_sigma
from .bounds import massart_bound


@dataclass(eq=False)
class RealisedClass(ReadoutShape):
    """layer: a ZLinear (any mode); modulations (C, *layer.modulation_shape); readout u or None."""

    layer: torch.nn.Module
    modulations: torch.Tensor
    readout: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shape = getattr(self.layer, "modulation_shape", None)
        if shape is None or not hasattr(self.layer, "delta_weight"):
            raise TypeError(f"layer must be a ZLinear, got {type(self.layer).__name__}")
        if not isinstance(self.modulations, torch.Tensor):
            raise TypeError(f"modulations must be a torch.Tensor of shape (C, *{tuple(shape)}), "
                            f"got {type(self.modulations).__name__}")
        if tuple(self.modulations.shape[1:]) != tuple(shape) or self.modulations.shape[0] == 0:
            raise ValueError(f"modulations have shape {tuple(self.modulations.shape)}; expected (C, *{tuple(shape)}) "
                             f"with C >= 1 for this layer (mode {self.layer.mode!r}, rank {self.layer.rank})")
        self.readout = check_readout(self.readout, self.out_features)

    @property
    def in_features(self) -> int:
        return self.layer.in_features

    @property
    def out_features(self) -> int:
        return self.layer.out_features

    @property
    def n_contexts(self) -> int:
        return self.modulations.shape[0]

    @property
    def sup_is_exact(self) -> bool:
        return True

    def outputs_table(self, x: torch.Tensor) -> torch.Tensor:
        """F (C, N) = uᵀ ΔW_c x_i (scalar) or (C, N, d_out) = ΔW_c x_i (vector); a loop over contexts."""
        x = check_inputs(x, self.in_features)
        rows = []
        for m in self.modulations:
            delta = self.layer.delta_weight(m).to(x.dtype)  # (d_out, d_in), fp32 math in the layer
            if self.readout is not None:
                rows.append(x @ (delta.T @ self.readout.to(x.dtype)))  # (N,)
            else:
                rows.append(x @ delta.T)  # (N, d_out)
        return torch.stack(rows)

    def sup(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """max_c <σ, F_c>/N per draw: sigma (S, N) or (S, N, d_out) -> (S,)."""
        f = self.outputs_table(x)
        n = f.shape[1]
        sigma = check_sigma(sigma, self.sigma_shape(n))
        return (sigma.reshape(sigma.shape[0], -1).to(f.dtype) @ f.reshape(f.shape[0], -1).T).amax(1) / n

    def bound(self, x: torch.Tensor) -> float:
        """Massart: max_c ‖F_c‖_2 sqrt(2 ln C)/N (0 for C = 1)."""
        return massart_bound(self.outputs_table(x))
