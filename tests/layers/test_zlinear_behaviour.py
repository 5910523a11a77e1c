"""ZLinear behaviour: a hand-sized merge, the merge/unmerge ladder, errors, dropout, context managers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.conftest import REPO
from zhyper.layers.zlinear import ZLinear, lora_scaling, modulation_shape


def _integer_layer(mode: str) -> ZLinear:
    """in 3, out 2, r 2, alpha 2 (s = 1); W, A, B small integers."""
    layer = ZLinear(3, 2, rank=2, mode=mode, alpha=2.0, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
        if layer.lora_A is not None:
            layer.lora_A.copy_(torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
            layer.lora_B.copy_(torch.tensor([[1.0, 2], [3, 4]]))
    return layer


@pytest.mark.parametrize("mode, modulation, merged", [
    # B·diag(2, 3) = [[2, 6], [6, 12]]; ·A = [[2, 6, 2], [6, 12, 6]]
    ("diag", torch.tensor([2.0, 3.0]), [[3.0, 8, 5], [10, 17, 12]]),
    # B·[[1, 1], [0, 1]] = [[1, 3], [3, 7]]; ·A = [[1, 3, 1], [3, 7, 3]]
    ("square", torch.tensor([[1.0, 1], [0, 1]]), [[2.0, 5, 4], [7, 12, 9]]),
    # A_c = A, B_c = B flattened: B·A = [[1, 2, 1], [3, 4, 3]]
    ("full", torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 2, 3, 4]), [[2.0, 4, 4], [7, 9, 9]]),
])
def test_hand_sized_integer_merge(mode, modulation, merged):
    layer = _integer_layer(mode)
    x = torch.tensor([[1.0, 1.0, 1.0]])
    expected = torch.tensor(merged)
    assert torch.equal(layer(x, modulation=modulation), x @ expected.t())
    layer.merge(modulation)
    assert torch.equal(layer.weight, expected)
    assert torch.equal(layer(x), x @ expected.t())
    layer.unmerge()
    assert torch.equal(layer.weight, torch.tensor([[1.0, 2, 3], [4, 5, 6]]))


def test_scaling_lora_and_rslora():
    assert lora_scaling(16.0, 4) == 4.0 and lora_scaling(16.0, 4, rslora=True) == 8.0
    plain, rs = _integer_layer("diag"), ZLinear(3, 2, rank=2, alpha=2.0, rslora=True, bias=False)
    rs.load_state_dict(plain.state_dict())
    z = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(rs.delta_weight(z), 2**0.5 * plain.delta_weight(z), rtol=1e-5, atol=1e-8)


def test_modulation_shapes():
    assert modulation_shape("diag", 4, 5, 6) == (4,)
    assert modulation_shape("square", 4, 5, 6) == (4, 4)
    assert modulation_shape("full", 4, 5, 6) == (4 * 5 + 6 * 4,)
    assert ZLinear(5, 6, rank=4, mode="full").modulation_shape == (44,)


def test_merge_unmerge_ladder():
    """minLoRA's ladder: base -> change B -> differs -> disable -> base -> reload -> same -> merge x3."""
    torch.manual_seed(0)
    linear = nn.Linear(8, 6)
    x, z = torch.randn(2, 5, 8), torch.randn(2, 4)
    base = linear(x)
    layer = ZLinear.from_linear(linear, rank=4)
    assert torch.equal(layer(x, modulation=z), base)  # B = 0 at init
    nn.init.normal_(layer.lora_B)
    modulated = layer(x, modulation=z)
    assert (modulated - base).abs().max() > 1e-3, "a non-zero B must change the output"
    layer.adapter_enabled = False
    assert torch.equal(layer(x, modulation=z), base)
    layer.adapter_enabled = True
    reloaded = ZLinear.from_linear(nn.Linear(8, 6), rank=4)
    reloaded.load_state_dict(layer.state_dict())
    assert torch.equal(reloaded(x, modulation=z), modulated)
    weight = layer.weight.detach().clone()
    for _ in range(3):  # merging and unmerging repeatedly neither drifts nor accumulates
        layer.merge(z[1])
        assert layer.merged
        torch.testing.assert_close(layer(x[1:]), modulated[1:], rtol=1e-5, atol=1e-5)
        assert (layer(x[1:]) - base[1:]).abs().max() > 1e-3, "the merged layer must differ from the base"
        layer.unmerge()
        assert not layer.merged
        assert torch.equal(layer.weight, weight)  # restored bit for bit
        torch.testing.assert_close(layer(x, modulation=z), modulated, rtol=1e-5, atol=1e-5)


