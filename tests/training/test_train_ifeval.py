"""launch/train.py with data.source: ifeval on the real DeepSpeed engine (2 CPU ranks, ZeRO-2, tiny model).

The plain answers come from a JSONL (data.path) so the test needs no long generation; the rest is
the real recipe: per-row official instruction texts, targets checked by if-verifiable, the null
context, compliance scored by the official checkers with each description's parameters.
"""

from __future__ import annotations

import json

import pytest

from tests.training.test_train_deepspeed import _train
from zhyper.data.ifeval import HELDOUT_TYPES, training_prompts

pytestmark = pytest.mark.slow
SENTENCES = ("{t} is worth learning about, usually step by step. It helps people in daily life. Many find it "
             "rewarding and fun. Start small and keep going. Ask others for advice when stuck.")


def write_answers(path):
    """A JSONL of plain answers (five sentences naming the prompt's topic) to every training prompt."""
    path.write_text("".join(json.dumps({"prompt": p, "answer": SENTENCES.format(t=p.split()[-1].rstrip("?."))})
                            + "\n" for p in training_prompts()))
    return path


def test_ifeval_source_trains_and_scores_with_the_official_checkers(tmp_path):
    answers = write_answers(tmp_path / "answers.jsonl")
    out = _train(tmp_path / "run", "data.source=ifeval", f"data.path={answers}", "data.null_context=true",
                 "data.max_length=160", "eval.generate=true", "eval.prompts=1", "eval.controls=2",
                 "eval.max_new_tokens=4", "eval.base_prompt=false", "eval.retention=2", "eval.retention_tokens=4",
                 ds="zero2.json")
    report = json.loads((out / "eval.json").read_text())
    assert {"val_seen_loss", "val_unseen_loss"} <= set(report["final"])
    answers_out = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    sources = {a["source"] for a in answers_out if a["condition"] == "heldout"}
    assert set(HELDOUT_TYPES) <= sources and "detectable_format:json_format" in sources
    assert "retention" in report and "## Content retention" in (out / "eval.md").read_text()
