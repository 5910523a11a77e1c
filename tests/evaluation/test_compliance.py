"""Compliance under descriptions and controls: the evaluation set, the counting, the controls, the report.

The generators here are plain functions of (prompt, description): one that follows the rule a
description names, one that ignores descriptions (a "default mode"). They test the bookkeeping;
the real model path runs in the DeepSpeed tests and the main job.
"""

from __future__ import annotations

import math

import pytest

from zhyper.data import builtin_suite
from zhyper.data.rules import RULES
from zhyper.evaluation.compliance import (CONDITIONS, RANDOM_SOURCES, ComplianceResult, compliance_eval,
                                          generation_items)
from zhyper.evaluation.report import compliance_markdown, confusion_png, interval


@pytest.fixture(scope="module")
def data():
    return builtin_suite().restrict(["upper_case", "lower_case", "json_answer", "snake_case", "kebab_case"])


def _owner(data):
    """description -> the rule it describes (training, held-out and paraphrase wordings)."""
    out = {}
    for pool in (data.descriptions, data.heldout_descriptions, data.paraphrases):
        for rule, texts in pool.items():
            out.update({t: rule for t in texts})
    return out


def _base_answers(data):
    rows = data.split("validation")
    return dict(zip(rows["prompt"], rows["base_answer"]))


def _following(data):
    owner, base = _owner(data), _base_answers(data)

    def generate(prompts, descriptions, system, in_prompt, adapters):
        return [RULES[owner[d]].apply(base[p]) if adapters and d in owner else base[p]
                for p, d in zip(prompts, descriptions)]

    return generate


def _default_mode(data, rule="lower_case"):
    base = _base_answers(data)

    def generate(prompts, descriptions, system, in_prompt, adapters):
        return [RULES[rule].apply(base[p]) if adapters else base[p] for p in prompts]

    return generate


def test_items_cover_every_condition_rule_and_control(data):
    items = generation_items(data, n_prompts=4, paraphrases_per_prompt=2, n_controls=6)
    assert {it.condition for it in items} == set(CONDITIONS)
    per = lambda cond, rule: [it for it in items if it.condition == cond and it.source == rule]  # noqa: E731
    for rule in data.contexts:
        assert len(per("heldout", rule)) == 4 and len(per("paraphrase", rule)) == 8
        assert {it.description for it in per("paraphrase", rule)} <= set(data.paraphrases[rule])
        held = data.heldout_descriptions[rule]
        assert {it.description for it in per("heldout", rule)} <= set(held)
        assert not {it.description for it in per("heldout", rule)} & set(data.descriptions.get(rule, []))
    controls = [it for it in items if it.condition == "random"]
    assert len(controls) == 6 and {it.source for it in controls} == set(RANDOM_SOURCES)
    trained = {d for ds in data.descriptions.values() for d in ds}
    assert not {it.description for it in controls} & trained
    assert all(not it.adapters and not it.description for it in items if it.condition == "base")
    assert all(not it.adapters and it.in_prompt for it in items if it.condition == "base+prompt")
    assert not [it for it in generation_items(data, 4, base_prompt=False) if it.condition == "base+prompt"]


def test_a_model_that_follows_descriptions_scores_one_and_its_controls_zero(data):
    items = generation_items(data, n_prompts=4, n_controls=8, base_prompt=False)
    result = compliance_eval(_following(data), data, items, batch_size=5)
    for rule in data.contexts:
        assert result.compliance("heldout", rule) == (1.0, 4)
        assert result.compliance("paraphrase", rule)[0] == 1.0
        assert result.random_rate(rule) == (0.0, 8) and result.base_rate(rule) == (0.0, 4)
        assert result.wrong_rate(rule)[0] == 0.0
    labels, matrix = result.confusion()
    assert labels[:len(data.contexts)] == data.contexts and labels[-2:] == ["random", "adapters off"]
    assert all(matrix[i][j] == (1.0 if i == j else 0.0) for i in range(5) for j in range(5))
    assert result.metrics()["random_excess_max_seen"] == 0.0
    assert math.isnan(result.compliance("base+prompt", "upper_case")[0])  # not asked


def test_a_default_mode_shows_up_in_the_random_control_and_the_confusion(data):
    """The twin: a model that answers in lower case whatever it is told."""
    items = generation_items(data, n_prompts=4, n_controls=8, base_prompt=False)
    result = compliance_eval(_default_mode(data), data, items, batch_size=7)
    assert result.compliance("paraphrase", "lower_case")[0] == 1.0
    assert result.compliance("paraphrase", "upper_case")[0] == 0.0
    assert result.random_rate("lower_case")[0] == 1.0 and result.wrong_rate("lower_case")[0] == 1.0
    assert result.metrics()["random_excess_max_seen"] == 1.0
    _, matrix = result.confusion()
    assert all(row[data.contexts.index("lower_case")] == 1.0 for row in matrix[:-1])  # every description
    assert matrix[-1][data.contexts.index("lower_case")] == 0.0  # but not with the adapters off


def test_rank_shares_gather_to_the_single_process_result(data):
    """Two 'ranks' answer disjoint shares; without a process group each sees only its own share."""
    items = generation_items(data, n_prompts=3, n_controls=4, base_prompt=False)
    whole = compliance_eval(_following(data), data, items)
    with pytest.raises(RuntimeError, match="gathered .* answers for"):
        compliance_eval(_following(data), data, items, rank=1, world=2)
    assert sum(row[0] for row in whole.counts.values()) == len(items)


def test_report_table_and_heatmap(data, tmp_path):
    items = generation_items(data, n_prompts=2, n_controls=4)
    result = compliance_eval(_default_mode(data), data, items)
    md = compliance_markdown(result)
    assert "| lower_case | seen | 1.00 ± " in md and "| **mean, unseen** |" in md
    png = confusion_png(result, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert interval(0.0, 16) > 0.05 and interval(1.0, 16) > 0.05  # never a zero-width interval
    assert interval(0.5, 400) < interval(0.5, 16)


def test_compliance_needs_checkers(data):
    from zhyper.data.base import ContextData

    plain = ContextData(data.examples, data.descriptions, data.heldout_descriptions, data.seen_contexts,
                        data.unseen_contexts)
    with pytest.raises(TypeError, match="no rule checkers"):
        compliance_eval(_following(data), plain, [])


def test_result_round_trips_to_json(data):
    import json

    items = generation_items(data, n_prompts=2, n_controls=2, base_prompt=False)
    result = compliance_eval(_following(data), data, items)
    again = json.loads(json.dumps(result.to_dict()))
    assert again["rules"] == data.contexts and len(again["counts"]) == len(result.counts)
    assert isinstance(ComplianceResult(data.contexts, [], []).metrics(), dict)
