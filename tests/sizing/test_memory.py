"""The memory formulas of ``zhyper plan`` against what really happens: autograd's saved tensors, DeepSpeed's
own model-state estimator, and the recipe's config handling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import REPO
from zhyper.sizing.memory import (GIB, ModelSizes, Setting, activation_bytes_per_token, estimate, model_sizes,
                                  model_state_bytes)
from zhyper.training.config import load_config

CONFIGS = REPO / "launch" / "configs"


@pytest.fixture(scope="module")
def mistral():
    return model_sizes(load_config(CONFIGS / "mistral7b-multinode.yaml"))


# ----------------------------------------------------------------------------- activations
def _saved_bytes(targets, dtype, n_layers=3, b=2, t=16):
    """Bytes of the distinct non-parameter tensors autograd keeps in a base forward, and the sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.layers.inject import modulate

    hf = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = ZhyperModel.from_base(LlamaForCausalLM(hf).to(dtype), ZhyperConfig(
        rank=4, target_modules=targets, latent_dim=16, head_in=16, hyper_dropout=0.0)).train()
    ids = torch.randint(0, 101, (b, t))
    z = model.hypernet(torch.randn(b, 384))
    storages = {}

    def pack(x):
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), modulate(model.base, model.layout, z):
        model.base(input_ids=ids)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    adapted = {}
    for m in model.layout:
        adapted.setdefault(m.module_type, (m.in_features, m.out_features))
    sizes = ModelSizes("test", n_layers, 64, 96, 4, 2, 16, 101, False, 0, (), 0, 0, (), 0, 0,
                       tuple((k, *v) for k, v in adapted.items()), 4, "none", None)
    return sum(n for k, n in storages.items() if k not in params), sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_activation_formula_matches_what_autograd_keeps(targets, dtype):
    """Per-layer formula x layers (+ the final norm, - layer 0's input norm, which keeps nothing: its input
    needs no gradient) within 2 % of the bytes autograd really keeps (the rest: rotary cos/sin)."""
    n_layers, b, t = 3, 2, 16
    measured, sizes = _saved_bytes(targets, dtype, n_layers, b, t)
    c = 2 if dtype == torch.bfloat16 else 4
    per_layer = sum(activation_bytes_per_token(sizes, c).values())
    estimated = n_layers * per_layer * b * t
    assert estimated == pytest.approx(measured, rel=0.02)
    # twin: the formula depends on what is adapted and on the dtype, and so does the measurement
    other_c = 6 - c
    other = n_layers * sum(activation_bytes_per_token(sizes, other_c).values()) * b * t
    assert other != pytest.approx(measured, rel=0.1)


def test_more_adapted_modules_keep_more():
    qv = activation_bytes_per_token(dataclasses.replace(_SMALL, adapted=(("q_proj", 64, 64), ("v_proj", 64, 32))), 4)
    al = activation_bytes_per_token(dataclasses.replace(_SMALL, adapted=(
        ("q_proj", 64, 64), ("k_proj", 64, 32), ("v_proj", 64, 32), ("o_proj", 64, 64), ("gate_proj", 64, 96),
        ("up_proj", 64, 96), ("down_proj", 96, 64))), 4)
    # q/k/v share one input; gate/up another; down its own; o_proj the attention output SDPA keeps anyway
    assert al["adapters"] - qv["adapters"] == 4 * (64 + 96) + 4 * 4 * 5
    assert al["mlp"] == qv["mlp"] and al["norms"] == qv["norms"]


_SMALL = ModelSizes("test", 3, 64, 96, 4, 2, 16, 101, False, 0, (), 0, 0, (), 0, 0, (), 4, "none", None)


# ----------------------------------------------------------------------------- DeepSpeed's estimator
def _setting(stage, **kw):
    base = dict(nodes=2, gpus_per_node=4, device="cuda", device_memory=80 * GIB, stage=stage, bf16=True,
                micro_batch=2, gas=1, seq=512, checkpointing=False, persistence_threshold=0, contiguous_gradients=False)
    return Setting(**{**base, **kw})


