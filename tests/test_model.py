"""ZhyperModel: forward, batching, gradients, the encoder outside the module tree, checkpoints, generate."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_llama
from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel
from zhyper.layers.inject import adapters_disabled

DESCRIPTIONS = ["Answer like a German.", "Reply in upper case.", "Use exactly three bullet points."]


def build(mode="diag", **overrides):
    return perturb(ZhyperModel.from_base(tiny_llama(), small_config(mode=mode, **overrides)).eval())


@pytest.fixture(scope="module")
def emb():
    return ZhyperModel.from_base(tiny_llama(), small_config()).encode_descriptions(DESCRIPTIONS)


def test_forward_returns_loss_logits_and_modulation(emb):
    model = build()
    ids = torch.randint(0, 97, (3, 9))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, context_embeddings=emb)
    assert out.logits.shape == (3, 9, 97) and out.loss.ndim == 0
    assert out.modulation.shape == (3, model.layout.n_layers, 2, 4)


def test_identity_init_runs_the_base_model_until_trained(emb):
    model = ZhyperModel.from_base(tiny_llama(), small_config(mode="square")).eval()
    ids = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        zhyper = model(input_ids=ids, context_embeddings=emb).logits
        with adapters_disabled(model.base):
            base = model.base(ids).logits
        assert torch.equal(zhyper, base)  # B = 0 at initialisation
        perturb(model)
        perturbed = model(input_ids=ids, context_embeddings=emb).logits
        assert (perturbed - base).abs().max() > 1e-3, "a trained adapter must change the logits"


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
def test_mixed_batch_equals_each_row_alone(mode, emb):
    model = build(mode)
    ids = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        mixed = model(input_ids=ids, context_embeddings=emb).logits
        alone = torch.cat([model(input_ids=ids[i:i + 1], context_embeddings=emb[i:i + 1]).logits for i in range(3)])
        swapped = model(input_ids=ids, context_embeddings=emb[[1, 0, 2]]).logits
    torch.testing.assert_close(mixed, alone, rtol=1e-5, atol=1e-5)
    assert (mixed[0] - swapped[0]).abs().max() > 1e-4, "the description must matter"


def test_one_embedding_row_is_broadcast(emb):
    model = build()
    ids = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        one = model(input_ids=ids, context_embeddings=emb[0]).logits
        two = model(input_ids=ids, context_embeddings=emb[[0, 0]]).logits
    assert torch.equal(one, two)


def test_gradients_reach_only_adapters_and_hypernetwork(emb):
    model = build("square").train()
    ids = torch.randint(0, 97, (3, 9))
    model(input_ids=ids, labels=ids, context_embeddings=emb).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if n.startswith("hypernet.")
                         or n.endswith((".lora_A", ".lora_B"))}
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in trainable)


def test_encoder_is_outside_the_module_tree(emb):
    model = build()
    model.encode_descriptions(DESCRIPTIONS[:1])
    names = [n for n, _ in model.named_modules()] + list(model.state_dict())
    assert all(n == "" or n.startswith(("base", "hypernet")) for n in names)


def test_input_errors(emb):
    model = build()
    ids = torch.randint(0, 97, (3, 5))
    with pytest.raises(ValueError, match="context_embeddings: expected a"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match=r"expected \(3, 384\) for input batch 3"):
        model(input_ids=ids, context_embeddings=emb[:2])
    with pytest.raises(TypeError, match="model_or_path: expected an nn.Module"):
        ZhyperModel.from_base(42, small_config())


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_save_and_load_give_the_same_function(tmp_path, mode, emb):
    model = build(mode)
    model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")  # overwriting is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["README.md", "model.safetensors",
                                                                     "zhyper_config.json"]
    record = json.loads((tmp_path / "ckpt" / "zhyper_config.json").read_text())
    assert record["config"]["mode"] == mode and record["config"]["context_dim"] == 384
    assert record["zhyper_version"] and len(record["layout"]["modules"]) == 4
    keys = set(load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    assert all(k.startswith("hypernet.") or k.endswith((".lora_A", ".lora_B")) for k in keys)
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama()).eval()
    fresh = ZhyperModel.from_base(tiny_llama(), small_config(mode=mode)).eval()
    ids = torch.randint(0, 97, (3, 7))
    with torch.no_grad():
        want = model(input_ids=ids, context_embeddings=emb).logits
        assert torch.equal(loaded(input_ids=ids, context_embeddings=emb).logits, want)
        other = fresh(input_ids=ids, context_embeddings=emb).logits
        assert (other - want).abs().max() > 1e-4, "an untrained model must compute another function"


def test_context_centre_is_saved_and_changes_the_function(tmp_path, emb):
    model = build()
    centre = model.center_contexts(DESCRIPTIONS)
    torch.testing.assert_close(centre, emb.mean(0), rtol=1e-5, atol=1e-6)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama()).eval()
    assert torch.equal(loaded.hypernet.context_center, centre)
    ids = torch.randint(0, 97, (3, 7))
    with torch.no_grad():
        want = model(input_ids=ids, context_embeddings=emb).logits
        assert torch.equal(loaded(input_ids=ids, context_embeddings=emb).logits, want)
        loaded.hypernet.context_center.zero_()
        uncentred = loaded(input_ids=ids, context_embeddings=emb).logits
        assert (uncentred - want).abs().max() > 1e-4, "the centre must change the function"
    with pytest.raises(ValueError, match="non-empty list of training descriptions"):
        model.center_contexts([])
    with pytest.raises(ValueError, match="non-empty list of training descriptions"):
        model.center_contexts("Answer like a German.")


def test_loading_onto_another_base_names_the_module(tmp_path):
    build().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"module model\.layers\.0\.self_attn\.q_proj: in_features is 32 in the "
                                         r"checkpoint but 48 in this base model"):
        ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama(hidden=48))
    with pytest.raises(ValueError, match=r"module model\.layers\.2\.self_attn\.q_proj of this base model is not "
                                         r"in the checkpoint"):
        ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama(n_layers=3))
    with pytest.raises(FileNotFoundError, match="is not a zhyper checkpoint folder"):
        ZhyperModel.from_pretrained(tmp_path)


def test_checkpoint_loaded_in_a_fresh_process_and_exported_gives_the_same_logits(tmp_path):
    """Save here; in a new interpreter load it (base from the recorded path), export PEFT, run both."""
    base_dir = tiny_chat_base(tmp_path / "base")
    model = perturb(ZhyperModel.from_base(str(base_dir), small_config(mode="square"))).eval()
    model.center_contexts(DESCRIPTIONS)  # the centre must travel with the checkpoint into the export
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, 1000, (1, 11))
    with torch.no_grad():
        want = model(input_ids=ids, context_embeddings=model.encode_descriptions(DESCRIPTIONS[:1])).logits
        with adapters_disabled(model.base):
            base_logits = model.base(ids).logits
    assert (want - base_logits).abs().max() > 1e-4, "the adapter must change the base model"
    script = textwrap.dedent(f"""
        import sys, torch
        from peft import PeftModel
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM
        from zhyper import ZhyperModel
        ids = torch.tensor({ids.tolist()})
        model = ZhyperModel.from_pretrained(sys.argv[1]).eval()
        model.export_peft({DESCRIPTIONS[0]!r}, sys.argv[2] + "/peft")
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(base_dir)!r}), sys.argv[2] + "/peft")
        with torch.no_grad():
            z = model(input_ids=ids, context_embeddings=model.encode_descriptions([{DESCRIPTIONS[0]!r}])).logits
            p = peft.eval()(ids).logits
        save_file({{"zhyper": z.contiguous(), "peft": p.contiguous()}}, sys.argv[2] + "/logits.safetensors")
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "ckpt"), str(tmp_path)], check=True, timeout=300)
    got = load_file(str(tmp_path / "logits.safetensors"))
    torch.testing.assert_close(got["zhyper"], want, rtol=1e-5, atol=1e-6)  # bit-exact is not promised across runs
    torch.testing.assert_close(got["peft"], want, rtol=1e-5, atol=1e-5)


