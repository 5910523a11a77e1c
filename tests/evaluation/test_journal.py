"""AnswerJournal: answers kept as they arrive, reused only by the same run, a torn line survived."""

from __future__ import annotations

import json

import pytest

from zhyper.evaluation import ifeval
from zhyper.evaluation.journal import AnswerJournal, checkpoint_digest, fingerprint

ROWS = [{"key": k, "prompt": f"prompt {k}"} for k in (7, 8, 9)]


def test_lines_come_back_only_for_their_own_run(tmp_path):
    path = tmp_path / "answers_zhyper.jsonl"
    AnswerJournal(path, "run-a").append(ROWS[:2], ["a7", "a8"])
    AnswerJournal(path, "run-b").append(ROWS[2:], ["b9"])
    assert AnswerJournal(path, "run-a").load() == {"7": "a7", "8": "a8"}
    assert AnswerJournal(path, "run-b").load() == {"9": "b9"}  # twin: another run's lines are not reused
    assert AnswerJournal(path, "run-a", reuse=False).load() == {}
    AnswerJournal(path, "run-a").append(ROWS[:1], ["again"])
    assert AnswerJournal(path, "run-a").load()["7"] == "again"  # the last line wins


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_batch_starts_a_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    journal = AnswerJournal(path, "r")
    journal.append(ROWS[:1], ["first"])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": 8, "prompt": "prompt 8", "resp')  # the crash
    assert journal.load() == {"7": "first"}
    journal.append(ROWS[2:], ["third"])
    assert journal.load() == {"7": "first", "9": "third"}
    assert len(path.read_text().splitlines()) == 3


def test_answer_all_generates_only_what_the_journal_lacks(tmp_path):
    journal = AnswerJournal(tmp_path / "a.jsonl", "r")
    journal.append([ROWS[1]], ["kept"])
    asked = []

    def answer(prompts, descriptions):
        asked.extend(prompts)
        return [p.upper() for p in prompts]

    out = ifeval.answer_all(answer, ROWS, None, batch_size=2, desc="t", progress=False, journal=journal)
    assert out == ["PROMPT 7", "kept", "PROMPT 9"] and sorted(asked) == ["prompt 7", "prompt 9"]
    assert journal.load() == {"7": "PROMPT 7", "8": "kept", "9": "PROMPT 9"}  # new answers kept at once
    asked.clear()
    assert ifeval.answer_all(answer, ROWS, None, 2, "t", False, journal) == out and asked == []


def test_the_fingerprint_follows_the_checkpoint_bytes_and_the_settings(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "zhyper_config.json").write_text("{}")
    first = checkpoint_digest(tmp_path)
    assert checkpoint_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert checkpoint_digest(tmp_path) != first  # twin: other weights, another digest
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 1, "b": 3})
    with pytest.raises(NotADirectoryError, match="expected a checkpoint folder"):
        checkpoint_digest(tmp_path / "missing")


def test_written_answers_carry_the_run_so_a_longer_limit_reuses_them(tmp_path):
    rows = [{**r, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]} for r in ROWS]
    results = {"zhyper": {"answers": ["x", "y", "z"], "run": "r1",
                          **{s: ifeval.score(rows, ["x", "y", "z"]) for s in ifeval.SUBSETS}}}
    ifeval.write(results, rows, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "answers_zhyper.jsonl").read_text().splitlines()]
    assert [line["run"] for line in lines] == ["r1"] * 3
    assert AnswerJournal(tmp_path / "answers_zhyper.jsonl", "r1").load() == {"7": "x", "8": "y", "9": "z"}
    assert json.loads((tmp_path / "ifeval.json").read_text())["runs"] == {"zhyper": "r1"}
    assert (tmp_path / "ifeval.png").read_bytes()[:4] == b"\x89PNG"
