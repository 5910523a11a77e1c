"""Task-description loader on hand-written fixtures and on the real ../shared/data/tasks metadata."""

from __future__ import annotations

import json
import shutil

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
    with pytest.raises(ValueError, match=r"short.jsonl line 1: the user_prompt_template of .*add_numbers/metadata.yaml "
                                         r"cannot be filled from this row: IndexError"):
        load_tasks(tasks, {"add_numbers": str(bad)})


# ---------------------------------------------------------------- bad rows: named, or skipped and counted
CAPITALS = ['{"country": "France", "capital": "Paris"}', '{"country": "Japan", "capital": "Tokyo"}']


@pytest.mark.parametrize("line, message", [
    ('{"country": "Kenya"}', r"line 2: response field 'capital' is missing \(response_field of .*capitals/"),
    ('{"country": "Kenya", "capital": null}', r"line 2: response field 'capital' is null"),
    ('{"capital": "Nairobi"}', r"line 2: field 'country' is missing, but the user_prompt_template of .*capitals/"
                               r"metadata.yaml needs it"),
    ('{"country": null, "capital": "Nairobi"}', r"line 2: field 'country' is null"),
    ('{"country": "Kenya", "capital": "Nairobi"', r"line 2: not valid JSON \(Expecting ',' delimiter, column \d+\)"),
    ('["Kenya", "Nairobi"]', r"line 2: expected a JSON object \(one row\), got list"),
])
def test_a_bad_jsonl_row_names_the_file_and_line(tasks, tmp_path, line, message):
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join([CAPITALS[0], line, CAPITALS[1]]) + "\n")
    with pytest.raises(ValueError, match=rf"caps.jsonl {message}.*pass skip_bad_rows=True"):
        load_tasks(tasks, {"capitals": str(path)})
    data = load_tasks(tasks, {"capitals": str(path)}, skip_bad_rows=True)  # opted in: skipped and counted
    assert data.examples["response"] == ["Paris", "Tokyo"]
    assert data.skipped == {str(path.resolve()): 1}
    assert not any("None" in t for t in [*data.examples["prompt"], *data.examples["response"]])


def test_good_rows_are_not_counted_as_skipped(tasks):
    """The twin of the bad-row tests: the clean fixture loads with nothing skipped."""
    data = load_tasks(tasks, {"capitals": "data.jsonl"}, skip_bad_rows=True)
    assert data.skipped == {} and data.decode_errors == {} and len(data.examples) == 10


def test_nested_null_field_is_named(tasks, tmp_path):
    path = tmp_path / "add.jsonl"
    path.write_text(json.dumps({"question": "1 + 1", "choices": {"label": ["A", "B"], "text": ["2", None]},
                                "answerKey": "A"}) + "\n")
    with pytest.raises(ValueError, match=r"add.jsonl line 1: field 'choices\[text\]\[1\]' is null"):
        load_tasks(tasks, {"add_numbers": str(path)})


@pytest.mark.parametrize("row, problem", [
    ({"country": "France", "capital": ""}, r"response field 'capital' is empty"),
    ({"country": "France", "capital": "  "}, r"response field 'capital' is empty"),
    ({"country": "France", "capital": float("nan")}, r"response field 'capital' is nan \(not a finite number\)"),
    ({"country": ["France"], "capital": "Paris"}, r"field 'country' is a list, not a single value"),
    ({"country": {"name": "France"}, "capital": "Paris"}, r"field 'country' is a JSON object"),
])
def test_values_that_would_train_on_garbage_are_named(tasks, tmp_path, row, problem):
    path = tmp_path / "caps.jsonl"
    good = json.dumps({"country": "Peru", "capital": "Lima"})
    path.write_text(good + "\n" + json.dumps(row) + "\n")  # json writes a bare NaN, as such files hold
    with pytest.raises(ValueError, match=r"caps.jsonl line 2: " + problem):
        load_tasks(tasks, {"capitals": str(path)})
    data = load_tasks(tasks, {"capitals": str(path)}, skip_bad_rows=True)
    assert data.examples["response"] == ["Lima"] and data.skipped == {str(path.resolve()): 1}
    # twin: the same row with a usable value loads
    path.write_text(good + "\n" + json.dumps({"country": "France", "capital": "Paris"}) + "\n")
    assert load_tasks(tasks, {"capitals": str(path)}).examples["response"] == ["Lima", "Paris"]