def test_generate_mixes_descriptions_in_one_batch(tmp_path):
    base_dir = tiny_chat_base(tmp_path / "base")
    model = perturb(ZhyperModel.from_base(str(base_dir), small_config()), scale=2.0).eval()
    prompts = ["What is the capital of France?", "Name a colour.", "Hi"]
    batch = model.generate(prompts, DESCRIPTIONS, max_new_tokens=6)
    alone = [model.generate([p], [d], max_new_tokens=6)[0] for p, d in zip(prompts, DESCRIPTIONS)]
    assert batch == alone
    other = model.generate(prompts[:1], DESCRIPTIONS[1:2], max_new_tokens=6)
    assert other[0] != batch[0]  # the description changes the answer
    assert model.tokenizer.padding_side == "right"  # restored after left-padded generation
    with pytest.raises(ValueError, match=r"descriptions: expected one per prompt \(3\), got 2"):
        model.generate(prompts, DESCRIPTIONS[:2])


def test_generate_with_beams_returns_every_sequence_of_every_prompt(tmp_path):
    base_dir = tiny_chat_base(tmp_path / "base")
    model = perturb(ZhyperModel.from_base(str(base_dir), small_config()), scale=2.0).eval()
    prompts = ["What is the capital of France?", "Name a colour.", "Hi"]
    beams = model.generate(prompts, DESCRIPTIONS, max_new_tokens=4, num_beams=2, num_return_sequences=2)
    assert len(beams) == len(prompts) * 2 and all(isinstance(a, str) for a in beams)
    # each input's sequences together; its best beam is what that prompt alone gives
    for i, (p, d) in enumerate(zip(prompts, DESCRIPTIONS)):
        alone = model.generate([p], [d], max_new_tokens=4, num_beams=2, num_return_sequences=2)
        assert beams[2 * i: 2 * i + 2] == alone
    one = model.generate(prompts, DESCRIPTIONS, max_new_tokens=4, num_beams=2)  # twin: one sequence each
    assert len(one) == len(prompts)
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\) must not exceed num_beams \(2\) in beam search"):
        model.generate(prompts, DESCRIPTIONS, max_new_tokens=4, num_beams=2, num_return_sequences=3)
