"""Gradient checkpointing keeps every ZLinear's modulation through the recompute (zhyper.layers.checkpointing).

Every test runs a mixed-context batch (each row its own embedding, hence its own modulation) on a
tiny Llama or Mistral in train mode with all dropout 0, so a run with and a run without
checkpointing compute the same function and must give the same gradients of lora_A, lora_B and
every hypernetwork parameter. The twins show what goes wrong without the wrapper: plain HF
checkpointing recomputes the blocks with no modulation (an error) or with whatever modulation the
layers hold at backward time (silently different gradients).
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_llama, tiny_mistral
from tests.model_helpers import perturb, small_config
from zhyper import ZhyperModel
from zhyper.layers.checkpointing import enable_gradient_checkpointing
from zhyper.layers.inject import modulate
from zhyper.layers.zlinear import ZLinear

BASES = {"llama": tiny_llama, "mistral": tiny_mistral}
BATCH, SEQ = 3, 12


def _model(base: str, mode: str) -> ZhyperModel:
    torch.manual_seed(0)
    model = perturb(ZhyperModel.from_base(BASES[base](), small_config(mode=mode)))
    return model.train()  # dropout is 0 everywhere (hyper_dropout=0, LoRA dropout 0, attention dropout 0)


def _batch(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (BATCH, SEQ), generator=g)
    emb = torch.randn(BATCH, 384, generator=g)  # one description per row: a mixed-context batch
    return ids, emb


def _grads(model: ZhyperModel, ids, emb) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, context_embeddings=emb)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), grads


def _count_zlinear_calls(model) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    for m in model.modules():
        if isinstance(m, ZLinear):
            m.register_forward_hook(hook)
    return calls


def _assert_grads_close(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], msg=lambda m, n=name: f"{n}: {m}")


def _assert_grads_differ(got: dict, ref: dict) -> None:
    with pytest.raises(AssertionError):
        _assert_grads_close(got, ref)


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
@pytest.mark.parametrize("base", ["llama", "mistral"])
def test_checkpointed_gradients_equal_plain_gradients(base, mode):
    model = _model(base, mode)
    ids, emb = _batch()
    with torch.no_grad():  # the rows really carry different modulations
        z = model.hypernet(emb)
        z = z if isinstance(z, torch.Tensor) else torch.cat([v.flatten(1) for v in z.values()], 1)
        assert (z[0] - z[1]).abs().max() > 1e-3
    loss_ref, ref = _grads(model, ids, emb)
    calls = _count_zlinear_calls(model)
    _grads(model, ids, emb)
    plain_calls = calls[0]

    assert enable_gradient_checkpointing(model) == 2  # one block per decoder layer
    calls[0] = 0
    loss, got = _grads(model, ids, emb)
    assert calls[0] == 2 * plain_calls  # every adapted layer ran again in backward: it was recomputed
    torch.testing.assert_close(loss, loss_ref)
    names = set(ref)
    assert any(".lora_A" in n for n in names) == (mode != "full")
    assert any(".lora_B" in n for n in names) == (mode != "full")
    assert any(n.startswith("hypernet.") for n in names)
    assert all(ref[n].abs().max() > 0 for n in names if ".heads." in n or "lora" in n)  # gradients reach them
    _assert_grads_close(got, ref)


def test_plain_hf_checkpointing_recomputes_without_a_modulation():
    """Twin: HF's checkpointing alone replays the blocks after `modulate` has been left."""
    model = _model("llama", "diag")
    ids, emb = _batch()
    model.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    out = model(input_ids=ids, labels=ids, context_embeddings=emb)
    with pytest.raises(ValueError, match=r"needs a modulation(.|\n)*ZhyperModel.gradient_checkpointing_enable\(\)"):
        out.loss.backward()


def test_hf_named_switch_on_the_zhyper_model_keeps_the_modulation():
    """``model.gradient_checkpointing_enable()``, the call HF's Trainer makes, gives the gradients without checkpointing."""
    ids, emb = _batch()
    _, ref = _grads(_model("llama", "diag"), ids, emb)
    model = _model("llama", "diag")
    assert model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}) > 0
    assert model.base.is_activation_checkpointing
    _assert_grads_close(_grads(model, ids, emb)[1], ref)


