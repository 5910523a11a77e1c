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


def _flip_last_tensor_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


def test_an_export_records_its_checksums_and_a_changed_adapter_is_refused_on_load(tmp_path):
    import hashlib

    from tests.model_helpers import tiny_chat_base
    from zhyper.baselines import LoRABaseline

    base = tiny_chat_base(tmp_path / "base")
    model = perturb(ZhyperModel.from_base(str(base), small_config())).eval()
    out = model.export_peft(GERMAN, tmp_path / "adapter")
    files = json.loads((out / "zhyper_export.json").read_text())["files"]
    data = (out / "adapter_model.safetensors").read_bytes()
    assert files == {"adapter_model.safetensors": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    LoRABaseline.from_pretrained(out)  # twin: the adapter as exported loads
    _flip_last_tensor_byte(out / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=rf"{out / 'adapter_model.safetensors'}: its SHA-256 .* differs"):
        LoRABaseline.from_pretrained(out)
    LoRABaseline.from_pretrained(out, verify=False)  # weights edited on purpose
    merged = tmp_path / "merged"
    model.merge(GERMAN, merged)
    assert "model.safetensors" in json.loads((merged / "zhyper_export.json").read_text())["files"]
    from zhyper.export import verify_export

    verify_export(merged)
    _flip_last_tensor_byte(merged / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{merged / 'model.safetensors'}: its SHA-256"):
        verify_export(merged)


def test_a_lora_runs_adapter_records_its_checksum_and_a_swapped_one_is_refused(tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    from tests.model_helpers import tiny_chat_base
    from zhyper.baselines import LoRABaseline

    base = tiny_chat_base(tmp_path / "base")
    lora = LoRABaseline.from_base(AutoModelForCausalLM.from_pretrained(base), small_config())
    lora.save_pretrained(tmp_path / "lora")
    LoRABaseline.from_pretrained(tmp_path / "lora")  # twin: as saved it loads
    perturb(ZhyperModel.from_base(str(base), small_config())).export_peft(GERMAN, tmp_path / "other")
    shutil.copy(tmp_path / "other" / "adapter_model.safetensors", tmp_path / "lora" / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"adapter_model.safetensors has \d+ bytes|adapter_model.safetensors: its SHA"):
        LoRABaseline.from_pretrained(tmp_path / "lora")


def test_exports_of_two_formats_in_one_folder_never_contradict_each_other(tmp_path, capsys):
    from zhyper.cli import main
    from zhyper.testing import make_checkpoint

    ckpt = make_checkpoint(tmp_path)
    out = tmp_path / "out"

    def generate(description, fmt="peft"):
        code = main(["generate", "--checkpoint", str(ckpt), "--description", description, "--out", str(out),
                     "--format", fmt])
        return code, capsys.readouterr().err

    assert generate(GERMAN)[0] == 0
    assert generate(GERMAN, "zhyper")[0] == 0  # the same description in both formats: one consistent folder
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = generate(UPPER, "zhyper")  # twin: another description beside the German adapter
    assert code == 2 and f"{out} holds the peft export of {GERMAN!r}" in err and "contradict" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing was written
    record = json.loads((out / "zhyper_export.json").read_text())
    assert sorted(record["formats"]) == ["peft", "zhyper"] and record["description"] == GERMAN
    code, err = generate(UPPER)  # the peft files would be replaced, the zhyper ones would still say German
    assert code == 2 and f"the zhyper export of {GERMAN!r}" in err
    alone = tmp_path / "alone"
    for description in (GERMAN, UPPER):  # one format only: a new description replaces the whole export
        assert main(["generate", "--checkpoint", str(ckpt), "--description", description, "--out", str(alone),
                     "--format", "zhyper"]) == 0
    assert (alone / "description.txt").read_text() == UPPER + "\n"
    assert json.loads((alone / "zhyper_export.json").read_text())["description"] == UPPER


def test_a_single_number_as_weights_exports_as_the_one_element_list(tmp_path):
    """export_peft's docstring allows one number as the weight of one description: it records [w] (was a TypeError)."""
    from safetensors.torch import load_file

    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config())).eval()
    scalar = model.export_peft(GERMAN, tmp_path / "scalar", weights=0.5)
    listed = model.export_peft(GERMAN, tmp_path / "listed", weights=[0.5])
    full = model.export_peft(GERMAN, tmp_path / "full", weights=1.0)
    a, b, c = (load_file(str(f / "adapter_model.safetensors")) for f in (scalar, listed, full))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert any((a[k] - c[k]).abs().max() > 1e-6 for k in a)  # the twin: another weight, another adapter
