"""Injection of ZLinear into tiny randomly initialised Llama and Mistral models, and modulate()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import tiny_llama, tiny_mistral
from zhyper.layers.inject import adapters_disabled, inject_zlinear, modulate, zlinear_modules
from zhyper.layers.zlinear import ZLinear

IDS = torch.tensor([[5, 17, 3, 88, 42, 9, 61], [1, 2, 3, 4, 5, 6, 7], [90, 80, 70, 60, 50, 40, 30]])


def _train_b(model: nn.Module, seed: int = 1) -> None:
    """Give every injected B non-zero values, so that only the modulation decides the update."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ZLinear) and m.lora_B is not None:
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g))


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _random_modulation(layout, batch: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = layout.shape_of(layout.module_types[0])
    return 1 + torch.randn(batch, layout.n_layers, len(layout.module_types), *shape, generator=g)


def test_default_targets_are_q_and_v():
    model = tiny_llama()
    q_weight = model.model.layers[1].self_attn.q_proj.weight
    layout = inject_zlinear(model, rank=4)
    assert layout.names == [f"model.layers.{i}.self_attn.{t}" for i in (0, 1) for t in ("q_proj", "v_proj")]
    assert layout.module_types == ("q_proj", "v_proj") and layout.n_layers == 2 and len(layout) == 4
    assert [(m.layer_index, m.type_index) for m in layout] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert layout.shape_of("q_proj") == (4,)
    assert layout.features_of("q_proj") == (32, 32) and layout.features_of("v_proj") == (32, 16)  # GQA: 2 kv heads
    assert all(isinstance(m, ZLinear) for m in zlinear_modules(model, layout))
    assert model.model.layers[1].self_attn.q_proj.weight is q_weight  # the base weight is reused, not copied
    assert type(model.model.layers[0].self_attn.k_proj) is nn.Linear and type(model.lm_head) is nn.Linear


def test_all_linear_excludes_the_lm_head():
    model = tiny_llama()
    layout = inject_zlinear(model, "all-linear", rank=2)
    assert layout.module_types == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert len(layout) == 14 and "lm_head" not in layout.names
    assert type(model.lm_head) is nn.Linear
    assert not any(type(m) is nn.Linear for n, m in model.named_modules() if n != "lm_head")
    assert layout.features_of("down_proj") == (64, 32)


def test_custom_dotted_names_and_square_mode():
    model = tiny_mistral()
    layout = inject_zlinear(model, ["self_attn.o_proj", "down_proj"], rank=3, mode="square")
    assert layout.module_types == ("o_proj", "down_proj")
    assert layout.names == ["model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj",
                            "model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"]
    assert layout.shape_of("down_proj") == (3, 3)
    assert inject_zlinear(tiny_mistral(), "o_proj, down_proj", rank=3, mode="square") == layout  # comma string


def test_order_is_deterministic():
    layouts = [inject_zlinear(tiny_llama(seed=s), "all-linear", rank=2) for s in (0, 1)]
    assert layouts[0] == layouts[1]
    keys = [(m.layer_index, m.type_index) for m in layouts[0]]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_nothing_matched_lists_candidates_and_leaves_the_model_alone():
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"no nn.Linear matched target_modules=\['qkv_proj'\].*'q_proj'.*'v_proj'"):
        inject_zlinear(model, ["qkv_proj"])
    assert not any(isinstance(m, ZLinear) for m in model.modules())


def test_a_target_that_is_not_a_linear_raises():
    model = tiny_llama()
    with pytest.raises(TypeError, match=r"'mlp' matched model.layers.0.mlp, a LlamaMLP, not an nn.Linear"):
        inject_zlinear(model, ["q_proj", "mlp"])
    assert not any(isinstance(m, ZLinear) for m in model.modules())


def test_injecting_twice_raises():
    model = tiny_llama()
    inject_zlinear(model)
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.q_proj is already a ZLinear"):
        inject_zlinear(model)


def test_two_modules_in_one_grid_cell_raise_before_any_replacement():
    block = nn.Module()
    block.attn, block.mlp = nn.Module(), nn.Module()
    block.attn.proj, block.mlp.proj = nn.Linear(4, 4), nn.Linear(4, 4)
    model = nn.Module()
    model.blocks = nn.ModuleList([block])
    with pytest.raises(ValueError, match=r"share one \(layer, type\) grid cell.*blocks.0.attn.proj"):
        inject_zlinear(model, ["proj"])
    assert not any(isinstance(m, ZLinear) for m in model.modules())
    assert len(inject_zlinear(model, ["attn.proj"])) == 1  # a more specific suffix works


class _TinyGPT2Block(nn.Module):
    def __init__(self):
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.c_attn, self.c_proj = Conv1D(3 * 8, 8), Conv1D(8, 8)
        self.lm_head = nn.Linear(8, 11)


@pytest.mark.parametrize("targets", [["c_attn"], "all-linear"])
def test_gpt2_conv1d_is_rejected_with_a_clear_error(targets):
    with pytest.raises(TypeError, match=r"c_attn is a GPT-2-style Conv1D .* ZLinear adapts nn.Linear only"):
        inject_zlinear(_TinyGPT2Block(), targets)


# ---------------------------------------------------------------- the whole model with modulations
@pytest.mark.parametrize("builder", [tiny_llama, tiny_mistral])
def test_zero_modulation_gives_the_base_logits_exactly(builder):
    model = builder()
    base = _logits(model)
    layout = inject_zlinear(model, rank=4)
    _train_b(model)
    zero = torch.zeros(3, layout.n_layers, 2, 4)
    with modulate(model, layout, zero):
        assert torch.equal(_logits(model), base)
    with adapters_disabled(model):
        assert torch.equal(_logits(model), base)
    with modulate(model, layout, _random_modulation(layout, 3)):
        assert (_logits(model) - base).abs().max() > 1e-3  # twin: a non-zero modulation moves the logits


