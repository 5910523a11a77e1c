"""ZLinear behaviour: a hand-sized merge, the merge/unmerge ladder, errors, dropout, context managers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
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
    assert torch.allclose(rs.delta_weight(z), 2**0.5 * plain.delta_weight(z))


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
    assert not torch.allclose(modulated, base, atol=1e-3)
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
        assert torch.allclose(layer(x[1:]), modulated[1:], atol=1e-5)
        assert not torch.allclose(layer(x[1:]), base[1:], atol=1e-3)
        layer.unmerge()
        assert not layer.merged
        assert torch.allclose(layer.weight, weight, atol=1e-6)
        assert torch.allclose(layer(x, modulation=z), modulated, atol=1e-5)


def test_merge_is_in_place_on_the_shared_weight():
    linear = nn.Linear(4, 3)
    layer = ZLinear.from_linear(linear, rank=2)
    nn.init.normal_(layer.lora_B)
    storage = linear.weight.data_ptr()
    layer.merge(torch.ones(2))
    assert linear.weight.data_ptr() == storage and layer.weight is linear.weight
    assert torch.allclose(linear.weight, layer.weight)


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
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZLinear(6, 5, **kwargs)


def test_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match=r"from_linear expects an nn.Linear, got Conv1d"):
        ZLinear.from_linear(nn.Conv1d(2, 2, 1))


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
    assert not torch.allclose(outer, inner)


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

    assert torch.allclose(y, expected(dropped), atol=1e-5)
    assert not torch.allclose(y, expected(x), atol=1e-3)  # twin: dropout did act on the adapter input
    layer.eval()
    assert torch.allclose(layer(x, modulation=z), expected(x), atol=1e-5)


def test_import_zhyper_stays_light():
    code = ("import sys, zhyper; from zhyper import ZLinear, inject_zlinear, modulate; "
            "heavy = {'deepspeed', 'mlflow', 'sentence_transformers', 'transformers', 'peft', 'datasets'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
