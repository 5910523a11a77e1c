"""Control descriptions, held-out paraphrases, description augmentation and the null pseudo-context."""

from __future__ import annotations

import random

import pytest

from zhyper.data import builtin_suite
from zhyper.data.augment import augment_description, augment_descriptions
from zhyper.data.builtin import paraphrases
from zhyper.data.controls import control_descriptions, random_strings, unrelated_sentences
from zhyper.data.rules import RULES


def test_control_pools_are_disjoint_and_deterministic():
    train, test = random_strings(300, "train"), random_strings(300, "eval")
    assert len(set(train)) == 300 and not set(train) & set(test)
    assert random_strings(50, "eval") == test[:50] and random_strings(50, "eval", seed=1) != test[:50]
    assert len(unrelated_sentences("train")) == 60 and len(unrelated_sentences("eval")) == 40
    assert not set(unrelated_sentences("train")) & set(unrelated_sentences("eval"))
    kinds = [k for k, _ in control_descriptions(10)]
    assert kinds == ["random_string", "unrelated_sentence"] * 5
    with pytest.raises(ValueError, match="pool: expected one of"):
        random_strings(3, "test")


def test_paraphrases_are_held_out_and_cover_every_rule():
    table = paraphrases()
    assert set(table) == set(RULES) and all(len(v) == 10 for v in table.values())
    data = builtin_suite()
    trained = {d.lower().rstrip(".!?") for ds in data.descriptions.values() for d in ds}
    assert not {p.lower().rstrip(".!?") for ps in table.values() for p in ps} & trained
    assert data.paraphrases["upper_case"] == list(table["upper_case"])
    assert set(data.restrict(["json_answer", "kebab_case"]).paraphrases) == {"json_answer", "kebab_case"}


def test_a_paraphrase_used_for_training_is_refused():
    from zhyper.data.base import ContextData

    data = builtin_suite().restrict(["upper_case", "lower_case"])
    leaked = {**data.paraphrases, "upper_case": [data.descriptions["upper_case"][0]]}
    with pytest.raises(ValueError, match="paraphrases: must never be trained on"):
        ContextData(data.examples, data.descriptions, data.heldout_descriptions, data.seen_contexts,
                    data.unseen_contexts, leaked)


def test_augmentation_rewords_without_losing_the_original():
    rng = random.Random(0)
    variants = {augment_description("Answer in all capital letters.", rng) for _ in range(50)}
    assert len(variants) > 20 and "Answer in all capital letters." not in variants
    words = {"answer", "in", "all", "capital", "letters"}
    for v in variants:  # the content stays: at most one word altered (by a typo)
        kept = words & {w.strip(".!?,:").lower() for w in v.split()}
        assert len(kept) >= len(words) - 1, v
    out = augment_descriptions(["Use upper case.", "Shout."], 3, seed=1, key="upper_case")
    assert out[:2] == ["Use upper case.", "Shout."] and 2 < len(out) <= 8 and len(set(out)) == len(out)
    assert augment_descriptions(["Use upper case."], 3, seed=1, key="upper_case") == \
        augment_descriptions(["Use upper case."], 3, seed=1, key="upper_case")
    assert augment_descriptions(["Use upper case."], 0) == ["Use upper case."]
    with pytest.raises(ValueError, match="per_description"):
        augment_descriptions(["x"], -1)


def test_null_context_rows_pair_each_training_prompt_with_its_plain_answer():
    from zhyper.training.data import NULL_CONTEXT, training_rows

    data = builtin_suite().restrict(["upper_case", "lower_case"])
    rows, descriptions = training_rows(data, null_context=True, augment=0, seed=0)
    plain = rows.select([i for i, c in enumerate(rows["context"]) if c == NULL_CONTEXT])
    train = data.split("train")
    assert len(plain) == len(set(train["prompt"])) and len(rows) == len(train) + len(plain)
    assert all(r["response"] == r["base_answer"] for r in plain)
    assert not any(RULES["upper_case"].check(r["response"]) or RULES["lower_case"].check(r["response"]) for r in plain)
    pool = descriptions[NULL_CONTEXT]
    assert len(pool) == 300 and not set(pool) & (set(unrelated_sentences("eval")) | set(random_strings(40, "eval")))
    same, _ = training_rows(data, null_context=False, augment=2, seed=0)
    assert NULL_CONTEXT not in set(same["context"]) and len(same) == len(train)
    _, augmented = training_rows(data, null_context=False, augment=2, seed=0)
    assert len(augmented["upper_case"]) > len(data.descriptions["upper_case"])
    assert augmented["upper_case"][:len(data.descriptions["upper_case"])] == data.descriptions["upper_case"]
