"""zhyper eval ifeval: the official rows, the official checkers' metrics, subsets, errors, and the CLI end to end."""

from __future__ import annotations

import json

import pytest

from zhyper.evaluation import ifeval

ROWS = [
    {"key": 1, "prompt": "Write about cats.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 2, "prompt": "Write about dogs.", "instruction_id_list": ["detectable_format:title", "startend:quotation"],
     "kwargs": [{}, {}]},
    {"key": 3, "prompt": "List three fruits.", "instruction_id_list": ["change_case:english_lowercase"],
     "kwargs": [{"num_words": None}]},
]


def test_official_metrics_prompt_and_instruction_level():
    good = ["Cats are calm and clean.", '"<<Dogs>>\nDogs are loyal."', "apple banana and pear"]
    s = ifeval.score(ROWS, good)
    assert s.metrics()["prompt_strict"] == 1.0 and s.metrics()["instruction_loose"] == 1.0
    bad = ["Cats, dogs, birds.", "<<Dogs>> are loyal.", "Apple"]  # the twin: each checker can fail
    s = ifeval.score(ROWS, bad)
    assert s.prompts == 3 and s.prompt_strict == 0 and s.inst_strict == 1 and s.instructions == 4
    assert s.per_type["detectable_format:title"] == [1, 1, 1] and s.per_type["startend:quotation"][1] == 0


def test_empty_answer_fails_every_instruction_and_subsets_select_rows():
    s = ifeval.score(ROWS, ["", "", ""])
    assert s.instructions == 4 and s.inst_loose == 0
    keep = ifeval.heldout_only(["detectable_format:title", "startend:quotation"])
    assert ifeval.score(ROWS, ["", "", ""], keep).prompts == 1
    with pytest.raises(ValueError, match="one per row"):
        ifeval.score(ROWS, ["x"])


def test_conditions_give_each_prompt_its_descriptions():
    assert ifeval._descriptions(ROWS, "adapters_off") is None
    both = ifeval._descriptions(ROWS, "zhyper_sum")
    assert len(both[1]) == 2 and ifeval._descriptions(ROWS, "first_only")[1] == both[1][:1]
    with pytest.raises(ValueError, match="conditions: expected some of"):
        ifeval.evaluate(None, ROWS, ["nope"])


def test_instruction_texts_are_the_official_ones():
    texts = ifeval.instruction_texts(ROWS[1])
    assert texts[0].startswith("Your answer must contain a title") and "double quotation" in texts[1]


def test_load_errors_name_the_file_and_both_ways(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_data.jsonl"):
        ifeval.load_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1, "prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing keys \['instruction_id_list', 'kwargs'\]"):
        ifeval.load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="--data PATH"):
        ifeval.load_prompts(None)  # offline here: the hub dataset cannot load


def test_official_file_loads_with_limit(shared_data):
    rows = ifeval.load_prompts(shared_data / "ifeval" / "input_data.jsonl")
    assert len(rows) == 541
    assert len(ifeval.load_prompts(shared_data / "ifeval" / "input_data.jsonl", limit=5)) == 5
    texts = [t for r in rows for t in ifeval.instruction_texts(r)]
    assert len(texts) == sum(len(r["instruction_id_list"]) for r in rows)


@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_checkpoint(tmp_path, capsys):
    from tests.serving.conftest import make_checkpoint
    from zhyper.cli import main

    ckpt = make_checkpoint(tmp_path)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "eval"
    assert main(["eval", "ifeval", "--checkpoint", str(ckpt), "--data", str(data), "--limit", "2",
                 "--max-new-tokens", "4", "--batch-size", "2", "--out", str(out)]) == 0
    assert "prompt loose" in capsys.readouterr().out
    report = json.loads((out / "ifeval.json").read_text())
    assert set(report["metrics"]) == {f"{c}/{s}" for c in ("adapters_off", "zhyper")
                                      for s in ("all", "heldout", "multi")}
    assert report["metrics"]["zhyper/multi"]["prompts"] == 1
    assert report["metrics"]["zhyper/all"]["prompts"] == 2
    answers = [json.loads(line) for line in (out / "answers_zhyper.jsonl").read_text().splitlines()]
    assert [a["key"] for a in answers] == [1, 2]
    # resume: an answer already in --out is reused (marked here, to see it), the missing one generated
    path = out / "answers_zhyper.jsonl"
    path.write_text(json.dumps({**answers[0], "response": "MARK"}) + "\n")
    args = ["eval", "ifeval", "--checkpoint", str(ckpt), "--data", str(data), "--max-new-tokens", "4",
            "--conditions", "zhyper", "--out", str(out)]
    assert main(args) == 0
    again = [json.loads(line) for line in path.read_text().splitlines()]
    assert again[0]["response"] == "MARK" and [a["key"] for a in again] == [1, 2, 3]
    assert main([*args, "--fresh"]) == 0  # twin: --fresh generates the marked answer again
    assert json.loads(path.read_text().splitlines()[0])["response"] == answers[0]["response"]


