"""Evaluation helpers: paired conditioning gap with its standard error, per-example losses over rank shares."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper.evaluation.losses import eval_items, example_losses, mean_loss, paired_gap


def _counts(n):
    return torch.tensor(n, dtype=torch.float64)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50), st.integers(1, 40)), min_size=2, max_size=30))
def test_paired_gap_is_the_token_mean_difference(rows):
    right = _counts([r for r, _, _ in rows])
    wrong = _counts([w for _, w, _ in rows])
    n = _counts([k for _, _, k in rows])
    gap, se = paired_gap((right, n), (wrong, n))
    assert gap == pytest.approx(float(right.sum() / n.sum() - wrong.sum() / n.sum()), abs=1e-9)
    assert se >= 0
    if torch.equal(right, wrong):
        assert gap == 0 and se == 0
    swapped, se_swapped = paired_gap((wrong, n), (right, n))  # antisymmetric, same uncertainty
    assert swapped == pytest.approx(-gap, abs=1e-9) and se_swapped == pytest.approx(se, abs=1e-9)


def test_paired_gap_error_shrinks_with_consistent_differences():
    n = _counts([10] * 20)
    wrong = _counts([30.0] * 20)
    steady = paired_gap((wrong - 5.0, n), (wrong, n))  # every example 0.5 nats/token better
    noisy = paired_gap((wrong - 5.0 + _counts([40.0, -40.0] * 10), n), (wrong, n))
    assert steady[0] == pytest.approx(-0.5) and noisy[0] == pytest.approx(-0.5)
    assert steady[1] == pytest.approx(0.0, abs=1e-12) and noisy[1] > 0.1


def test_paired_gap_refuses_unpaired_examples():
    with pytest.raises(ValueError, match="token counts differ"):
        paired_gap((_counts([1.0, 2.0]), _counts([3, 4])), (_counts([1.0, 2.0]), _counts([3, 5])))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from zhyper import ZhyperModel
    from zhyper.data import ChatCollator, builtin_suite

    base = tiny_chat_base(tmp_path_factory.mktemp("base"))
    model = perturb(ZhyperModel.from_base(str(base), small_config())).eval()
    collator = ChatCollator(model.tokenizer, max_length=96)

    def forward(ids, mask, emb):
        return model(input_ids=ids, attention_mask=mask, context_embeddings=emb).logits

    return forward, collator, model.encode_descriptions, builtin_suite()


def test_wrong_items_pair_the_same_rows_with_another_context(scorer):
    *_, data = scorer
    right = eval_items(data, "validation", 12)
    wrong = eval_items(data, "validation", 12, description="wrong")
    assert [(r.prompt, r.response, r.context) for r in right] == [(w.prompt, w.response, w.context) for w in wrong]
    pool = {c: set(data.heldout_descriptions[c]) for c in data.heldout_descriptions}
    assert all(r.description in pool[r.context] for r in right)
    assert all(w.description not in pool[w.context] for w in wrong)


def test_rank_shares_add_up_to_the_single_process_losses(scorer):
    forward, collator, encode, data = scorer
    items = eval_items(data, "validation", 7)  # odd: rank 1's share is padded
    whole = example_losses(forward, collator, encode, items, 0, 1, batch_size=3)
    parts = [example_losses(forward, collator, encode, items, r, 2, batch_size=2) for r in (0, 1)]
    summed = (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])  # what the all-reduce adds
    torch.testing.assert_close(summed[0], whole[0], rtol=1e-5, atol=1e-8)
    assert torch.equal(summed[1], whole[1])
    assert (whole[1] > 0).all() and (parts[0][1] == 0).sum() == 3  # each item scored once
    assert mean_loss(forward, collator, encode, items, 0, 1, 3) == pytest.approx(
        float(whole[0].sum() / whole[1].sum()))
    wrong = example_losses(forward, collator, encode, eval_items(data, "validation", 7, description="wrong"), 0, 1, 3)
    assert torch.equal(wrong[1], whole[1])
    assert (wrong[0] - whole[0]).abs().max() > 1e-4, "the loss with wrong descriptions must differ"


@pytest.mark.parametrize("gap, se, verdict", [(-0.03, 0.01, "clearly negative"), (-0.01, 0.01, "not distinguishable"),
                                              (0.05, 0.01, "clearly positive")])
def test_describe_gap_uses_two_standard_errors(gap, se, verdict):
    from zhyper.evaluation.report import describe_gap

    text = describe_gap(gap, se)
    assert verdict in text and f"{gap:+.4f}" in text and f"{2 * se:.4f}" in text


def test_context_gaps_are_each_contexts_own_paired_gap():
    from zhyper.evaluation.losses import EvalItem, context_gaps
    from zhyper.evaluation.report import gap_lines

    items = [EvalItem("p", "r", "", c, "d") for c in ("china", "africa", "china", "africa", "china", "africa")]
    n = torch.full((6,), 10.0, dtype=torch.float64)
    wrong = torch.full((6,), 30.0, dtype=torch.float64)
    right = torch.tensor([20.0, 31.0, 21.0, 29.0, 19.0, 30.0], dtype=torch.float64)  # china helped, africa not
    out = context_gaps("seen", items, (right, n), (wrong, n))
    torch.testing.assert_close(out["seen_gap/china"], paired_gap((right[[0, 2, 4]], n[:3]), (wrong[:3], n[:3]))[0])
    assert out["seen_gap/china"] < -0.9 and abs(out["seen_gap/africa"]) < 0.1  # the twin: they differ
    lines = gap_lines(out)
    assert any("context china" in line and "clearly negative" in line for line in lines)
    assert any("context africa" in line and "not distinguishable" in line for line in lines)
    one = [EvalItem("p", "r", "", "china", "d")] * 6  # a single context: nothing per context
    assert context_gaps("seen", one, (right, n), (wrong, n)) == {}


def test_examples_scored_on_different_response_tokens_are_left_out_of_the_gaps():
    from zhyper.evaluation.losses import paired_only
    from zhyper.evaluation.report import gap_lines

    n = _counts([10, 10, 10, 10])
    scored = {"wrong": (_counts([30.0] * 4), n), "heldout": (_counts([20.0] * 4), n)}
    same, items, unpaired = paired_only(scored, list("abcd"))
    assert unpaired == 0 and same is scored and items == list("abcd")  # the twin: nothing to leave out
    scored["wrong"] = (_counts([30.0, 27.0, 30.0, 30.0]), _counts([10, 9, 10, 10]))  # example 1 cut shorter
    kept, items, unpaired = paired_only(scored, list("abcd"))
    assert unpaired == 1 and items == ["a", "c", "d"]
    assert paired_gap(kept["heldout"], kept["wrong"])[0] == pytest.approx(-1.0)
    assert any("1 example(s) left out" in line for line in gap_lines({"seen_gap_unpaired": 1.0}))


def test_gaps_with_the_description_in_the_prompt_survive_response_truncation(scorer):
    from zhyper.data import ChatCollator
    from zhyper.evaluation.losses import _gap_metrics

    forward, collator, encode, data = scorer
    tight = ChatCollator(collator.tokenizer, max_length=56, description_in_prompt=True)  # long descriptions cut answers
    out = _gap_metrics("seen", forward, tight, encode, data, "validation", 0, 1, 24, 8, ("heldout",))
    assert out["seen_gap_unpaired"] >= 1 and "seen_gap" in out
    roomy = ChatCollator(collator.tokenizer, max_length=512, description_in_prompt=True)
    assert "seen_gap_unpaired" not in _gap_metrics("seen", forward, roomy, encode, data, "validation", 0, 1, 24, 8,
                                                   ("heldout",))