def test_zero2_trained_states_equal_deepspeeds_estimate(mistral):
    """DeepSpeed assumes every parameter is trained; for the trained part (shared A/B + hypernetwork) our
    per-parameter bytes are its own: 2 (bf16, replicated) + 18/N (bf16 + fp32 gradient, fp32 master, Adam)."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ours = model_state_bytes(mistral, _setting(2))
    trained = ours["trained"] + ours["gradients"] + ours["fp32 gradients"] + ours["optimizer"]
    _, ds_gpu = estimate_zero2_model_states_mem_needs(mistral.trained_params, num_gpus_per_node=4, num_nodes=2,
                                                      cpu_offload=False)
    assert trained == pytest.approx(ds_gpu, abs=8)  # integer rounding of the /N terms
    # The frozen base is not trained: only its 16-bit copy, which is DeepSpeed's device figure with the
    # optimizer offloaded (2 bytes per parameter). Its all-on-device figure, as if trained, is ~2x larger.
    _, ds_offload = estimate_zero2_model_states_mem_needs(mistral.base_params, 4, 2, cpu_offload=True)
    assert ours["base"] == ds_offload
    _, ds_trained_base = estimate_zero2_model_states_mem_needs(mistral.base_params, 4, 2, cpu_offload=False)
    assert ds_trained_base / ours["base"] == pytest.approx(1 + 9 / 8)


def test_zero3_states_against_deepspeeds_estimate(mistral):
    """ZeRO-3: DeepSpeed counts 18 B per trained parameter / N (bf16 parameter, fp32 gradient, master, Adam);
    we count 20 (the bf16 gradient partition as well, next to its fp32 copy during the step). The frozen base
    is DeepSpeed's parameters-only figure (optimizer offloaded): 2 B / N, plus 4 B x the largest layer,
    which is our gathered set when one layer is gathered and one prefetched and nothing is kept for reuse.
    With DeepSpeed's default reuse window more stays gathered (up to stage3_max_live_parameters), which its
    estimator leaves out."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    s = _setting(3, prefetch_bucket=500_000_000, max_reuse_distance=0)  # a whole layer prefetched, none kept
    ours = model_state_bytes(mistral, s)
    trained = ours["trained"] + ours["gradients"] + ours["fp32 gradients"] + ours["optimizer"]
    _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(mistral.trained_params, 0, 4, 2, cpu_offload=False,
                                                         cpu_offload_params=False)
    assert trained / ds_gpu == pytest.approx(20 / 18, rel=1e-6)
    _, ds_base, largest = estimate_zero3_model_states_mem_needs(mistral.base_params, mistral.largest_unit, 4, 2,
                                                                cpu_offload=True, cpu_offload_params=False)
    assert ours["base"] + ours["gathered"] == pytest.approx(ds_base, abs=8)
    assert ours["gathered"] == largest == 4 * mistral.largest_unit
    # twins: a prefetch bucket smaller than a layer gathers less than DeepSpeed's 4 B x largest layer; the
    # default reuse window keeps up to max_live (1e9) parameters gathered, more than its estimator counts
    small = model_state_bytes(mistral, _setting(3, prefetch_bucket=mistral.largest_unit // 4, max_reuse_distance=0))
    assert small["gathered"] < largest
    assert model_state_bytes(mistral, _setting(3))["gathered"] == 2 * 1_000_000_000 > largest


def test_stages_partition_what_they_should(mistral):
    by_stage = {st: model_state_bytes(mistral, _setting(st)) for st in (0, 1, 2, 3)}
    assert by_stage[0]["base"] == by_stage[2]["base"] == 2 * mistral.base_params  # replicated
    assert by_stage[3]["base"] == pytest.approx(2 * mistral.base_params / 8, abs=1)  # partitioned over 8
    assert by_stage[1]["optimizer"] == pytest.approx(by_stage[0]["optimizer"] / 8, rel=1e-6)  # states from 1
    assert by_stage[1]["gradients"] == by_stage[0]["gradients"]  # gradients only from 2
    assert by_stage[2]["gradients"] == pytest.approx(by_stage[1]["gradients"] / 8, rel=1e-6)


def test_persistent_parameters_stay_whole(mistral):
    """stage3_param_persistence_threshold: parameters at or below it are not partitioned (the norms here)."""
    p0 = model_state_bytes(mistral, _setting(3))["base"]
    p1 = model_state_bytes(mistral, _setting(3, persistence_threshold=10_000))["base"]
    norms = (2 * 32 + 1) * 4096
    assert p1 - p0 == pytest.approx(2 * norms * (1 - 1 / 8), abs=2)


def test_checkpointing_and_offload_move_the_total(mistral):
    off = estimate(mistral, _setting(3))
    on = estimate(mistral, _setting(3, checkpointing=True))
    assert on.activations_on == off.activations_on and on.device_total < off.device_total
    # with checkpointing a layer keeps only its input: L·c·h per token, plus one layer while it is recomputed
    per_layer = sum(activation_bytes_per_token(mistral, 2).values())
    tokens = 2 * 512
    assert on.activations_on == int(32 * 2 * 4096 * tokens + per_layer * tokens + 4 * 4096 * tokens)
    offloaded = estimate(mistral, _setting(3, offload_optimizer=True, offload_param=True))
    assert offloaded.device_total < off.device_total and offloaded.host_total > off.host_total