def test_the_same_answer_always_gets_the_same_score():
    # the official letter-frequency checker draws a random letter when the row's is not a-z (IFEval key 1044)
    row = {"key": 1044, "prompt": "Write a pitch!", "instruction_id_list": ["keywords:letter_frequency"],
           "kwargs": [{"let_relation": "at least", "letter": "!", "let_frequency": 6}]}
    answer = "Sunny ice cream is gentle and sweet, the best treat of the season for everyone here."
    first = ifeval.score_answer(row, answer)
    assert all(ifeval.score_answer(row, answer) == first for _ in range(20))
    others = {str(ifeval.score_answer(dict(row, key=k), answer)) for k in range(40)}  # twin: the draw varies by row
    assert len(others) > 1


@pytest.mark.slow
def test_a_lora_adapter_folder_is_evaluated_like_a_checkpoint(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.model_helpers import small_config, tiny_chat_base
    from zhyper.baselines import LoRABaseline
    from zhyper.cli import main

    base = tiny_chat_base(tmp_path / "base")
    lora = LoRABaseline.from_base(AutoModelForCausalLM.from_pretrained(base), small_config()).eval()
    with torch.no_grad():  # a trained adapter: B away from its zero start
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    lora.save_pretrained(tmp_path / "lora")
    loaded = LoRABaseline.from_pretrained(tmp_path / "lora").eval()
    ids = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(loaded(ids).logits, lora(ids).logits)
    with loaded.adapters_off():  # twin: the adapter changes the output
        assert not torch.allclose(loaded(ids).logits, lora(ids).logits, atol=1e-3)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "eval"
    assert main(["eval", "ifeval", "--checkpoint", str(tmp_path / "lora"), "--data", str(data), "--limit", "2",
                 "--max-new-tokens", "4", "--out", str(out)]) == 0
    assert json.loads((out / "ifeval.json").read_text())["metrics"]["zhyper/all"]["prompts"] == 2
    with pytest.raises(FileNotFoundError, match="expected a PEFT adapter folder"):
        LoRABaseline.from_pretrained(tmp_path / "base")


def test_paired_difference_counts_each_prompt_once():
    good = ["Cats are calm and clean.", '"<<Dogs>>\nDogs are loyal."', "apple banana and pear"]
    bad = ["Cats, dogs, birds.", "<<Dogs>> are loyal.", "Apple"]
    d = ifeval.paired_difference(ROWS, good, bad)
    assert d["prompt_loose"][0] == pytest.approx(1.0) and d["prompt_loose"][1] == pytest.approx(0.0)
    assert d["instruction_loose"][0] == pytest.approx((1 + 0.5 + 1) / 3)  # prompt 2: one of two already passed
    same = ifeval.paired_difference(ROWS, good, good)  # twin: no difference
    assert same["prompt_loose"] == (0.0, 0.0)
    assert ifeval.paired_difference(ROWS, good, bad, keep=lambda r: r["key"] == 1)["prompt_loose"][0] == 1.0
    with pytest.raises(ValueError, match="one per row"):
        ifeval.paired_difference(ROWS, good, bad[:2])


def test_the_compare_tool_reads_answer_files_and_pairs_them(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    files = {}
    for label, texts in {"bad": ["Cats, dogs, birds.", "<<Dogs>> are loyal.", "Apple"],
                         "good": ["Cats are calm and clean.", '"<<Dogs>>\nDogs are loyal."',
                                  "apple banana and pear"]}.items():
        files[label] = tmp_path / f"{label}.jsonl"
        files[label].write_text("".join(json.dumps({"key": r["key"], "response": t}) + "\n"
                                        for r, t in zip(ROWS, texts)))
    monkeypatch.setattr(sys, "argv", ["ifeval_compare.py", "--data", str(data), f"bad={files['bad']}",
                                      f"good={files['good']}"])
    runpy.run_path("tools/ifeval_compare.py", run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| bad | 3 | 0.000") and "+0.000 ± 0.000" in out[2]
    assert out[3].startswith("| good | 3 | 1.000") and "| +1.000 ± 0.000 |" in out[3]