def test_csv_rows_empty_cells_and_field_counts(tasks, tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("country,capital\nFrance,Paris\nKenya,\nPeru,Lima,extra\n\"Chile\nand more\",Santiago\n")
    with pytest.raises(ValueError, match=r"caps.csv line 3: response field 'capital' is null"):
        load_tasks(tasks, {"capitals": str(path)})
    data = load_tasks(tasks, {"capitals": str(path)}, skip_bad_rows=True)
    assert data.examples["response"] == ["Paris", "Santiago"]
    assert data.examples["prompt"][1] == "What is the capital of Chile\nand more?"  # quoted newline kept
    assert data.skipped == {str(path.resolve()): 2}
    path.write_text("country,capital\nFrance,Paris\nPeru,Lima,extra\n")
    with pytest.raises(ValueError, match=r"caps.csv line 3: 3 fields, but the header has 2"):
        load_tasks(tasks, {"capitals": str(path)})


def test_json_array_files_name_the_line_of_a_syntax_error(tasks, tmp_path):
    path = tmp_path / "caps.json"
    path.write_text('[\n{"country": "France", "capital": "Paris"},\n{"country": "Peru" "capital": "Lima"}\n]\n')
    with pytest.raises(ValueError, match=r"caps.json line 3: not valid JSON \(Expecting ',' delimiter"):
        load_tasks(tasks, {"capitals": str(path)})
    path.write_text('[{"country": "France", "capital": "Paris"}, {"country": "Peru", "capital": "Lima"}]')
    assert load_tasks(tasks, {"capitals": str(path)}).examples["response"] == ["Paris", "Lima"]


def test_a_task_without_usable_rows_is_an_error(tasks, tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text('{"country": "Kenya"}\n{"country": "Peru", "capital": null}\n')
    with pytest.raises(ValueError, match=r"data_files\['capitals'\]: no usable rows in .*caps.jsonl'\] \(2 skipped\)"):
        load_tasks(tasks, {"capitals": str(path)}, skip_bad_rows=True)
    path.write_text("")
    with pytest.raises(ValueError, match=r"data_files\['capitals'\]: no rows in"):
        load_tasks(tasks, {"capitals": str(path)})


def test_invalid_utf8_is_counted_and_reported(tasks, tmp_path, caplog):
    path = tmp_path / "caps.csv"
    path.write_bytes("country,capital\nFrance,Paris\nCôte d'Ivoire,Yamoussoukro\nRéunion,Saint-Denis\n"
                     .encode("latin-1"))
    with caplog.at_level("WARNING", logger="zhyper.data.metadata"):
        data = load_tasks(tasks, {"capitals": str(path)})
    assert data.decode_errors == {str(path.resolve()): 2}
    assert data.examples["prompt"][1] == "What is the capital of C\ufffdte d'Ivoire?"
    assert any("caps.csv: 2 bytes on 2 lines are not valid UTF-8" in r.getMessage() and "first at line 3" in
               r.getMessage() for r in caplog.records)
    path.write_bytes("country,capital\nCôte d'Ivoire,Yamoussoukro\n".encode("utf-8-sig"))  # twin: valid UTF-8
    clean = load_tasks(tasks, {"capitals": str(path)})
    assert clean.decode_errors == {} and clean.examples["prompt"] == ["What is the capital of Côte d'Ivoire?"]


def test_a_bad_split_slice_names_the_metadata(tasks, tmp_path):
    shutil.copytree(tasks / "capitals", tmp_path / "capitals")
    meta = tmp_path / "capitals" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("split: train", "split: 'train[:ten]'"))
    with pytest.raises(ValueError, match=r"capitals/metadata.yaml: ds_kwargs.split 'train\[:ten\]' is not a split"):
        load_tasks(tmp_path, {"capitals": "data.jsonl"})


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


def test_json_documents_of_every_shape(tasks, tmp_path):
    """A .json file may be an array of rows, a mapping of columns, one pretty-printed row, or JSON lines."""
    path = tmp_path / "caps.json"
    shapes = {
        "array": '[\n  {"country": "France", "capital": "Paris"},\n  {"country": "Peru", "capital": "Lima"}\n]\n',
        "columns": '{\n  "country": ["France", "Peru"],\n  "capital": ["Paris", "Lima"]\n}\n',
        "lines": '{"country": "France", "capital": "Paris"}\n{"country": "Peru", "capital": "Lima"}\n',
    }
    for name, text in shapes.items():
        path.write_text(text)
        assert load_tasks(tasks, {"capitals": str(path)}).examples["response"] == ["Paris", "Lima"], name
    path.write_text('{\n  "country": "France",\n  "capital": "Paris"\n}\n')
    assert load_tasks(tasks, {"capitals": str(path)}).examples["response"] == ["Paris"]
    path.write_text('{\n  "country": ["France", "Peru"],\n  "capital": ["Paris"]\n}\n')
    with pytest.raises(ValueError, match=r"caps.json: a mapping of columns needs columns of one length, got lengths "
                                         r"\{'country': 2, 'capital': 1\}"):
        load_tasks(tasks, {"capitals": str(path)})