def test_merge_is_in_place_on_the_shared_weight():
    linear = nn.Linear(4, 3)
    layer = ZLinear.from_linear(linear, rank=2)
    nn.init.normal_(layer.lora_B)
    storage = linear.weight.data_ptr()
    layer.merge(torch.ones(2))
    assert linear.weight.data_ptr() == storage and layer.weight is linear.weight
    torch.testing.assert_close(linear.weight, layer.weight, rtol=1e-5, atol=1e-8)


def test_from_linear_reuses_and_freezes_the_base():
    linear = nn.Linear(5, 7, dtype=torch.bfloat16)
    layer = ZLinear.from_linear(linear, rank=3, mode="square", alpha=6.0)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.lora_A.shape == (3, 5) and layer.lora_B.shape == (7, 3)
    assert layer.lora_A.dtype == torch.float32 and layer.lora_A.requires_grad
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert layer.scaling == 2.0 and layer.modulation_shape == (3, 3)
    assert ZLinear.from_linear(nn.Linear(5, 7, bias=False), rank=2).bias is None
    full = ZLinear.from_linear(linear, rank=2, mode="full")
    assert full.lora_A is None and full.lora_B is None


def test_meta_device_builds_without_initialising():
    layer = ZLinear(4096, 4096, rank=8, device="meta")
    assert layer.weight.is_meta and layer.lora_A.is_meta


# ---------------------------------------------------------------- errors name what was expected and what came
def test_missing_modulation():
    with pytest.raises(ValueError, match=r"needs a modulation of shape \(4,\) or \(batch, \*\(4,\)\); got none"):
        ZLinear(6, 5, rank=4)(torch.randn(2, 6))


def test_wrong_modulation_shape():
    layer = ZLinear(6, 5, rank=4, mode="square")
    with pytest.raises(ValueError, match=r"modulation has shape \(2, 4\); expected \(4, 4\) .* mode 'square', rank 4"):
        layer(torch.randn(2, 6), modulation=torch.ones(2, 4))


def test_batch_mismatch():
    with pytest.raises(ValueError, match=r"modulation batch size 3 does not match input batch size 2"):
        ZLinear(6, 5, rank=4)(torch.randn(2, 7, 6), modulation=torch.ones(3, 4))


def test_modulation_not_a_tensor():
    with pytest.raises(TypeError, match=r"modulation must be a torch.Tensor, got list"):
        ZLinear(6, 5, rank=2)(torch.randn(2, 6), modulation=[1.0, 1.0])


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "diagonal"}, r"mode must be one of \('diag', 'square', 'full'\), got 'diagonal'"),
    ({"rank": 0}, r"rank must be a positive int, got 0"),
    ({"rank": -2}, r"rank must be a positive int, got -2"),
    ({"rank": 2.0}, r"rank must be a positive int, got 2.0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"dropout": float("nan")}, r"dropout must be in \[0, 1\), got nan"),
    ({"alpha": float("nan")}, r"alpha must be a positive finite number, got nan"),
    ({"alpha": float("inf")}, r"alpha must be a positive finite number, got inf"),
    ({"alpha": 0.0}, r"alpha must be a positive finite number, got 0.0"),
    ({"alpha": -4.0}, r"alpha must be a positive finite number, got -4.0"),
    ({"alpha": "16"}, r"alpha must be a positive finite number, got '16'"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZLinear(6, 5, **kwargs)


def test_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match=r"from_linear expects an nn.Linear, got Conv1d"):
        ZLinear.from_linear(nn.Conv1d(2, 2, 1))


def test_finite_alpha_twin_is_accepted():
    """The twin of the non-finite alpha cases: a finite positive alpha (int or float) builds."""
    assert ZLinear(6, 5, rank=2, alpha=4).scaling == 2.0 and ZLinear(6, 5, rank=2, alpha=0.5).scaling == 0.25


# ---------------------------------------------------------------- merge / unmerge: exact, checked, guarded
def _random_merge_case(in_features, out_features, rank, mode, dtype, seed):
    """A layer with random W in ``dtype`` and a modulation whose ΔW is far from 0 (entries of size ~1)."""
    g = torch.Generator().manual_seed(seed)
    layer = ZLinear(in_features, out_features, rank=rank, mode=mode, alpha=float(rank), dtype=dtype, bias=False)

    def away_from_zero(*shape):  # |x| in [0.5, 1.5], random sign: no factor is (nearly) zero
        return (0.5 + torch.rand(shape, generator=g)) * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)

    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        if mode != "full":
            layer.lora_A.copy_(away_from_zero(rank, in_features))
            layer.lora_B.copy_(away_from_zero(out_features, rank))
    if mode == "diag":
        z = away_from_zero(rank)
    elif mode == "square":
        z = torch.eye(rank) * 2 + 0.1 * torch.randn(rank, rank, generator=g)  # well away from singular
    else:
        z = torch.cat([away_from_zero(rank * in_features), away_from_zero(out_features * rank)])
    return layer, z


