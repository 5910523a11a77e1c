"""docs/design.md identities 1-6 and 8 for ZLinear, as hypothesis properties over shapes, ranks and dtypes.

Every "equals" has a twin showing that the compared things can differ (assert_differs), with the
same tolerance: bf16 runs are compared against an fp32 reference within a few bf16 ulps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tests.layers.helpers import (PROPERTY, assert_close, assert_differs, base_output, build, cases, max_diff,
                                  reference)
from zhyper.layers.zlinear import ZLinear, split_full


# ---------------------------------------------------------------- identity 1: zero update is the base
@PROPERTY
@given(case=cases(), shared=st.booleans())
def test_zero_modulation_is_exactly_the_base(case, shared):
    layer, x, z = build(case)
    zero = torch.zeros_like(z[0] if shared else z)
    base = base_output(layer, x)
    assert torch.equal(layer(x, modulation=zero), base)
    # twin: a non-zero modulation moves the output
    assert_differs(layer(x, modulation=z), base, case.dtype, max_diff(reference(layer, x, z), base))


@PROPERTY
@given(case=cases())
def test_zero_b_is_exactly_the_base_for_any_modulation(case):
    layer, x, z = build(case)
    trained_b = layer.lora_B.detach().clone()
    with torch.no_grad():
        layer.lora_B.zero_()
    assert torch.equal(layer(x, modulation=z), base_output(layer, x))
    with torch.no_grad():
        layer.lora_B.copy_(trained_b)
    assert_differs(layer(x, modulation=z), base_output(layer, x), case.dtype,
                   max_diff(reference(layer, x, z), base_output(layer, x)))


# ---------------------------------------------------------------- identity 2: diag is square with diag_embed
@PROPERTY
@given(case=cases(modes=("diag",)))
def test_diag_equals_square_with_diag_embed(case):
    diag, x, z = build(case, mode="diag")
    square = ZLinear(case.in_features, case.out_features, rank=case.rank, mode="square", alpha=case.alpha,
                     rslora=case.rslora, bias=case.bias, dtype=case.dtype)
    square.load_state_dict(diag.state_dict())
    expected = diag(x, modulation=z)
    assert_close(square(x, modulation=torch.diag_embed(z)), expected, case.dtype)
    # twin: an off-diagonal entry in Z changes the output
    off = torch.diag_embed(z) + torch.ones(case.rank, case.rank) - torch.eye(case.rank)
    if case.rank > 1:
        assert_differs(square(x, modulation=off), expected, case.dtype,
                       max_diff(reference(square, x, off), reference(diag, x, z)))


# ---------------------------------------------------------------- identity 3: a mixed batch is per-sample runs
@PROPERTY
@given(case=cases(modes=("diag", "square", "full"), max_features=12))
def test_mixed_batch_equals_each_sample_alone(case):
    layer, x, z = build(case)
    batched = layer(x, modulation=z)
    alone = torch.cat([layer(x[i:i + 1], modulation=z[i:i + 1]) for i in range(case.batch)])
    assert_close(batched, alone, case.dtype)
    one_context = torch.cat([layer(x[i:i + 1], modulation=z[i]) for i in range(case.batch)])
    assert_close(batched, one_context, case.dtype)
    if case.batch > 1:  # twin: giving the samples each other's modulation changes the output
        rolled = z.roll(1, dims=0)
        assert_differs(layer(x, modulation=rolled), batched, case.dtype,
                       max_diff(reference(layer, x, rolled), reference(layer, x, z)))


# ---------------------------------------------------------------- identity 4: forward = merged weight
@PROPERTY
@given(case=cases(modes=("diag", "square", "full"), max_features=12))
def test_forward_equals_linear_with_delta_weight(case):
    layer, x, z = build(case)
    expected = reference(layer, x, z)  # fp32, from W + delta_weight(z_i)
    assert_close(layer(x, modulation=z), expected, case.dtype)
    assert_differs(layer(x, modulation=z), base_output(layer, x), case.dtype,
                   max_diff(expected, base_output(layer, x)))


@PROPERTY
@given(case=cases(modes=("diag", "square", "full"), max_features=12))
def test_merge_then_forward_equals_modulated_forward_and_unmerge_restores(case):
    layer, x, z = build(case)
    z0, x0 = z[0], x[:1]
    modulated = layer(x0, modulation=z0)
    base = base_output(layer, x0)
    weight = layer.weight.detach().clone()
    layer.merge(z0)
    merged = layer(x0)
    assert_close(merged, modulated, case.dtype)
    assert_differs(merged, base, case.dtype, max_diff(reference(layer, x0, z[:1]), base.float()))
    layer.unmerge()
    ulp = 0.0 if case.dtype == torch.float32 else 2.0**-7
    bound = (1e-6 + ulp) * (1 + weight.float().abs().max().item() + layer.delta_weight(z0).abs().max().item())
    assert max_diff(layer.weight, weight) <= bound
    assert torch.equal(layer(x0, modulation=z0), layer(x0, modulation=z0))  # back to the modulated path


# ---------------------------------------------------------------- identity 5: diag with z = 1 is PEFT's LoRA
def _peft_twin(layer: ZLinear):
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    base = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=layer.weight.dtype)
    base.load_state_dict({k: v for k, v in layer.state_dict().items() if k in ("weight", "bias")})
    config = LoraConfig(r=layer.rank, lora_alpha=layer.alpha, use_rslora=layer.rslora)
    peft_layer = PeftLinear(base, "default", config=config, r=layer.rank, lora_alpha=layer.alpha)
    # PEFT may cast its adapter to the base dtype; give it ZLinear's fp32 factors exactly.
    peft_layer.lora_A["default"].weight = nn.Parameter(layer.lora_A.detach().clone())
    peft_layer.lora_B["default"].weight = nn.Parameter(layer.lora_B.detach().clone())
    return peft_layer.eval()


@PROPERTY
@given(case=cases(modes=("diag",)))
def test_diag_with_ones_equals_peft_lora_linear(case):
    layer, x, _ = build(case)
    peft_layer = _peft_twin(layer)
    assert peft_layer.scaling["default"] == layer.scaling
    ones = torch.ones(layer.rank)
    expected = peft_layer(x)
    assert expected.dtype == case.dtype
    assert_close(layer(x, modulation=ones), expected, case.dtype)
    assert_close(layer.delta_weight(ones), peft_layer.get_delta_weight("default").float(), torch.float32)
    twice = 2 * ones  # twin: z = 2 doubles the update, which PEFT's plain LoRA does not
    assert_differs(layer(x, modulation=twice), expected, case.dtype,
                   max_diff(reference(layer, x, twice.expand(case.batch, -1)), base_output(layer, x)))


# ---------------------------------------------------------------- identity 6: full mode is diag with z = 1
@PROPERTY
@given(case=cases(modes=("full",), max_features=12))
def test_full_equals_diag_with_generated_factors_and_unit_z(case):
    full, x, z = build(case, mode="full")
    diag = ZLinear(case.in_features, case.out_features, rank=case.rank, mode="diag", alpha=case.alpha,
                   rslora=case.rslora, bias=case.bias, dtype=case.dtype)
    diag.load_state_dict({**diag.state_dict(), **full.state_dict()})
    a_c, b_c = split_full(z, case.rank, case.in_features, case.out_features)  # (b, r, in), (b, out, r)
    rows = []
    for i in range(case.batch):
        with torch.no_grad():
            diag.lora_A.copy_(a_c[i])
            diag.lora_B.copy_(b_c[i])
        rows.append(diag(x[i:i + 1], modulation=torch.ones(case.rank)))
    expected = torch.cat(rows)
    assert_close(full(x, modulation=z), expected, case.dtype)
    swapped = torch.cat([z[:, : case.rank * case.in_features], -z[:, case.rank * case.in_features:]], dim=1)
    assert_differs(full(x, modulation=swapped), expected, case.dtype,
                   max_diff(reference(full, x, swapped), reference(full, x, z)))


def test_split_full_layout_is_a_then_b_row_major():
    r, i, o = 2, 3, 4
    flat = torch.arange(r * i + o * r, dtype=torch.float32)
    a, b = split_full(flat, r, i, o)
    assert torch.equal(a, torch.tensor([[0.0, 1, 2], [3, 4, 5]]))
    assert torch.equal(b, torch.tensor([[6.0, 7], [8, 9], [10, 11], [12, 13]]))
    batched_a, batched_b = split_full(torch.stack([flat, -flat]), r, i, o)
    assert torch.equal(batched_a[1], -a) and torch.equal(batched_b[0], b)


# ---------------------------------------------------------------- identity 8: gradients reach only A, B, z
@PROPERTY
@given(case=cases(modes=("diag", "square", "full"), max_features=12))
def test_gradients_reach_only_adapter_and_modulation(case):
    layer, x, z = build(case)
    x.requires_grad_(True)
    z.requires_grad_(True)
    layer(x, modulation=z).float().square().sum().backward()
    assert layer.weight.grad is None and not layer.weight.requires_grad
    assert layer.bias is None or (layer.bias.grad is None and not layer.bias.requires_grad)
    trainable = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert trainable == (set() if case.mode == "full" else {"lora_A", "lora_B"})
    grads = [z.grad, x.grad] + [p.grad for p in layer.parameters() if p.requires_grad]
    for g in grads:  # twin of "no gradient": these do receive a (finite, non-zero) one
        assert g is not None and torch.isfinite(g.float()).all() and g.abs().sum() > 0
    assert z.grad.shape == z.shape and z.grad.dtype == torch.float32
    assert x.grad.dtype == case.dtype


def test_bf16_base_keeps_dtype_and_fp32_adapter():
    layer = ZLinear.from_linear(nn.Linear(6, 5, dtype=torch.bfloat16), rank=3)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 4, 6, dtype=torch.bfloat16, requires_grad=True)
    z = torch.randn(2, 3, requires_grad=True)
    y = layer(x, modulation=z)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.bfloat16
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.float32
    assert layer.delta_weight(z[0]).dtype == torch.float32
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and layer.lora_A.grad.dtype == torch.float32
    assert z.grad.dtype == torch.float32
    assert torch.equal(layer(x, modulation=torch.zeros(3)), F.linear(x, layer.weight, layer.bias))
