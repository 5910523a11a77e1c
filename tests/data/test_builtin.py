"""The built-in suite: size, splits, rule compliance of every target, checker discrimination."""

from __future__ import annotations

import json
import re

import pytest

from zhyper.data import BuiltinSuite, builtin_suite
from zhyper.data.builtin import _content
from zhyper.data.rules import RULES, number_to_words


@pytest.fixture(scope="module")
def suite() -> BuiltinSuite:
    return builtin_suite()


def test_size_meets_the_issue(suite):
    assert len(suite.contexts) >= 24
    assert 4 <= len(suite.unseen_contexts) <= 6
    pairs, table = _content()
    assert len(pairs) >= 64
    assert all(len(descs) >= 16 for _, descs in table.values())
    for c in suite.contexts:
        assert sum(1 for x in suite.examples["context"] if x == c) >= 64


def test_splits_and_descriptions(suite):
    ex = suite.examples
    for c, split in zip(ex["context"], ex["split"]):
        assert (split == "unseen") == (c in suite.unseen_contexts)
    assert set(suite.descriptions) == set(suite.seen_contexts)
    assert set(suite.heldout_descriptions) == set(suite.contexts)
    for c in suite.seen_contexts:
        train, held = suite.descriptions[c], suite.heldout_descriptions[c]
        assert len(held) == 4 and len(train) == 12 and not set(train) & set(held)
    for c in suite.unseen_contexts:
        assert len(suite.heldout_descriptions[c]) == 16
    # the validation prompts are the same for every seen context and never used in training
    val = suite.split("validation")
    train = suite.split("train")
    assert set(val["prompt_id"]).isdisjoint(train["prompt_id"])
    assert len(val) == 8 * len(suite.seen_contexts)


def test_seed_changes_the_split_and_is_reproducible():
    a, b, c = builtin_suite(seed=0), builtin_suite(seed=0), builtin_suite(seed=1)
    assert a.descriptions == b.descriptions and a.split("validation")["prompt_id"] == b.split("validation")["prompt_id"]
    assert a.descriptions != c.descriptions
    assert set(a.split("validation")["prompt_id"]) != set(c.split("validation")["prompt_id"])


def test_every_target_response_complies_and_the_base_answer_does_not(suite):
    for c, response, base in zip(suite.examples["context"], suite.examples["response"], suite.examples["base_answer"]):
        assert suite.score(c, response), (c, response)
        assert not suite.score(c, base), (c, base)


def test_checkers_discriminate_between_contexts(suite):
    """For the same prompt, context d's response fails context c's checker (c != d), with no exception."""
    pairs, _ = _content()
    for c in suite.contexts:
        for d in suite.contexts:
            if c != d:
                passed = [b for _, b in pairs if suite.score(c, RULES[d].apply(b))]
                assert not passed, (c, d, passed[:1])


def test_same_prompt_gets_different_responses(suite):
    first = {c: r for c, r, p in zip(suite.examples["context"], suite.examples["response"], suite.examples["prompt_id"])
             if p == 0}
    assert len(set(first.values())) == len(suite.contexts)


@pytest.mark.parametrize("context,good,bad", [
    ("upper_case", "WATER BOILS AT 100 DEGREES.", "Water boils at 100 degrees."),
    ("lower_case", "water boils at 100 degrees.", "water boils at 100 Degrees."),
    ("json_answer", '{"answer": "Water boils."}', '{"answer": "Water boils.", "x": 1}'),
    ("json_answer", '{"answer": "Water boils."}', "answer: Water boils."),
    ("three_words", "Water boils at", "Water boils at 100"),
    ("sign_off", "Water boils.\n\nKind regards, Zed", "Water boils.\nKind regards, Zed"),
    ("numbers_as_words", "Water boils at one hundred degrees.", "Water boils at 100 degrees."),
    ("number_only", "100", "100 degrees"),
    ("numbered_list", "1. Water boils at\n2. 100 degrees", "1. Water boils at\n3. 100 degrees"),
    ("repeat_twice", "Water boils.\nWater boils.", "Water boils.\nWater boiled."),
    ("title_case", "Water Boils At 100 Degrees.", "Water Boils at 100 Degrees."),
    ("code_block", "```\nWater boils.\n```", "```Water boils.```"),
    ("kebab_case", "water-boils-at-100", "water_boils_at_100"),
])
def test_checker_examples(suite, context, good, bad):
    assert suite.score(context, good)
    assert not suite.score(context, bad)


def test_score_ignores_surrounding_whitespace_and_rejects_unknown_context(suite):
    assert suite.score("exclaim", "  Water boils!\n")
    with pytest.raises(ValueError, match="context: expected one of"):
        suite.score("shouting", "HI")
    assert suite.accuracy(["upper_case", "upper_case"], ["HI", "hi"]) == 0.5


def test_json_target_round_trips(suite):
    row = next(r for r in suite.examples if r["context"] == "json_answer")
    assert json.loads(row["response"]) == {"answer": row["base_answer"]}


@pytest.mark.parametrize("n,words", [(0, "zero"), (13, "thirteen"), (42, "forty-two"), (100, "one hundred"),
                                     (1969, "one thousand nine hundred sixty-nine"), (1000, "one thousand"),
                                     (2_000_016, "two million sixteen")])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_number_to_words_rejects_negative():
    with pytest.raises(ValueError, match="n: expected 0 <= n"):
        number_to_words(-1)


def test_base_answers_follow_the_pool_conventions():
    pairs, _ = _content()
    assert len({p for p, _ in pairs}) == len(pairs)
    for prompt, base in pairs:
        assert base.endswith(".") and re.search(r"\d", base) and 6 <= len(base.split()) <= 20, base
        assert not re.search(r"[\"'()\[\]*#_-]", base), base


def test_unseen_override_and_errors():
    s = builtin_suite(unseen=["upper_case"])
    assert s.unseen_contexts == ["upper_case"] and "upper_case" not in s.descriptions
    assert "five_words" in s.seen_contexts
    with pytest.raises(ValueError, match=r"unseen: unknown contexts \['shouting'\]"):
        builtin_suite(unseen=["shouting"])
    with pytest.raises(ValueError, match="n_validation: expected"):
        builtin_suite(n_validation=80)


def test_restrict_keeps_only_the_named_contexts_and_their_roles(suite):
    small = suite.restrict(["upper_case", "json_answer", "kebab_case"])
    assert isinstance(small, BuiltinSuite)
    assert small.seen_contexts == ["upper_case", "json_answer"] and small.unseen_contexts == ["kebab_case"]
    assert set(small.examples["context"]) == {"upper_case", "json_answer", "kebab_case"}
    assert len(small.examples) == 3 * len(suite.examples) // len(suite.contexts)
    assert small.descriptions == {c: suite.descriptions[c] for c in small.seen_contexts}
    assert set(small.heldout_descriptions) == {"upper_case", "json_answer", "kebab_case"}
    assert small.split("validation")["prompt"] == suite.split("validation").filter(
        lambda r: r["context"] in {"upper_case", "json_answer"})["prompt"]
    assert set(suite.examples["context"]) != set(small.examples["context"])  # the full suite has more
    with pytest.raises(ValueError, match=r"contexts: expected a non-empty list of names from .*unknown: \['nope'\]"):
        suite.restrict(["upper_case", "nope"])
    with pytest.raises(ValueError, match=r"contexts: expected a non-empty list"):
        suite.restrict([])
    with pytest.raises(ValueError, match=r"contexts: at least one must be a seen context"):
        suite.restrict(["kebab_case"])
