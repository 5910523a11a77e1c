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
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the twin checks: the adapter does something, and it is this description's adapter
    assert (want - base_logits(model, ids)).abs().max() > 1e-3, "the adapter must change the base model"
    assert (got - zhyper_logits(model, ids, UPPER)).abs().max() > 1e-3, "it must be this description's adapter"


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
        torch.testing.assert_close(merged(ids).logits, want, rtol=1e-5, atol=1e-5)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(reloaded(ids).logits, want, rtol=1e-5, atol=1e-5)
    assert (want - base_logits(model, ids)).abs().max() > 1e-3, "the adapter must change the base model"
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
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert (want - base_logits(model, ids)).abs().max() > 1e-2, "the adapter must change the base model"
    merged = model.merge(GERMAN)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, want, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- where exports may be written
def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_and_merge_keep_the_users_files(tmp_path):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config())).eval()
    for name, write in (("adapter", lambda out: model.export_peft(GERMAN, out)),
                        ("merged", lambda out: model.merge(GERMAN, out))):
        out = tmp_path / name
        out.mkdir()
        (out / "README.md").write_text("my notes")
        (out / "eval").mkdir()
        (out / "eval" / "scores.csv").write_text("a,b\n1,2\n")
        write(out)
        write(out)  # a second export into the same folder keeps them too
        assert (out / "README.md").read_text() == "my notes"
        assert (out / "eval" / "scores.csv").read_text() == "a,b\n1,2\n"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "merged" / "config.json").is_file()


def test_export_and_merge_refuse_the_checkpoint_they_were_loaded_from(tmp_path):
    perturb(ZhyperModel.from_base(tiny_llama(), small_config())).save_pretrained(tmp_path / "ckpt")
    ckpt = (tmp_path / "ckpt").resolve()
    before = _files(ckpt)
    model = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama()).eval()
    for action, write in (("export_peft", lambda out: model.export_peft(GERMAN, out)),
                          ("merge", lambda out: model.merge(GERMAN, out))):
        for out in (ckpt, ckpt / "adapter"):
            with pytest.raises(ValueError, match=rf"{action}: output folder {out} is the checkpoint folder {ckpt} "
                                                 r"this model was loaded from \(or inside it\)"):
                write(out)
    assert _files(ckpt) == before  # nothing written, nothing replaced
    model.export_peft(GERMAN, tmp_path / "adapter")  # twin: any other folder is fine
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_merge_refuses_the_base_models_folder(tmp_path):
    from transformers import AutoTokenizer

    from zhyper.base_model import smollm2_path

    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    model = perturb(ZhyperModel.from_base(str(base), small_config(),
                                          tokenizer=AutoTokenizer.from_pretrained(smollm2_path()))).eval()
    before = _files(base)
    with pytest.raises(ValueError, match=rf"merge: output folder {base} is the base model's folder {base.resolve()}"):
        model.merge(GERMAN, base)  # would replace the base's own config.json and model.safetensors
    with pytest.raises(ValueError, match=r"export_peft: output folder .* is the base model's folder"):
        model.export_peft(GERMAN, base / "adapter")
    assert _files(base) == before


@pytest.mark.parametrize("where", ["trained", "modulation"])
def test_export_and_merge_refuse_non_finite_tensors(tmp_path, where):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config())).eval()
    with torch.no_grad():
        if where == "trained":
            model.base.get_submodule("model.layers.1.self_attn.v_proj").lora_A[0, 3] = float("nan")
            message = r"tensor base\.model\.layers\.1\.self_attn\.v_proj\.lora_A has 1 non-finite values"
        else:  # every trained tensor finite, but the q_proj head's output overflows float32 in layer 0
            net = model.hypernet
            h = net.hidden(model.encode_descriptions([GERMAN])) - net.hidden(net.context_center[None])
            net.heads["q_proj"].weight.copy_(3e38 * torch.sign(h[0, 0, 0]).expand_as(net.heads["q_proj"].weight))
            net.heads["q_proj"].bias.fill_(2e38)  # finite, but W·h + b is not
            message = (r"the hypernetwork's modulation for 'Answer like a German\.': tensor "
                       r"modulation\[model\.layers\.0\.self_attn\.q_proj\] has \d+ non-finite values")
    with pytest.raises(ValueError, match=rf"export_peft: .*{message}"):
        model.export_peft(GERMAN, tmp_path / "adapter")
    with pytest.raises(ValueError, match=rf"merge: .*{message}"):
        model.merge(GERMAN, tmp_path / "merged")
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "merged").exists()


def test_merge_refuses_a_merged_weight_that_overflows_its_dtype(tmp_path):
    """PEFT merges; a W + ΔW that is not representable in the base's fp16 is named, nothing is written."""
    model = perturb(ZhyperModel.from_base(tiny_llama().to(torch.float16), small_config())).eval()
    layer = model.base.get_submodule("model.layers.0.self_attn.q_proj")
    with torch.no_grad():
        layer.lora_B.fill_(1e6)  # finite fp32 factors, ΔW far above fp16's 65504
    with pytest.raises(ValueError, match=r"merge: the merged weight model\.layers\.0\.self_attn\.q_proj\.weight has "
                                         r"\d+ non-finite values in torch\.float16 \(W \+ ΔW overflows\)"):
        model.merge(GERMAN, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with torch.no_grad():
        layer.lora_B.fill_(1e-2)  # twin: a representable update merges
    assert model.merge(GERMAN).model.layers[0].self_attn.q_proj.weight.dtype == torch.float16
