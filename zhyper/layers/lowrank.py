"""The modulated low-rank update of ZLinear as one autograd function with a hand-written backward.

    out = y + s · ((x Aᵀ) ⊙ z) Bᵀ        diag     z (r,) shared or (b, r) per sample
    out = y + s · ((x Aᵀ) Zᵀ) Bᵀ         square   Z (r, r) shared or (b, r, r) per sample

with N = all tokens of the batch flattened, x (N, in), A (r, in), B (out, r), y (N, out) the base
output. Why a custom function rather than four autograd ops:

* memory: autograd would keep both h = x Aᵀ and the modulated h ⊙ z (and, with a bf16 input,
  the fp32 copy of x). Here only h (N, r) is kept; h ⊙ z and the fp32 cast of x are recomputed in
  backward (r multiplies per token, one cast), and x itself is the tensor the base path keeps.
* speed: the six skinny GEMMs (one side of size r) are issued in the orientation BLAS runs fast,
  e.g. h as (A · xᵀ)ᵀ and dL/dB as ((h ⊙ z)ᵀ · g)ᵀ; on CPU these are 2-4x faster than the
  orientations F.linear's autograd picks. The last GEMM adds into y (addmm, in the adapter's dtype,
  then one rounding to y's dtype) in place of a separate add, with s as its alpha in place of a
  multiply of z. Without grad (generation, serving) ZLinear lets it write into its own base output.
  At one decode row a call is mostly dispatch, so every op skipped counts: SmolLM2's 60 adapted
  layers pay this per token (benchmarks/bench_engine.py).

No per-sample or per-token weight copy is ever made: z only touches the (N, r) activations.
Second-order gradients are not supported (once_differentiable).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _modulate(h: torch.Tensor, zs: torch.Tensor, square: bool) -> torch.Tensor:
    """h (N, r) times a modulation zs: (r,) | (r, r) shared, or (b, r) | (b, r, r) per sample (N = b·n)."""
    r = h.shape[-1]
    if square:
        if zs.dim() == 2:
            return h @ zs.t()
        return torch.bmm(h.reshape(zs.shape[0], -1, r), zs.transpose(1, 2)).reshape(-1, r)
    if zs.dim() == 1 or zs.shape[0] == h.shape[0]:  # shared, or one token per sample (a decode step)
        return h * zs
    return (h.reshape(zs.shape[0], -1, r) * zs.unsqueeze(1)).reshape(-1, r)


def _forward(y, x, lora_a, lora_b, z, scaling: float, square: bool,
             into_y: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(y + s·B·mod(z)·A·x in y's shape and dtype, h = x·Aᵀ (N, r)): the forward's arithmetic, with or without
    autograd. Casts that would not change a dtype are skipped (a call at one decode row is mostly dispatch).
    ``into_y``: add into y itself where its dtype is the adapter's (the same arithmetic: addmm copies y first)."""
    adt = lora_a.dtype
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # (N, in), x's dtype
    x2 = x2 if x2.dtype == adt else x2.to(adt)
    h = (lora_a @ x2.t()).t()  # (N, r), stored transposed: the fast GEMM orientation
    hz = _modulate(h, z, square)  # (N, r)
    y2 = y if y.dim() == 2 else y.reshape(-1, y.shape[-1])  # (N, out)
    # the scale rides on the last GEMM (addmm's alpha) rather than a multiply of z of its own
    if into_y and y2.dtype == adt:
        y2.addmm_(hz, lora_b.t(), alpha=scaling)  # y2 is y's storage unless y was not contiguous
        return y2.view_as(y), h
    out = torch.addmm(y2 if y2.dtype == adt else y2.to(adt), hz, lora_b.t(), alpha=scaling)
    out = out if out.dtype == y.dtype else out.to(y.dtype)  # one rounding to y's dtype, as PEFT
    return out.view_as(y), h  # view_as: view(y.shape) costs 4x as much at one row


class ModulatedLowRank(torch.autograd.Function):
    """y + s·B·mod(z)·A·x over flattened tokens; see the module docstring. Use ``modulated_lowrank``."""

    @staticmethod
    def forward(ctx, y, x, lora_a, lora_b, z, scaling: float, square: bool):
        out, h = _forward(y, x, lora_a, lora_b, z, scaling, square)
        ctx.save_for_backward(x, lora_a, lora_b, z, h)
        ctx.scaling, ctx.square = scaling, square
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, lora_a, lora_b, z, h = ctx.saved_tensors
        s, square, adt = ctx.scaling, ctx.square, lora_a.dtype
        need_x, need_a, need_b, need_z = ctx.needs_input_grad[1:5]
        g2 = grad.reshape(-1, grad.shape[-1]).to(adt)  # (N, out)
        zs = z * s
        grad_x = grad_a = grad_b = grad_z = None
        if need_b:
            grad_b = (_modulate(h, zs, square).t() @ g2).t()  # (out, r)
        if need_x or need_a or need_z:
            g_hz = (lora_b.t() @ g2.t()).t()  # (N, r) = dL/d(h ⊙ z)
            if need_z:
                grad_z = _grad_modulation(g_hz, h, z, square) * s
            if need_x or need_a:
                g_h = _modulate(g_hz, zs.transpose(-1, -2) if square else zs, square)  # (N, r)
                if need_a:
                    grad_a = g_h.t() @ x.reshape(-1, x.shape[-1]).to(adt)  # (r, in)
                if need_x:
                    grad_x = (g_h @ lora_a).to(x.dtype).view(x.shape)  # (..., in)
        return grad, grad_x, grad_a, grad_b, grad_z, None, None


def _grad_modulation(g_hz: torch.Tensor, h: torch.Tensor, z: torch.Tensor, square: bool) -> torch.Tensor:
    """dL/d(s·z) given dL/d(h·mod) (N, r) and h (N, r); shaped like z."""
    r = h.shape[-1]
    if square:
        if z.dim() == 2:
            return g_hz.t() @ h  # (r, r)
        b = z.shape[0]
        return torch.bmm(g_hz.reshape(b, -1, r).transpose(1, 2), h.reshape(b, -1, r))  # (b, r, r)
    if z.dim() == 1:
        return (g_hz * h).sum(0)  # (r,)
    return (g_hz * h).reshape(z.shape[0], -1, r).sum(1)  # (b, r)


def modulated_lowrank(y: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                      z: torch.Tensor, scaling: float, square: bool, into_y: bool = False) -> torch.Tensor:
    """y + scaling · ((x Aᵀ) ⊙ z | (x Aᵀ) Zᵀ) Bᵀ, in y's dtype.

    Args:
        y: base output (..., out); x: adapter input (..., in), any float dtype (cast to A's).
        lora_a: A (r, in); lora_b: B (out, r); z: in A's dtype, (r,) / (r, r) for all samples or
            (b, r) / (b, r, r) with b = x.shape[0]; square: z is a square Z rather than a diagonal.
        into_y: without grad, the sum may be written into y itself (the result then shares y's storage):
            for a caller that owns y and needs it no more (ZLinear's base output). Ignored when autograd
            records.
    """
    if not torch.is_grad_enabled():  # no_grad / inference_mode (generation, serving): the same arithmetic,
        return _forward(y, x, lora_a, lora_b, z, scaling, square, into_y)[0]  # without autograd.Function's
    return ModulatedLowRank.apply(y, x, lora_a, lora_b, z, scaling, square)
