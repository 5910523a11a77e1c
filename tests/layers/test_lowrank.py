"""The hand-written backward of the modulated low-rank update against autograd and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.layers.helpers import PROPERTY, assert_close, assert_differs, build, cases, max_diff
from zhyper.layers.lowrank import modulated_lowrank


def _autograd_reference(y, x, a, b, z, scaling, square):
    """The same update written with plain autograd ops and einsum, independent of the fused code."""
    h = F.linear(x.to(a.dtype), a)  # (..., r)
    zs = z * scaling
    if z.dim() == (2 if square else 1):  # one modulation for every sample
        hz = torch.einsum("...r,qr->...q", h, zs) if square else h * zs
    elif square:
        hz = torch.einsum("b...r,bqr->b...q", h, zs)
    else:
        hz = h * zs.view(zs.shape[0], *([1] * (h.dim() - 2)), zs.shape[-1])
    return (y.to(a.dtype) + F.linear(hz, b)).to(y.dtype)


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("lead", [(3,), (2, 4), (2, 2, 3)])
def test_gradcheck_float64(square, shared, lead):
    g = torch.Generator().manual_seed(1)
    r, d_in, d_out = 3, 5, 4
    x = torch.randn(*lead, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(*lead, d_out, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn(r, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d_out, r, generator=g, dtype=torch.float64, requires_grad=True)
    zshape = ((r, r) if square else (r,)) if shared else ((lead[0], r, r) if square else (lead[0], r))
    z = torch.randn(zshape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: modulated_lowrank(*t, 0.7, square), (y, x, a, b, z))


def _run(fn, layer, x, z, square):
    """fn's output and the gradients of sum(out²) w.r.t. x, A, B and z."""
    xi = x.clone().requires_grad_(True)
    a = layer.lora_A.detach().clone().requires_grad_(True)
    b = layer.lora_B.detach().clone().requires_grad_(True)
    zi = z.clone().requires_grad_(True)
    out = fn(F.linear(xi, layer.weight, layer.bias), xi, a, b, zi, layer.scaling, square)
    out.float().square().sum().backward()
    return out, xi.grad, a.grad, b.grad, zi.grad


@PROPERTY
@given(case=cases(modes=("diag", "square"), max_features=12), shared=st.booleans())
def test_output_and_gradients_match_plain_autograd(case, shared):
    layer, x, z = build(case)
    z = z[0] if shared else z
    square = case.mode == "square"
    fused = _run(modulated_lowrank, layer, x, z, square)
    plain = _run(_autograd_reference, layer, x, z, square)
    for got, expected in zip(fused, plain):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert_close(got, expected, case.dtype)
    # twin: the negated modulation gives another dL/dA
    fused_neg = _run(modulated_lowrank, layer, x, -z, square)
    plain_neg = _run(_autograd_reference, layer, x, -z, square)
    assert_differs(fused_neg[2], fused[2], case.dtype, max_diff(plain_neg[2], plain[2]))


def test_only_requested_gradients_are_computed():
    x = torch.randn(2, 3, 5)
    a, b = torch.randn(4, 5, requires_grad=True), torch.randn(6, 4)
    z = torch.randn(2, 4)
    out = modulated_lowrank(torch.zeros(2, 3, 6), x, a, b, z, 2.0, False)
    out.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert x.grad is None and b.grad is None and z.grad is None


@pytest.mark.parametrize("square", [False, True])
def test_into_y_without_grad_writes_the_same_sum_into_y_and_with_grad_leaves_y_alone(square):
    g = torch.Generator().manual_seed(3)
    x, a, b = torch.randn(2, 3, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(6, 4, generator=g)
    z = torch.randn((2, 4, 4) if square else (2, 4), generator=g)
    y = torch.randn(2, 3, 6, generator=g)
    with torch.no_grad():
        expected = modulated_lowrank(y, x, a, b, z, 2.0, square)
        owned = y.clone()
        got = modulated_lowrank(owned, x, a, b, z, 2.0, square, into_y=True)
    assert torch.equal(got, expected) and torch.equal(owned, expected)  # the same arithmetic, bit for bit, in y
    with torch.no_grad():  # a y that is not contiguous: the sum is still returned (its reshape was a copy)
        strided = torch.empty(3, 2, 6).transpose(0, 1).copy_(y)  # (2, 3, 6) with the first two dims' strides swapped
        assert not strided.is_contiguous()
        torch.testing.assert_close(modulated_lowrank(strided, x, a, b, z, 2.0, square, into_y=True), expected)
    assert not torch.equal(expected, y)  # twin: without into_y the caller's y is left as it was
    with_grad = y.clone().requires_grad_(True)
    out = modulated_lowrank(with_grad, x, a, b, z, 2.0, square, into_y=True)
    assert out is not with_grad and torch.equal(with_grad.detach(), y)  # autograd records: y is never written
    torch.testing.assert_close(out.detach(), expected)
