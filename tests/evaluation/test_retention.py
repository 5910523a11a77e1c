"""Content retention: the fact matcher (with twins) and the per-context ratio against adapters off."""

from __future__ import annotations

import pytest

from zhyper.evaluation.retention import OFF, facts, keeps_fact, retention_eval


def test_at_least_forty_questions_each_with_an_answer():
    qa = facts()
    assert len(qa) >= 40
    assert len({q for q, _ in qa}) == len(qa)
    assert all(acc and all(a.strip() for a in acc) for _, acc in qa)


@pytest.mark.parametrize("answer", ["The capital of France is Paris.", "THE CAPITAL OF FRANCE IS PARIS",
                                    "the_capital_of_france_is_paris", '{"answer": "paris"}', "<<Capital>>\n\nParis"])
def test_a_reshaped_answer_keeps_the_fact(answer):
    assert keeps_fact(answer, ["paris"])


@pytest.mark.parametrize("answer", ["The capital of France is france capital of albania", "Parisian food is good",
                                    ""])
def test_a_changed_answer_loses_it(answer):
    assert not keeps_fact(answer, ["paris"])


def test_retention_is_relative_to_adapters_off():
    qa = facts()[:10]
    truth = {q: acc[0] for q, acc in qa}

    def ask(questions, description):
        if description is None:  # adapters off: every fact, but the last two wrong
            return [truth[q] if i < 8 else "I do not know" for i, q in enumerate(questions)]
        if description == "upper":
            return [truth[q].upper() for q in questions]
        return ["something else" if i % 2 else truth[q] for i, q in enumerate(questions)]

    r = retention_eval(ask, {"upper_case": "upper", "damaging": "other"}, n_questions=10)
    assert r.kept[OFF] == [8, 10]
    assert r.kept["upper_case"] == [10, 10] and r.relative("upper_case") == pytest.approx(10 / 8)
    assert r.kept["damaging"] == [5, 10] and r.relative("damaging") == pytest.approx(5 / 8)
    m = r.metrics()
    assert m["retention/worst"] == pytest.approx(5 / 8) and m["retention/adapters_off_rate"] == pytest.approx(0.8)
    assert "| damaging | 5/10 (0.50) | 0.62 |" in r.markdown()
    with pytest.raises(ValueError, match="n_questions"):
        retention_eval(ask, {}, n_questions=-1)