def test_hf_named_switch_refuses_reentrant_checkpointing():
    model = _model("llama", "diag")
    with pytest.raises(ValueError, match="use_reentrant=True is not supported"):
        model.gradient_checkpointing_enable({"use_reentrant": True})
    assert not model.base.is_activation_checkpointing


@pytest.mark.parametrize("mode", ["diag", "square"])
def test_a_stale_modulation_at_backward_is_ignored_only_with_the_wrapper(mode):
    """With another modulation set on the layers when backward runs (e.g. a later forward's), plain HF
    checkpointing recomputes with it and gets different gradients; the wrapper restores the forward's."""
    model = _model("llama", mode)
    ids, emb = _batch()
    _, ref = _grads(model, ids, emb)
    with torch.no_grad():
        stale = model.hypernet(torch.randn(BATCH, 384, generator=torch.Generator().manual_seed(9)))

    model.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    with modulate(model.base, model.layout, stale):  # ZhyperModel.forward restores `stale` on exit
        _, plain = _grads(model, ids, emb)
    _assert_grads_differ(plain, ref)

    assert enable_gradient_checkpointing(model) == 2
    with modulate(model.base, model.layout, stale):
        _, kept = _grads(model, ids, emb)
    _assert_grads_close(kept, ref)


def test_lora_baseline_is_checkpointed_with_nothing_to_keep():
    from zhyper.baselines import LoRABaseline

    torch.manual_seed(0)
    model = LoRABaseline.from_base(tiny_llama(), small_config()).train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    ids, _ = _batch()
    _, ref = _grads(model, ids, None)
    assert enable_gradient_checkpointing(model) == 0
    calls = [0]
    q = model.base.get_base_model().model.layers[0].self_attn.q_proj  # PEFT's LoRA layer, inside the block
    q.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    _, got = _grads(model, ids, None)
    assert calls[0] == 2  # forward and the recompute in backward
    _assert_grads_close(got, ref)
    assert len(ref) == 8  # q and v, A and B, two layers


def test_model_without_checkpointing_support_is_refused():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(SimpleNamespace(base=torch.nn.Linear(2, 2)))


def test_generation_and_no_grad_forward_are_unchanged():
    """No backward, no checkpoint: an eval/no-grad forward gives the same logits with it on."""
    model = _model("llama", "diag")
    ids, emb = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, context_embeddings=emb).logits
        other = model(input_ids=ids, context_embeddings=emb.flip(0)).logits
    enable_gradient_checkpointing(model)
    with torch.no_grad():
        got = model(input_ids=ids, context_embeddings=emb).logits
    torch.testing.assert_close(got, ref)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(other, ref)


def test_adapted_layers_outside_the_decoder_layers_need_no_wrapper():
    """An adapted LM head is never recomputed: nothing to wrap, and the gradients are still the same."""
    torch.manual_seed(0)
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config(target_modules=["lm_head", "q_proj"]))).train()
    ids, emb = _batch()
    _, ref = _grads(model, ids, emb)
    assert enable_gradient_checkpointing(model) == 2  # the two decoder layers (their q_proj); not the head
    _, got = _grads(model, ids, emb)
    _assert_grads_close(got, ref)
    assert any("lm_head.lora_A" in n for n in got)


def test_a_zlinear_in_a_checkpointed_module_but_no_wrapped_block_is_refused():
    model = _model("llama", "diag")
    model.base.model.extra = ZLinear(8, 8, rank=2)  # held by LlamaModel (flagged by HF) outside its layers
    with pytest.raises(RuntimeError, match=r"LlamaModel is checkpointed and holds ZLinear layers.*'extra'"):
        enable_gradient_checkpointing(model)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.base.modules())  # left as it was
    del model.base.model.extra  # twin: without it the same model is accepted
    assert enable_gradient_checkpointing(model) == 2
