"""One conditioning interface: embed → modulation → conditioned, on ZhyperModel and the LoRA baseline alike,
and ``conditioned`` the only place in the package that installs a modulation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_llama
from tests.model_helpers import perturb, small_config
from zhyper import ZhyperModel

PACKAGE = Path(__file__).resolve().parents[1] / "zhyper"
DESCRIPTIONS = ["Answer like a German.", "Reply in upper case."]


@pytest.fixture(scope="module")
def model():
    return perturb(ZhyperModel.from_base(tiny_llama(), small_config()).eval())


def test_modulation_of_embeddings_equals_modulation_of_descriptions(model):
    emb = model.embed(DESCRIPTIONS)
    assert emb.shape == (2, model.context_dim)
    torch.testing.assert_close(model.modulation(emb), model.modulation(DESCRIPTIONS))
    # the twin: another description gives another modulation, so the comparison above can fail
    assert not torch.allclose(model.modulation(emb)[0], model.modulation(emb)[1])


def test_forward_is_the_base_inside_conditioned(model):
    ids = torch.randint(0, 97, (2, 7))
    emb = model.embed(DESCRIPTIONS)
    with torch.no_grad():
        through_forward = model(input_ids=ids, context_embeddings=emb).logits
        with model.conditioned(model.modulation(emb)):
            by_hand = model.base(input_ids=ids).logits
        with model.adapters_off():
            plain = model.base(input_ids=ids).logits
    torch.testing.assert_close(through_forward, by_hand)
    assert (through_forward - plain).abs().max() > 1e-3, "the modulation must change the logits"


def test_weights_on_embeddings_are_refused(model):
    with pytest.raises(ValueError, match="weights"):
        model.modulation(model.embed(DESCRIPTIONS), weights=[1.0, 1.0])


def test_lora_baseline_has_the_same_interface_with_an_identity_conditioning():
    from zhyper.baselines import LoRABaseline

    lora = LoRABaseline.from_base(tiny_llama(), small_config()).eval()
    ids = torch.randint(0, 97, (2, 7))
    assert lora.embed(DESCRIPTIONS).shape == (2, 0)
    z = lora.modulation(DESCRIPTIONS)
    assert z is None
    with torch.no_grad():
        plain = lora(input_ids=ids).logits
        with lora.conditioned(z):
            conditioned = lora(input_ids=ids).logits
    torch.testing.assert_close(conditioned, plain)
    with pytest.raises(ValueError, match="no hypernetwork"):
        with lora.conditioned(torch.ones(2, 4)):
            pass


def _modulate_calls() -> list[str]:
    """Where the package calls ``modulate(...)``: 'module:function' for each call site."""
    sites = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "modulate":
                    sites.append(f"{path.relative_to(PACKAGE.parent).as_posix()}:{fn.name}")
    return sorted(set(sites))


def test_conditioned_is_the_only_place_that_installs_a_modulation():
    assert _modulate_calls() == ["zhyper/model.py:conditioned"]
