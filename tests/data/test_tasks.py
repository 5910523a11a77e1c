"""Task-description loader on hand-written fixtures and on the real ../shared/data/tasks metadata."""

from __future__ import annotations

import json

import pytest

from zhyper.data import load_tasks


@pytest.fixture
def tasks(fixtures):
    return fixtures / "tasks"


def test_rows_templates_and_splits(tasks):
    data = load_tasks(tasks, {"capitals": "data.jsonl", "add_numbers": "data.jsonl"}, unseen=["add_numbers"])
    assert data.seen_contexts == ["capitals"] and data.unseen_contexts == ["add_numbers"]
    cap = data.split("train")
    assert len(cap) == 9 and len(data.split("validation")) == 1
    assert cap[0]["prompt"] == "What is the capital of France?" and cap[0]["response"] == "Paris"
    assert data.split("validation")[0]["response"] == "Madrid"  # positional: the last 10%
    add = data.split("unseen")
    assert len(add) == 4  # ds_kwargs split 'train[:4]' applied to the local file
    assert add[1]["prompt"] == "3 + 4\n\nA: 6\nB: 7"  # nested fields {choices[label][0]}
    assert add[1]["response"] == "The answer is B."  # assistant_prefill + answer + assistant_postfill
    assert add[1]["system"] == "You are a calculator."


def test_description_split_is_seeded(tasks):
    a = load_tasks(tasks, {"capitals": "data.jsonl"}, seed=0)
    b = load_tasks(tasks, {"capitals": "data.jsonl"}, seed=0)
    c = load_tasks(tasks, {"capitals": "data.jsonl"}, seed=3)
    assert a.descriptions == b.descriptions and a.heldout_descriptions == b.heldout_descriptions
    assert len(a.heldout_descriptions["capitals"]) == 1 and len(a.descriptions["capitals"]) == 9
    assert not set(a.descriptions["capitals"]) & set(a.heldout_descriptions["capitals"])
    assert a.heldout_descriptions != c.heldout_descriptions


def test_parquet_and_csv_files(tasks, tmp_path):
    from datasets import Dataset

    rows = [json.loads(line) for line in (tasks / "capitals" / "data.jsonl").read_text().splitlines()]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "caps.parquet"))
    from_parquet = load_tasks(tasks, {"capitals": str(tmp_path / "caps.parquet")})
    from_json = load_tasks(tasks, {"capitals": "data.jsonl"})
    assert from_parquet.examples.to_list() == from_json.examples.to_list()
    (tmp_path / "caps.csv").write_text("country,capital\nFrance,Paris\n")
    assert load_tasks(tasks, {"capitals": str(tmp_path / "caps.csv")}).examples["response"] == ["Paris"]


def test_errors_name_file_and_problem(tasks, tmp_path):
    with pytest.raises(ValueError, match=r"bad_template/metadata.yaml: user_prompt_template uses unknown fields "
                                         r"\['passage'\]"):
        load_tasks(tasks, {"bad_template": "data.csv"})
    with pytest.raises(ValueError, match=r"broken_yaml/metadata.yaml: malformed YAML"):
        load_tasks(tasks, {"broken_yaml": "x.jsonl"})
    with pytest.raises(ValueError, match=r"data_files\['capitals'\]: file 'nope.jsonl' not found"):
        load_tasks(tasks, {"capitals": "nope.jsonl"})
    with pytest.raises(ValueError, match=r"data_files: task 'atlas' has no .*atlas/metadata.yaml"):
        load_tasks(tasks, {"atlas": "data.jsonl"})
    with pytest.raises(ValueError, match=r"unseen: tasks \['atlas'\] have no entry in data_files"):
        load_tasks(tasks, {"capitals": "data.jsonl"}, unseen=["atlas"])
    with pytest.raises(ValueError, match=r"add_numbers/metadata.yaml: response_field 'answerKey' is not a column"):
        (tmp_path / "q.csv").write_text("question,choices\na,b\n")
        load_tasks(tasks, {"add_numbers": str(tmp_path / "q.csv")})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").mkdir()
    (tmp_path / "t" / "x" / "metadata.yaml").write_text("descriptions: [a]\nuser_prompt_template: '{}'\n"
                                                         "response_field: y\n")
    with pytest.raises(ValueError, match=r"x/metadata.yaml: user_prompt_template has a positional field"):
        load_tasks(tmp_path / "t", {"x": "d.csv"})
    (tmp_path / "t" / "x" / "metadata.yaml").write_text("descriptions: [a]\nuser_prompt_template: '{q}'\n"
                                                         "response_field: y\nextra_key: 1\n")
    with pytest.raises(ValueError, match=r"x/metadata.yaml: unknown keys \['extra_key'\]; known keys"):
        load_tasks(tmp_path / "t", {"x": "d.csv"})


def test_row_missing_a_nested_field_names_the_row(tasks, tmp_path):
    bad = tmp_path / "short.jsonl"
    bad.write_text('{"question": "1 + 1", "choices": {"label": ["A"], "text": ["2"]}, "answerKey": "A"}\n')
    with pytest.raises(ValueError, match=r"cannot be filled from data row 0: IndexError"):
        load_tasks(tasks, {"add_numbers": str(bad)})


def test_real_task_metadata_with_local_rows(shared_data, tmp_path):
    """The real arc_easy / boolq / gsm8k metadata, with a few local rows in the hub datasets' shape."""
    root = shared_data / "tasks"
    arc = tmp_path / "arc.jsonl"
    arc.write_text(json.dumps({"question": "Which is a mammal?", "answerKey": "B", "choices": {
        "label": ["A", "B", "C", "D"], "text": ["shark", "whale", "trout", "squid"]}}) + "\n")
    boolq = tmp_path / "boolq.jsonl"
    boolq.write_text("\n".join(json.dumps({"passage": f"Passage {i}.", "question": f"is it {i}", "answer": i % 2 == 0})
                               for i in range(10)) + "\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}) + "\n")
    data = load_tasks(root, {"arc_easy": arc, "boolq": boolq, "gsm8k": gsm}, unseen=["arc_easy", "gsm8k"])
    prompt = data.split("unseen")[0]["prompt"]
    assert "Which is a mammal?" in prompt and "B: whale" in prompt and "D: squid" in prompt
    assert data.split("unseen")[1]["response"].startswith("Let's think step by step. 2 + 3 = 5")
    assert data.split("train")[0]["response"] == "True" and len(data.split("validation")) == 1
    assert len(data.descriptions["boolq"]) + len(data.heldout_descriptions["boolq"]) == len(
        set(data.descriptions["boolq"]) | set(data.heldout_descriptions["boolq"]))
    assert len(data.heldout_descriptions["arc_easy"]) >= 150
