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
    assert AnswerJournal(path, "run-a").lookup(ROWS) == ["a7", "a8", None]
    assert AnswerJournal(path, "run-b").lookup(ROWS) == [None, None, "b9"]  # twin: another run's lines not reused
    assert AnswerJournal(path, "run-a", reuse=False).lookup(ROWS) == [None] * 3
    AnswerJournal(path, "run-a").append(ROWS[:1], ["again"])
    assert AnswerJournal(path, "run-a").lookup(ROWS)[0] == "again"  # the last line wins


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_batch_starts_a_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    journal = AnswerJournal(path, "r")
    journal.append(ROWS[:1], ["first"])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": 8, "prompt": "prompt 8", "resp')  # the crash
    assert journal.lookup(ROWS) == ["first", None, None]
    journal.append(ROWS[2:], ["third"])
    assert journal.lookup(ROWS) == ["first", None, "third"]
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
    assert journal.lookup(ROWS) == ["PROMPT 7", "kept", "PROMPT 9"]  # new answers kept at once
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
    assert AnswerJournal(tmp_path / "answers_zhyper.jsonl", "r1").lookup(rows) == ["x", "y", "z"]
    assert json.loads((tmp_path / "ifeval.json").read_text())["runs"] == {"zhyper": "r1"}
    assert (tmp_path / "ifeval.png").read_bytes()[:4] == b"\x89PNG"


IF_ROWS = [{**r, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]} for r in ROWS]


def _results(run: str, answers: list[str], rows=IF_ROWS) -> dict:
    return {"zhyper": {"answers": answers, "run": run, **{s: ifeval.score(rows, answers) for s in ifeval.SUBSETS}}}


def _answer_with(tag: str):
    asked = []

    def answer(prompts, descriptions):
        asked.extend(prompts)
        return [f"{tag}:{p}" for p in prompts]

    return answer, asked


def _reused(path, run: str, rows=IF_ROWS) -> list[str]:
    """The answers ``answer_all`` takes from the journal for ``rows`` ("NEW" where it had to generate one)."""
    journal = AnswerJournal(path, run)
    return ifeval.answer_all(lambda prompts, _: ["NEW"] * len(prompts), rows, None, 8, "t", False, journal)


def test_a_shorter_limit_keeps_the_longer_runs_answers(tmp_path):
    ifeval.write(_results("r1", ["x", "y", "z"]), IF_ROWS, tmp_path)
    ifeval.write(_results("r1", ["x", "y"], IF_ROWS[:2]), IF_ROWS[:2], tmp_path)  # --limit 2 into the same --out
    path = tmp_path / "answers_zhyper.jsonl"
    assert _reused(path, "r1", IF_ROWS) == ["x", "y", "z"]  # the third answer was not superseded: kept
    ifeval.write(_results("r1", ["X", "y"], IF_ROWS[:2]), IF_ROWS[:2], tmp_path)
    assert _reused(path, "r1", IF_ROWS) == ["X", "y", "z"]  # twin: an answer given again replaces the old one
    assert len(path.read_text().splitlines()) == 3  # superseded lines go


def test_another_checkpoints_answers_in_the_same_out_are_kept(tmp_path):
    ifeval.write(_results("ckpt-a", ["a1", "a2", "a3"]), IF_ROWS, tmp_path)
    ifeval.write(_results("ckpt-b", ["b1", "b2", "b3"]), IF_ROWS, tmp_path)
    path = tmp_path / "answers_zhyper.jsonl"
    assert _reused(path, "ckpt-a") == ["a1", "a2", "a3"]
    assert _reused(path, "ckpt-b") == ["b1", "b2", "b3"]  # twin: each run its own answers
    assert json.loads((tmp_path / "ifeval.json").read_text())["runs"] == {"zhyper": "ckpt-b"}


@pytest.mark.parametrize("change", [{"prompt": "prompt 8, now longer"}, {"kwargs": [{"num_words": 3}]},
                                    {"instruction_id_list": ["change_case:english_lowercase"]}])
def test_an_answer_is_reused_only_for_the_same_prompt_text_and_instruction_arguments(tmp_path, change):
    journal = AnswerJournal(tmp_path / "a.jsonl", "r")
    first, _ = _answer_with("old")
    ifeval.answer_all(first, IF_ROWS, None, 3, "t", False, journal)
    same, asked = _answer_with("new")
    assert ifeval.answer_all(same, IF_ROWS, None, 3, "t", False, journal)[1] == "old:prompt 8" and asked == []
    changed = [IF_ROWS[0], {**IF_ROWS[1], **change}, IF_ROWS[2]]  # twin: row key 8 with another prompt or argument
    got = ifeval.answer_all(same, changed, None, 3, "t", False, journal)
    assert got[1] == f"new:{changed[1]['prompt']}" and asked == [changed[1]["prompt"]]
    assert got[0] == "old:prompt 7" and got[2] == "old:prompt 9"
    assert _reused(tmp_path / "a.jsonl", "r")[1] == "old:prompt 8"  # the answer to the old prompt is still there


def test_out_inside_the_checkpoint_folder_is_refused(tmp_path, capsys):
    from zhyper.cli import main

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "zhyper_config.json").write_text("{}")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in IF_ROWS))
    for out in (ckpt, ckpt / "eval"):
        assert main(["eval", "ifeval", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is inside the --checkpoint folder {ckpt}" in err and "choose an --out outside" in err
    assert sorted(p.name for p in ckpt.iterdir()) == ["zhyper_config.json"]  # nothing was written there
    assert main(["eval", "ifeval", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                 str(tmp_path / "eval")]) == 2  # twin: another --out passes this check (the config is empty)
    assert "inside the --checkpoint folder" not in capsys.readouterr().err


def test_the_compare_tool_reads_the_reported_run_of_a_shared_answers_file(tmp_path):
    import runpy

    tool = runpy.run_path("tools/ifeval_compare.py")
    ifeval.write(_results("ckpt-a", ["a1", "a2", "a3"]), IF_ROWS, tmp_path)
    ifeval.write(_results("ckpt-b", ["b1", "b2"], IF_ROWS[:2]), IF_ROWS[:2], tmp_path)
    path = tmp_path / "answers_zhyper.jsonl"
    assert tool["read_answers"](str(path)) == {"7": "b1", "8": "b2"}  # ifeval.json reports ckpt-b
    (tmp_path / "ifeval.json").write_text(json.dumps({"runs": {"zhyper": "ckpt-a"}}))
    assert tool["read_answers"](str(path)) == {"7": "a1", "8": "a2", "9": "a3"}  # twin: the run it names
    (tmp_path / "ifeval.json").unlink()
    with pytest.raises(SystemExit, match="holds the answers of 2 runs"):
        tool["read_answers"](str(path))
    line = json.loads(path.read_text().splitlines()[0])
    assert tool["answered"](IF_ROWS[0], line) and not tool["answered"]({**IF_ROWS[0], "prompt": "changed"}, line)