@settings(max_examples=40, deadline=None)
@given(in_features=st.integers(1, 24), out_features=st.integers(1, 24), rank=st.integers(1, 8),
       mode=st.sampled_from(["diag", "square", "full"]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), seed=st.integers(0, 2**16))
def test_unmerge_restores_the_weight_bit_for_bit(in_features, out_features, rank, mode, dtype, seed):
    layer, z = _random_merge_case(in_features, out_features, rank, mode, dtype, seed)
    original = layer.weight.detach().clone()
    for _ in range(3):  # repeated round trips neither drift nor accumulate
        layer.merge(z)
        # twin: the merged weight does differ from the base weight, so equality below is not vacuous
        assert not torch.equal(layer.weight, original), "merge must change the weight"
        expected = (original.float() + layer.delta_weight(z)).to(dtype)
        assert torch.equal(layer.weight, expected)  # W + ΔW rounded once to the weight's dtype
        layer.unmerge()
        assert layer.weight.dtype == dtype
        assert torch.equal(layer.weight, original), f"unmerge changed {(layer.weight != original).sum()} weights"


def test_bf16_round_trip_is_exact_where_subtracting_the_delta_is_not():
    """A 64x64 bf16 layer: before exact unmerge, subtracting ΔW again changed 2,441 of 4,096 weights."""
    layer, z = _random_merge_case(64, 64, 8, "diag", torch.bfloat16, seed=12)
    original = layer.weight.detach().clone()
    delta = layer.delta_weight(z)
    subtracted = ((original.float() + delta).to(torch.bfloat16).float() - delta).to(torch.bfloat16)
    changed = int((subtracted != original).sum())
    assert changed > 1000, f"the old subtraction should change many bf16 weights here, changed {changed}"
    layer.merge(z)
    assert int((layer.weight != original).sum()) > 1000
    layer.unmerge()
    assert torch.equal(layer.weight, original)


