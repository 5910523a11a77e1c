"""Input validation shared by the hypothesis classes and the estimators (clear ValueError/TypeError)."""

from __future__ import annotations

import math

import torch


def check_radius(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_matrix(name: str, value, shape: tuple[int | None, int | None] = (None, None)) -> torch.Tensor:
    """A 2-D floating tensor whose known dims match ``shape`` (None = any)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(value.shape)}")
    for axis, want in enumerate(shape):
        if want is not None and value.shape[axis] != want:
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected dim {axis} = {want}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(value.shape)}")
    return value if value.is_floating_point() else value.float()


def check_readout(readout, out_features: int) -> torch.Tensor | None:
    """None (vector output, σ per output) or a (out_features,) vector u (scalar output u·ΔW·x)."""
    if readout is None:
        return None
    if not isinstance(readout, torch.Tensor):
        raise TypeError(f"readout must be a torch.Tensor of shape ({out_features},) or None, "
                        f"got {type(readout).__name__}")
    if tuple(readout.shape) != (out_features,):
        raise ValueError(f"readout has shape {tuple(readout.shape)}; expected ({out_features},) "
                         "(one weight per output of the layer) or None for the vector-output variant")
    return readout if readout.is_floating_point() else readout.float()


def check_inputs(x, in_features: int) -> torch.Tensor:
    """Layer inputs X (N, d_in) with N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, {in_features}), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"inputs must have shape (N, {in_features}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"inputs must have at least one sample (N >= 1), got shape {tuple(x.shape)}")
    if x.shape[1] != in_features:
        raise ValueError(f"inputs have {x.shape[1]} features (shape {tuple(x.shape)}); the class expects "
                         f"in_features = {in_features}")
    return x if x.is_floating_point() else x.float()


def check_sigma(sigma, shape: tuple[int, ...]) -> torch.Tensor:
    """σ draws (S, *shape) with S >= 1; shape is (N,) for scalar output, (N, d_out) for vector output."""
    if not isinstance(sigma, torch.Tensor):
        raise TypeError(f"sigma must be a torch.Tensor of shape (S, {', '.join(map(str, shape))}), "
                        f"got {type(sigma).__name__}")
    if sigma.dim() != len(shape) + 1 or tuple(sigma.shape[1:]) != tuple(shape) or sigma.shape[0] == 0:
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}; expected (S, {', '.join(map(str, shape))}) "
                         "with S >= 1 draws")
    return sigma


class ReadoutShape:
    """The Rademacher signs' shape of a class whose output is a scalar (readout u given) or the d_out vector."""

    readout: torch.Tensor | None
    out_features: int

    def sigma_shape(self, n: int) -> tuple[int, ...]:
        return (n,) if self.readout is not None else (n, self.out_features)
