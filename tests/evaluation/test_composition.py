"""Composition and strength-dial measurements on a real (tiny) model with the built-in suite's checkers."""

from __future__ import annotations

import math

import pytest

from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel
from zhyper.data import builtin_suite
from zhyper.evaluation.composition import PairResult, dial, pair_compliance


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tiny_chat_base(tmp_path_factory.mktemp("composition") / "base")
    return perturb(ZhyperModel.from_base(str(base), small_config()), scale=2.0).eval()


def test_pair_result_counts_both_and_each():
    r = PairResult()
    r.add("a", "b", "together", True, True)
    r.add("a", "b", "together", True, False)
    assert r.counts[("a", "b", "together")] == [2, 2, 1, 1]
    assert "| a + b | together | 2 | 1.00 | 0.50 | 0.50 |" in r.markdown()


def test_pairs_and_dial_run_every_condition(model):
    suite = builtin_suite()
    prompts = ["What is the capital of France?", "Name a colour."]
    r = pair_compliance(model, suite, [("upper_case", "json_answer")], prompts, max_new_tokens=4)
    conditions = {c for (_, _, c) in r.counts}
    assert conditions == {"together (modulation)", "together (text)", "first alone", "second alone"}
    assert all(row[0] == 2 for row in r.counts.values())
    curve = dial(model, suite, ["upper_case"], [0.0, 1.0], prompts, n_questions=2, max_new_tokens=4,
                 retention_tokens=4)
    compliance0, retention0 = curve["upper_case"][0.0]
    assert 0 <= compliance0 <= 1
    assert math.isnan(retention0) or retention0 == 1.0  # weight 0 answers exactly as adapters off