def test_bf16_model_zero_modulation_is_exact_and_keeps_dtype():
    model = tiny_llama().to(torch.bfloat16)
    base = _logits(model)
    layout = inject_zlinear(model, "all-linear", rank=4)
    _train_b(model)
    assert all(m.lora_A.dtype == torch.float32 for m in zlinear_modules(model, layout))
    zero = torch.zeros(3, layout.n_layers, len(layout.module_types), 4)
    with modulate(model, layout, zero):
        logits = _logits(model)
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, base)
    with modulate(model, layout, _random_modulation(layout, 3)):
        assert (_logits(model).float() - base.float()).abs().max() > 1e-2


def test_modulate_clears_on_error_and_restores_when_nested():
    model = tiny_llama()
    layout = inject_zlinear(model, rank=4)
    _train_b(model)
    m = _random_modulation(layout, 3)
    with pytest.raises(RuntimeError, match="boom"), modulate(model, layout, m):
        raise RuntimeError("boom")
    assert all(layer._modulation is None for layer in zlinear_modules(model, layout))
    with pytest.raises(ValueError, match="needs a modulation"):
        _logits(model)
    with modulate(model, layout, m):
        outer = _logits(model)
        with modulate(model, layout, torch.zeros_like(m)):
            pass
        assert torch.equal(_logits(model), outer)


def test_mapping_forms_equal_the_tensor_form():
    model = tiny_llama()
    layout = inject_zlinear(model, rank=4)
    _train_b(model)
    m = _random_modulation(layout, 3)
    with modulate(model, layout, m):
        expected = _logits(model)
    by_type = {"q_proj": m[:, :, 0], "v_proj": m[:, :, 1]}
    by_name = {mod.name: m[:, mod.layer_index, mod.type_index] for mod in layout}
    for mapping in (by_type, by_name):
        with modulate(model, layout, mapping):
            assert torch.equal(_logits(model), expected)
    with modulate(model, layout, {"q_proj": m[:, :, 1], "v_proj": m[:, :, 0]}):  # twin: swapped types differ
        assert (_logits(model) - expected).abs().max() > 1e-3


def test_modulate_input_errors():
    model = tiny_llama()
    layout = inject_zlinear(model, rank=4)
    with pytest.raises(ValueError, match=r"modulation tensor has shape \(3, 2, 4\); expected \(batch, 2, 2, "):
        with modulate(model, layout, torch.ones(3, 2, 4)):
            pass
    with pytest.raises(ValueError, match=r"keys \['k_proj'\] that are neither an adapted module name nor"):
        with modulate(model, layout, {"q_proj": torch.ones(3, 2, 4), "k_proj": torch.ones(3, 2, 4)}):
            pass
    with pytest.raises(ValueError, match=r"no entry for 'model.layers.0.self_attn.v_proj' nor its type 'v_proj'"):
        with modulate(model, layout, {"q_proj": torch.ones(3, 2, 4)}):
            pass
    with pytest.raises(TypeError, match=r"a tensor \(batch, n_layers, n_types, ...\) or a mapping, got list"):
        with modulate(model, layout, [torch.ones(3, 2, 2, 4)]):
            pass


def test_full_mode_shapes_differ_by_type_and_zero_is_the_base():
    model = tiny_llama()
    base = _logits(model)
    layout = inject_zlinear(model, rank=2, mode="full")
    assert layout.shape_of("q_proj") == (2 * 32 + 32 * 2,) and layout.shape_of("v_proj") == (2 * 32 + 16 * 2,)
    zero = {t: torch.zeros(3, layout.n_layers, *layout.shape_of(t)) for t in layout.module_types}
    with modulate(model, layout, zero):
        assert torch.equal(_logits(model), base)
    g = torch.Generator().manual_seed(0)
    some = {t: torch.randn(v.shape, generator=g) for t, v in zero.items()}
    with modulate(model, layout, some):
        assert (_logits(model) - base).abs().max() > 1e-3


@pytest.mark.parametrize("builder", [tiny_llama, tiny_mistral])
def test_mixed_batch_in_a_model_equals_per_sample_runs(builder):
    model = builder()
    layout = inject_zlinear(model, rank=4, mode="square")
    _train_b(model)
    g = torch.Generator().manual_seed(3)
    m = torch.eye(4) + 0.5 * torch.randn(3, layout.n_layers, 2, 4, 4, generator=g)
    with modulate(model, layout, m):
        batched = _logits(model)
    alone = []
    for i in range(3):
        with modulate(model, layout, m[i:i + 1]):
            alone.append(_logits(model, IDS[i:i + 1]))
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-5, atol=1e-5)
    with modulate(model, layout, m.roll(1, dims=0)):  # twin: the samples' own modulations matter
        assert (_logits(model) - batched).abs().max() > 1e-3


def test_gradients_reach_only_adapters_and_the_modulation():
    model = tiny_llama().requires_grad_(False)
    layout = inject_zlinear(model, "all-linear", rank=4)
    _train_b(model)
    m = _random_modulation(layout, 3).requires_grad_(True)
    with modulate(model, layout, m):
        out = model(input_ids=IDS, labels=IDS)
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert m.grad is not None and m.grad.abs().sum() > 0
