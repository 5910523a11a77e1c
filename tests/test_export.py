"""Identity 7: the exported PEFT adapter and the merged model compute exactly the trained function."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import tiny_llama, tiny_mistral
from tests.model_helpers import perturb, small_config
from zhyper import ZhyperModel
from zhyper.layers.inject import adapters_disabled

GERMAN, UPPER = "Answer like a German.", "Reply in upper case."


def zhyper_logits(model, ids, description):
    with torch.no_grad():
        return model(input_ids=ids, context_embeddings=model.encode_descriptions([description] * len(ids))).logits


def base_logits(model, ids):
    with torch.no_grad(), adapters_disabled(model.base):
        return model.base(ids).logits


@pytest.mark.parametrize("mode, rslora, targets, builder", [
    ("diag", False, ["q_proj", "v_proj"], tiny_llama),
    ("square", True, ["q_proj", "v_proj"], tiny_llama),
    ("full", False, ["q_proj", "v_proj"], tiny_llama),
    ("diag", False, "all-linear", tiny_mistral),
    ("square", False, ["k_proj", "o_proj", "down_proj"], tiny_mistral),
])
def test_peft_adapter_equals_zhyper(tmp_path, mode, rslora, targets, builder):
    from peft import PeftModel

    model = perturb(ZhyperModel.from_base(builder(), small_config(mode=mode, rslora=rslora, target_modules=targets,
                                                                  alpha=12.0))).eval()
    out = model.export_peft(GERMAN, tmp_path / "adapter")
    peft = PeftModel.from_pretrained(builder(), str(out)).eval()
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        got = peft(ids).logits
    want = zhyper_logits(model, ids, GERMAN)
    assert torch.allclose(got, want, atol=1e-5)
    # the twin checks: the adapter does something, and it is this description's adapter
    assert not torch.allclose(want, base_logits(model, ids), atol=1e-3)
    assert not torch.allclose(got, zhyper_logits(model, ids, UPPER), atol=1e-3)


def test_adapter_config_is_standard(tmp_path):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config(rank=4, alpha=8.0, rslora=True)))
    out = model.export_peft(GERMAN, tmp_path / "adapter")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"], cfg["peft_type"]) == (4, 8.0, True, "LORA")
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((out / "zhyper_export.json").read_text())["description"] == GERMAN
    from safetensors.torch import load_file

    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"].shape == (4, 32)
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == (16, 4)


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_merged_model_equals_zhyper(tmp_path, mode):
    from transformers import AutoModelForCausalLM

    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config(mode=mode))).eval()
    merged = model.merge(GERMAN, tmp_path / "merged")
    ids = torch.randint(0, 97, (2, 10))
    want = zhyper_logits(model, ids, GERMAN)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want, atol=1e-5)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        assert torch.allclose(reloaded(ids).logits, want, atol=1e-5)
    assert not torch.allclose(want, base_logits(model, ids), atol=1e-3)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in k for k in merged.state_dict())


@pytest.mark.slow
def test_smollm2_peft_adapter_and_merge_equal_zhyper(tmp_path):
    """Identity 7 on the shipped SmolLM2-135M-Instruct (real weights, real tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from zhyper.base_model import smollm2_path

    model = perturb(ZhyperModel.from_base("smollm2", small_config(mode="square")), scale=0.05).eval()
    assert model.base_model_id == "smollm2"
    out = model.export_peft(GERMAN, tmp_path / "adapter")
    ids = model.tokenizer(["The capital of Germany is Berlin, and the capital of France is"],
                          return_tensors="pt").input_ids
    want = zhyper_logits(model, ids, GERMAN)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_path()), str(out)).eval()
    with torch.no_grad():
        got = peft(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(want, base_logits(model, ids), atol=1e-2)
    merged = model.merge(GERMAN)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want, atol=1e-4)