@pytest.mark.parametrize("where", ["modulation", "lora_B"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_refuses_a_non_finite_delta_and_leaves_the_weight(where, bad):
    layer, z = _random_merge_case(6, 5, 3, "diag", torch.float32, seed=0)
    original = layer.weight.detach().clone()
    if where == "modulation":
        z = z.clone()
        z[1] = bad
    else:
        with torch.no_grad():
            layer.lora_B[2, 0] = bad
    with pytest.raises(ValueError, match=r"merge: ΔW of this ZLinear \(6->5, mode='diag'\) has \d+ non-finite values "
                                         r"\(NaN/inf\).*base weight was left unchanged"):
        layer.merge(z)
    assert not layer.merged and torch.equal(layer.weight, original)


def test_merge_refuses_an_overflowing_fp16_weight():
    layer, z = _random_merge_case(4, 3, 2, "diag", torch.float16, seed=0)
    original = layer.weight.detach().clone()
    big = z * 1e6  # ΔW is finite in fp32, W + ΔW is not representable in fp16 (max 65504)
    assert torch.isfinite(layer.delta_weight(big)).all()
    with pytest.raises(ValueError, match=r"W \+ ΔW of this ZLinear \(4->3\) has \d+ non-finite values in "
                                         r"torch.float16 \(overflow\)"):
        layer.merge(big)
    assert not layer.merged and torch.equal(layer.weight, original)
    layer.merge(z)  # twin: a modest modulation merges
    assert layer.merged and not torch.equal(layer.weight, original)


def test_state_dict_while_merged_is_refused():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
    model[0] = ZLinear.from_linear(model[0], rank=2)
    nn.init.normal_(model[0].lora_B)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].merge(torch.ones(2))
    with pytest.raises(RuntimeError, match=r"state_dict: ZLinear 0 is merged, so its weight holds W \+ ΔW, not the "
                                           r"base weight; call unmerge\(\) before taking a state dict"):
        model.state_dict()
    with pytest.raises(RuntimeError, match=r"load_state_dict: ZLinear 0 is merged; call unmerge\(\) before"):
        model.load_state_dict(before)
    assert not torch.equal(model[0].weight, before["0.weight"])  # twin: merged, the weight is not the base's
    model[0].unmerge()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    model.load_state_dict(before)  # unmerged: loading works again


def test_merged_then_modulated_raises():
    layer = ZLinear(6, 5, rank=4)
    z = torch.ones(4)
    layer.merge(z)
    with pytest.raises(ValueError, match=r"ZLinear is merged; call unmerge\(\) before running it with a modulation"):
        layer(torch.randn(2, 6), modulation=z)
    with layer.modulated(z), pytest.raises(ValueError, match=r"ZLinear is merged; call unmerge\(\)"):
        layer(torch.randn(2, 6))
    layer.adapter_enabled = False
    with pytest.raises(ValueError, match=r"merged, so its base output is not available .* call unmerge\(\) first"):
        layer(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"already merged; call unmerge\(\) first"):
        layer.merge(z)
    layer.unmerge()
    with pytest.raises(ValueError, match=r"not merged; nothing to unmerge"):
        layer.unmerge()


def test_delta_weight_takes_one_context():
    with pytest.raises(ValueError, match=r"one context's modulation of shape \(4,\), got \(2, 4\)"):
        ZLinear(6, 5, rank=4).delta_weight(torch.ones(2, 4))


# ---------------------------------------------------------------- context manager and dropout
def test_modulated_restores_on_exception_and_nests():
    layer = ZLinear(6, 5, rank=2)
    nn.init.normal_(layer.lora_B)
    x, z1, z2 = torch.randn(3, 6), torch.ones(2), torch.full((2,), -3.0)
    with pytest.raises(RuntimeError, match="boom"), layer.modulated(z1):
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="needs a modulation"):
        layer(x)
    with layer.modulated(z1):
        outer = layer(x)
        with layer.modulated(z2):
            inner = layer(x)
        assert torch.equal(layer(x), outer)
    assert torch.equal(outer, layer(x, modulation=z1)) and torch.equal(inner, layer(x, modulation=z2))
    assert (outer - inner).abs().max() > 1e-4, "the two modulations must give different outputs"


def test_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    layer = ZLinear(16, 8, rank=4, dropout=0.5).train()
    x, z = torch.randn(3, 5, 16), torch.randn(3, 4)
    base = F.linear(x, layer.weight, layer.bias)
    assert torch.equal(layer(x, modulation=z), base)  # B = 0: dropout never touches the base path
    nn.init.normal_(layer.lora_B)
    torch.manual_seed(1)
    y = layer(x, modulation=z)
    torch.manual_seed(1)
    dropped = F.dropout(x, 0.5, training=True)

    def expected(inp):
        return base + layer.scaling * F.linear(F.linear(inp, layer.lora_A) * z[:, None, :], layer.lora_B)

    torch.testing.assert_close(y, expected(dropped), rtol=1e-5, atol=1e-5)
    assert (y - expected(x)).abs().max() > 1e-3, "dropout must act on the adapter input"
    layer.eval()
    torch.testing.assert_close(layer(x, modulation=z), expected(x), rtol=1e-5, atol=1e-5)


def test_import_zhyper_stays_light():
    code = ("import sys, zhyper; from zhyper import ZLinear, inject_zlinear, modulate; "
            "heavy = {'deepspeed', 'mlflow', 'sentence_transformers', 'transformers', 'peft', 'datasets'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
