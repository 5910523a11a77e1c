"""Tiny float64 problems shared by the theory tests."""

from __future__ import annotations

import itertools

import torch

from zhyper.theory import DiagClass, FullClass, SquareClass

F64 = torch.float64


def tiny(n=5, d_in=3, d_out=2, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=F64)
    a = torch.randn(r, d_in, generator=g, dtype=F64)
    b = torch.randn(d_out, r, generator=g, dtype=F64)
    u = torch.randn(d_out, generator=g, dtype=F64)
    return x, a, b, u


def box_vertices(shape, half_width) -> torch.Tensor:
    """All sign patterns of a box of the given shape: (2^numel, *shape)."""
    k = 1
    for s in shape:
        k *= s
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=k)), dtype=F64)
    return half_width * signs.reshape(-1, *shape)


def values_at(cls, params, sigma, x) -> torch.Tensor:
    """(1/N) Σ σ_i h_θ(x_i) for every σ (S) and every parameter set (P): (S, P)."""
    out = cls.outputs(params, x)  # (P, N[, d_out])
    return sigma.reshape(sigma.shape[0], -1) @ out.reshape(out.shape[0], -1).T / x.shape[0]


__all__ = ["F64", "tiny", "box_vertices", "values_at", "DiagClass", "SquareClass", "FullClass"]
