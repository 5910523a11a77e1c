"""Several descriptions at once: the composition math (property tests with twins) and the API's exact identities."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel, compose
from zhyper.layers.zlinear import ZLinear

PROMPTS = ["What is the capital of France?", "Name a colour."]
A, B = "Answer in all capital letters.", "Wrap the whole answer in JSON."


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["diag", "square"]), w1=st.floats(-2, 2), w2=st.floats(-2, 2), seed=st.integers(0, 99))
def test_sum_of_modulations_is_the_sum_of_weight_updates(mode, w1, w2, seed):
    g = torch.Generator().manual_seed(seed)
    layer = ZLinear.from_linear(torch.nn.Linear(12, 10), rank=3, mode=mode, alpha=6.0).double()
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64))
    shape = (3,) if mode == "diag" else (3, 3)
    z1, z2 = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.randn(4, 12, generator=g, dtype=torch.float64)
    base = layer.base_layer(x) if hasattr(layer, "base_layer") else torch.nn.functional.linear(x, layer.weight,
                                                                                              layer.bias)

    def update(z):
        return layer(x, modulation=z) - base

    assert_close(update(w1 * z1 + w2 * z2), w1 * update(z1) + w2 * update(z2))
    if abs(w1) > 0.1:  # twin: the update is not the same for another weight (the sides can differ)
        assert not torch.allclose(update((w1 + 1) * z1), update(w1 * z1))


def test_weights_matrix_combines_rows_exactly():
    z = torch.randn(2, 5, 2, 3)
    m = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]])
    out = compose.weighted(z, m)
    assert_close(out[0], (z[0] + z[1]) / 2)
    assert torch.equal(out[1], z[0]) and torch.equal(out[2], torch.zeros_like(z[0]))


def test_entries_spelling_and_errors():
    assert compose.entries("d", n=2) == [(("d",), (1.0,)), (("d",), (1.0,))]
    assert compose.entries([["a", "b"], "c"]) == [(("a", "b"), (0.5, 0.5)), (("c",), (1.0,))]
    assert compose.entries([["a", "b"], "c"], [[0.2, 1.0], 0.0]) == [(("a", "b"), (0.2, 1.0)), (("c",), (0.0,))]
    with pytest.raises(ValueError, match=r"weights\[0\]: expected 2 number\(s\)"):
        compose.entries([["a", "b"]], [[1.0]])
    with pytest.raises(ValueError, match=r"weights\[0\]: expected finite numbers, got True"):
        compose.entries([["a"]], [[True]])
    with pytest.raises(ValueError, match=r"descriptions\[1\]: expected a non-empty string"):
        compose.entries(["a", []])
    with pytest.raises(ValueError, match="weights apply to combine='modulation' only"):
        compose.check_combine("text", compose.entries([["a", "b"]], [[1.0, 0.2]]), "diag")
    with pytest.raises(ValueError, match="full mode"):
        compose.check_combine("modulation", compose.entries([["a", "b"]]), "full")
    with pytest.raises(ValueError, match="combine: expected one of"):
        compose.check_combine("sum", compose.entries(["a"]), "diag")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tiny_chat_base(tmp_path_factory.mktemp("compose") / "base")
    return perturb(ZhyperModel.from_base(str(base), small_config()), scale=2.0).eval()


def test_weight_zero_is_adapters_off_and_one_is_as_trained(model):
    with model.adapters_off():
        off = model.generate(PROMPTS, "none", max_new_tokens=6)
    assert model.generate(PROMPTS, [A, A], weights=[0.0, 0.0], max_new_tokens=6) == off
    trained = model.generate(PROMPTS, [A, A], max_new_tokens=6)
    assert trained != off  # twin: the description changes the answer
    assert model.generate(PROMPTS, [A, A], weights=[1.0, 1.0], max_new_tokens=6) == trained
    assert_close(model.modulation([A], weights=[0.0]), torch.zeros_like(model.modulation([A])), rtol=0, atol=0)


def test_same_description_twice_is_that_description_and_a_pair_is_its_mean(model):
    one = model.modulation([A])
    assert torch.equal(model.modulation([[A, A]]), one)
    pair = model.modulation([[A, B]])
    assert_close(pair[0], (one[0] + model.modulation([B])[0]) / 2)
    assert not torch.allclose(pair, one)  # twin
    assert model.generate(PROMPTS[:1], [[A, A]], max_new_tokens=6) == model.generate(PROMPTS[:1], [A],
                                                                                     max_new_tokens=6)


def test_text_combine_reads_one_joined_description(model):
    joined = model.modulation([f"{A} {B}"])
    assert torch.equal(model.modulation([[A, B]], combine="text"), joined)
    assert not torch.allclose(model.modulation([[A, B]]), joined)  # the two methods differ
    mixed = model.generate(PROMPTS, [[A, B], B], max_new_tokens=5, combine="text")
    assert len(mixed) == 2


# ---------------------------------------------------------------- weights whose modulation is not usable (issue 31)
def test_a_weight_whose_modulation_overflows_is_an_error_naming_it(model):
    """1e39 overflows float32 in the weighted sum itself: an error naming the description and the weight."""
    with pytest.raises(FloatingPointError, match=r"weight\(s\) \[1e\+39\] for \['Answer in all capital letters\.'\]"
                                                 r".*NaN or inf.*use a smaller weight"):
        model.modulation([A], weights=[1e39], check_finite=True)
    assert torch.isfinite(model.modulation([A], weights=[3.0], check_finite=True)).all()  # twin: a sane weight


@pytest.mark.parametrize("call", ["generate", "modulation", "export_peft"])
def test_a_finite_weight_that_makes_the_output_nan_is_an_error_not_an_empty_answer(model, tmp_path, call):
    """1e30 keeps the modulation finite but overflows the base model's activations: today an empty answer."""
    run = {"generate": lambda w: model.generate(PROMPTS[:1], [A], weights=[w], max_new_tokens=4),
           "modulation": lambda w: model.modulation([A], weights=[w], check_finite=True),
           "export_peft": lambda w: model.export_peft(A, tmp_path / f"out{w:g}", weights=[w])}[call]
    with pytest.raises(FloatingPointError, match=r"weight\(s\) \[1e\+30\] for \['Answer in all capital letters\.'\] "
                                                 r"overflows the base model's activations.*use a smaller weight"):
        run(1e30)
    assert not (tmp_path / "out1e+30").exists()
    run(2.0)  # the twin: a strong but sane weight passes the same check
    if call == "generate":
        assert run(2.0)[0].strip(), "a sane weight gives an answer"


def test_full_mode_advice_for_weights_is_not_circular():
    """Full mode: weights are refused with advice that works (not 'use combine=text', which refuses weights)."""
    weighted = compose.entries([A], [0.5])
    for combine in ("modulation", "text"):
        with pytest.raises(ValueError) as err:
            compose.check_combine(combine, weighted, "full")
        assert str(err.value) == compose.full_mode_refusal(weighted)
        assert "combine='text'" not in str(err.value) and "drop the weights" in str(err.value)
    several = compose.entries([[A, B]])
    with pytest.raises(ValueError, match="join them with combine='text'") as err:
        compose.check_combine("modulation", several, "full")
    assert str(err.value) == compose.full_mode_refusal(several)
    compose.check_combine("text", several, "full")  # the advice given works
    compose.check_combine("modulation", compose.entries([A]), "full")  # twin: one plain description is fine
