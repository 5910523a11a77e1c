"""Tasks loaded through ``datasets.load_dataset(**ds_kwargs)``, the call a hub id takes, on local folders laid
out like the Lots-of-LoRAs hub datasets (README.md with the ``default`` config, data/{train,valid,test}-*.jsonl),
and the paper's split file; offline, a task whose rows are only on the hub is one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zhyper.data.tasks import TaskSplit, check_reachable, load_tasks, sni_fields

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: valid
    path: data/valid-*
  - split: test
    path: data/test-*
---
# {name} (hand-written fixture in the shape of a Lots-of-LoRAs dataset)
"""
DEFINITION = "Given two numbers, write their sum."


def sni_input(problem: str, definition: str = DEFINITION) -> str:
    """A Super-NaturalInstructions prompt as Lots-of-LoRAs stores it in ``input``."""
    return (f"Definition: {definition}\n\nPositive Example 1 -\nInput: 1 2\nOutput: 3\n\n"
            f"Negative Example 1 -\nInput: 2 2\nOutput: 5\n\nNow complete the following example -\n"
            f"Input: {problem}\nOutput: \n\n")


def hub_folder(folder: Path, name: str, n_train: int, n_valid: int = 4, definition: str = DEFINITION,
               readme: bool = True) -> Path:
    """A local dataset folder laid out like the hub's: rows {id, input, output: [answer]} per split."""
    (folder / "data").mkdir(parents=True)
    if readme:
        (folder / "README.md").write_text(README.format(name=name))
    for split, n in (("train", n_train), ("valid", n_valid), ("test", 2)):
        rows = [{"id": f"{name}-{split}-{i}", "input": sni_input(f"{split} {i} {i}", definition),
                 "output": [str(2 * i)]} for i in range(n)]
        (folder / "data" / f"{split}-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def lol_metadata(task_dir: Path, dataset: str, descriptions: list[str], split: str = "train[:10000]") -> None:
    """A metadata.yaml as T2L's tasks/lol_*/ ones (same keys, template and response field)."""
    import yaml

    task_dir.mkdir(parents=True)
    (task_dir / "metadata.yaml").write_text(yaml.safe_dump({
        "assistant_prefill": "", "descriptions": descriptions,
        "ds_kwargs": {"path": dataset, "split": split, "name": "default"}, "response_field": "answer",
        "system_message": "", "task_name": dataset, "user_prompt_template": "{task_def}\n\n{problem}"}))


TASKS = {"lol_001": 10, "lol_002": 6, "lol_003": 20, "lol_900": 0}  # lol_900: unseen (valid rows only)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """The datasets cache of these tests in their own folder, not the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    return tmp_path / "hf-datasets-cache"


@pytest.fixture
def paper(tmp_path):
    """(tasks dir with metadata + split file, datasets dir with hub-layout copies of the four datasets)."""
    tasks, hub = tmp_path / "tasks", tmp_path / "hub"
    for task, n in TASKS.items():
        dataset = f"Lots-of-LoRAs/task{task[4:]}_fixture"
        lol_metadata(tasks / task, dataset, [f"Task {task[4:]}: description {i}." for i in range(10)],
                     split="train" if task == "lol_900" else "train[:10000]")
        hub_folder(hub / dataset, dataset, n_train=n or 3)
    (tasks / "split.yaml").write_text(
        "train_ds_names:\n  - lol_001\n  - lol_002\n  - lol_003\n"
        "eval_ds_info:\n"
        "  lol_003:\n    descriptions:\n      - Add two numbers, seen task, unseen wording.\n"
        "  lol_900:\n    descriptions:\n      - Add two numbers, unseen task.\n"
        "  gsm8k:\n    descriptions:\n      - A benchmark, not loaded here.\n"
        "lr: 0.00001\n")
    return tasks, hub


def test_hub_layout_folders_load_through_load_dataset(paper):
    tasks, hub = paper
    data = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub)
    assert data.seen_contexts == ["lol_001", "lol_002", "lol_003"] and data.unseen_contexts == ["lol_900"]
    # only the split's validation task (lol_003) is cut 90 / 10; the others train on every row
    assert {t: data.examples.filter(lambda r, t=t: r["context"] == t)["split"].count("train")
            for t in data.seen_contexts} == {"lol_001": 10, "lol_002": 6, "lol_003": 18}
    assert set(data.split("validation")["context"]) == {"lol_003"} and len(data.split("validation")) == 2
    first = data.split("train")[0]
    assert first["prompt"] == (f"{DEFINITION} Please complete the task without any explanation.\n\ntrain 0 0")
    assert first["response"] == "0" and first["system"] == ""
    unseen = data.split("unseen")  # T2L reads an unseen task from valid[:500]
    assert len(unseen) == 4 and unseen[1]["prompt"].endswith("\n\nvalid 1 1") and unseen[1]["response"] == "2"
    assert data.paraphrases == {"lol_003": ["Add two numbers, seen task, unseen wording."],
                                "lol_900": ["Add two numbers, unseen task."]}
    assert len(data.heldout_descriptions["lol_900"]) == 10 and "lol_900" not in data.descriptions
    assert data.skipped == {} and data.decode_errors == {}


def test_local_files_give_the_same_rows_as_the_hub_layout(paper):
    """data_files (read by zhyper) and the hub-layout folder (read by datasets) give the same examples."""
    tasks, hub = paper
    files = {t: str(hub / f"Lots-of-LoRAs/task{t[4:]}_fixture/data/"
                    f"{'valid' if t == 'lol_900' else 'train'}-00000-of-00001.jsonl") for t in TASKS}
    via_hub = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub)
    via_files = load_tasks(tasks, data_files=files, split_file="split.yaml")
    assert via_files.examples.to_list() == via_hub.examples.to_list()
    mixed = load_tasks(tasks, data_files={"lol_002": files["lol_002"]}, split_file="split.yaml", datasets_dir=hub)
    assert mixed.examples.to_list() == via_hub.examples.to_list()


def test_ds_kwargs_path_may_be_the_local_folder_itself(tmp_path):
    """No datasets_dir: a metadata whose ds_kwargs.path is a folder (no README: data/train-* is found by name)."""
    folder = hub_folder(tmp_path / "copy", "plain", n_train=5, readme=False)
    lol_metadata(tmp_path / "tasks" / "lol_010", str(folder), ["Add.", "Sum the numbers."])
    (tmp_path / "tasks" / "split.yaml").write_text("train_ds_names: [lol_010]\n")
    data = load_tasks(tmp_path / "tasks", split_file=tmp_path / "tasks" / "split.yaml")
    assert data.examples["response"][:5] == ["0", "2", "4", "6", "8"]
    assert data.split("train")[4]["prompt"].endswith("train 4 4")


def test_a_changed_local_copy_is_read_again(paper, datasets_cache):
    """datasets names its cache of a hub-layout folder by the folder's name and README only; zhyper gives each
    folder state a cache of its own, so changed files (or a second copy of the same name) are never stale."""
    tasks, hub = paper
    before = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, contexts=["lol_002"])
    path = hub / "Lots-of-LoRAs/task002_fixture/data/train-00000-of-00001.jsonl"
    path.write_text(path.read_text().replace('"output": ["0"]', '"output": ["zero"]'))
    after = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, contexts=["lol_002"])
    assert before.examples["response"][0] == "0" and after.examples["response"][0] == "zero"
    assert len(list((datasets_cache / "zhyper-local").iterdir())) == 2


def test_contexts_load_only_the_named_tasks(paper):
    tasks, hub = paper
    data = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, contexts=["lol_003", "lol_900"])
    assert data.contexts == ["lol_003", "lol_900"] and set(data.paraphrases) == {"lol_003", "lol_900"}
    with pytest.raises(ValueError, match=r"contexts: expected names of tasks of .*split.yaml, at least one of them "
                                         r"seen; got \['lol_900'\]"):
        load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, contexts=["lol_900"])
    with pytest.raises(ValueError, match=r"unknown: \['gsm8k'\]"):  # a benchmark is not a task of the split
        load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, contexts=["lol_001", "gsm8k"])


def test_sni_fields_as_t2l_reads_them():
    row = {"input": sni_input("3 4"), "output": ["7", "seven"]}
    fields = sni_fields(row, "row 1")
    assert fields["problem"] == "3 4" and fields["answer"] == "7, seven"
    assert fields["task_def"] == (f"{DEFINITION} Please complete the task without any explanation.\n"
                                  "The answer should be a comma-separated list of possible completions.")
    assert sni_fields({"input": sni_input("1 1"), "output": "2"}, "w")["answer"] == "2"


def test_a_bad_dataset_row_names_the_dataset_and_row(paper):
    tasks, hub = paper
    path = hub / "Lots-of-LoRAs/task002_fixture/data/train-00000-of-00001.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"id": "x", "input": "Just a question without the SNI frame", "output": ["4"]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"task002_fixture \[train\[:10000\]\] row 3: field 'input' is not a "
                                         r"Super-NaturalInstructions prompt .*task 'lol_002'; pass skip_bad_rows=True"):
        load_tasks(tasks, split_file="split.yaml", datasets_dir=hub)
    data = load_tasks(tasks, split_file="split.yaml", datasets_dir=hub, skip_bad_rows=True)
    assert data.skipped == {f"{hub}/Lots-of-LoRAs/task002_fixture [train[:10000]]": 1}
    assert len(data.examples.filter(lambda r: r["context"] == "lol_002")) == 5


def test_a_dataset_without_the_split_is_named(paper):
    tasks, hub = paper
    for f in (hub / "Lots-of-LoRAs/task900_fixture/data").glob("valid-*"):
        f.unlink()
    (hub / "Lots-of-LoRAs/task900_fixture/README.md").write_text("# no configs\n")
    with pytest.raises(ValueError, match=r"task 'lol_900': datasets.load_dataset\(.*task900_fixture', "
                                         r"split='valid\[:500\]'\) failed: ValueError: Unknown split \"valid\". "
                                         r"Should be one of \['train', 'test'\]"):
        load_tasks(tasks, split_file="split.yaml", datasets_dir=hub)


def test_split_file_errors(paper, tmp_path):
    tasks, hub = paper
    with pytest.raises(ValueError, match=r"split_file: 'nope.yaml' not found \(looked in \['nope.yaml', '.*tasks/"
                                         r"nope.yaml'\]\)"):
        load_tasks(tasks, split_file="nope.yaml", datasets_dir=hub)
    (tasks / "bad.yaml").write_text("train_ds_names: lol_001\n")
    with pytest.raises(ValueError, match=r"bad.yaml: train_ds_names: expected a non-empty list of task names"):
        load_tasks(tasks, split_file="bad.yaml")
    (tasks / "bad.yaml").write_text("train_ds_names: [lol_001, lol_001]\n")
    with pytest.raises(ValueError, match=r"train_ds_names: tasks \['lol_001'\] are listed more than once"):
        load_tasks(tasks, split_file="bad.yaml")
    (tasks / "bad.yaml").write_text("train_ds_names: [lol_001, lol_404, lol_405]\n")
    with pytest.raises(ValueError, match=r"bad.yaml: task 'lol_404' has no .*lol_404/metadata.yaml \(nor have 1 more\); "
                                         r"tasks under .*: \['lol_001', 'lol_002', 'lol_003', 'lol_900'\]"):
        check_reachable(tasks, split_file="bad.yaml")
    with pytest.raises(ValueError, match=r"data_files: tasks \['capitals'\] are neither training nor unseen tasks"):
        load_tasks(tasks, {"capitals": "x.jsonl"}, split_file="split.yaml")
    with pytest.raises(ValueError, match=r"unseen: the split file split.yaml names the unseen tasks"):
        load_tasks(tasks, unseen=["lol_001"], split_file="split.yaml")


# ---------------------------------------------------------------- offline: one line naming the dataset
OFFLINE_LINE = (r"task 'lol_001': its rows are on the Hugging Face hub, dataset 'Lots-of-LoRAs/task001_fixture' "
                r"\(split 'train\[:10000\]'\), not in the datasets cache, and the hub is switched off "
                r"\(HF_HUB_OFFLINE=1.*\); pass local copies instead: datasets_dir=DIR with "
                r"DIR/Lots-of-LoRAs/task001_fixture laid out like the hub dataset .*hf download --repo-type dataset "
                r"Lots-of-LoRAs/task001_fixture.*, or data_files=\{'lol_001': FILE\}")


def test_offline_hub_rows_are_one_clear_error(paper, monkeypatch):
    tasks, hub = paper
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (check_reachable, load_tasks):
        with pytest.raises(ValueError, match=OFFLINE_LINE) as err:
            call(tasks, split_file="split.yaml")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"switched off \(HF_HUB_OFFLINE=1.*\) \(and .*elsewhere/"
                                         r"Lots-of-LoRAs/task001_fixture does not exist\)"):
        check_reachable(tasks, split_file="split.yaml", datasets_dir=hub.parent / "elsewhere")
    check_reachable(tasks, split_file="split.yaml", datasets_dir=hub)  # the twin: local copies pass
    files = {t: str(next((hub / f"Lots-of-LoRAs/task{t[4:]}_fixture/data").glob("train-*"))) for t in TASKS}
    check_reachable(tasks, files, split_file="split.yaml")  # and so do local files


def test_no_network_names_the_hub_not_the_offline_switch(paper, monkeypatch):
    from zhyper.data.tasks import _not_loadable

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    err = _not_loadable("lol_001", {"path": "Lots-of-LoRAs/task001_fixture", "split": "train"}, None,
                        ConnectionError("Couldn't reach 'Lots-of-LoRAs/task001_fixture' on the Hub (ConnectError)"))
    assert "the hub cannot be reached (no network? ConnectionError: Couldn't reach" in str(err)
    assert "HF_HUB_OFFLINE" not in str(err) and "datasets_dir=DIR" in str(err)


def test_run_config_checks_the_rows_before_anything_loads(paper, monkeypatch):
    from zhyper.training.config import build_config

    tasks, hub = paper
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = {"data": {"source": "tasks", "path": str(tasks), "split_file": "split.yaml"}}
    with pytest.raises(ValueError, match=OFFLINE_LINE + r".*; in a run config data.datasets_dir=DIR or "
                                                        r"data.data_files"):
        build_config(raw)
    cfg = build_config(raw, [f"data.datasets_dir={hub}"])
    assert cfg.data.datasets_dir == str(hub)
    with pytest.raises(ValueError, match=r"data.split_file applies to data.source 'tasks'; data.source is 'builtin'"):
        build_config({"data": {"split_file": "split.yaml"}})


# ---------------------------------------------------------------- the real split and metadata (../shared/data)
def test_the_papers_split_file(shared_data):
    split = TaskSplit.from_file(shared_data / "tasks" / "hyper_lora_decontam_lol_tasks.yaml")
    assert (len(split.train), len(split.validation), len(split.unseen), len(split.benchmarks)) == (479, 10, 11, 10)
    assert set(split.validation) <= set(split.train) and not set(split.unseen) & set(split.train)
    assert all(len(split.eval_descriptions[t]) == 3 for t in (*split.validation, *split.unseen))


def test_real_metadata_with_hub_layout_copies(shared_data, tmp_path):
    """The real lol metadata and split, the rows from hand-written hub-layout copies under datasets_dir."""
    root = shared_data / "tasks"
    picks = {"lol_1711": "Lots-of-LoRAs/task1711_poki_text_generation",  # seen, validation
             "lol_453": "Lots-of-LoRAs/task453_swag_answer_generation",  # seen, all rows train
             "lol_701": "Lots-of-LoRAs/task701_mmmlu_answer_generation_high_school_computer_science"}  # unseen
    for dataset in picks.values():
        hub_folder(tmp_path / dataset, dataset, n_train=10, definition=f"The task of {dataset}.")
    data = load_tasks(root, split_file="hyper_lora_decontam_lol_tasks.yaml", datasets_dir=tmp_path,
                      contexts=list(picks))
    assert data.seen_contexts == ["lol_1711", "lol_453"] and data.unseen_contexts == ["lol_701"]
    assert set(data.split("validation")["context"]) == {"lol_1711"}
    assert data.split("unseen")[0]["prompt"].startswith(f"The task of {picks['lol_701']}. Please complete")
    assert len(data.descriptions["lol_453"]) + len(data.heldout_descriptions["lol_453"]) == 200
    assert len(data.paraphrases["lol_1711"]) == 3


@pytest.mark.parametrize("config", ["tasks.yaml", "mistral7b-tasks.yaml"])
def test_launch_configs_offline_say_the_rows_are_on_the_hub(shared_data, config, monkeypatch, capsys):
    from zhyper.cli import main

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(repo)
    code = main(["plan", "--config", f"launch/configs/{config}", "--ds_config", "launch/configs/zero2.json",
                 f"data.path={shared_data / 'tasks'}"])
    line = capsys.readouterr().err.strip()
    assert code == 2  # a user error: one line and exit 2, as every zhyper command
    assert line.startswith(f"zhyper plan: error: launch/configs/{config}: task 'lol_742': its rows are on the Hugging "
                           "Face hub, dataset 'Lots-of-LoRAs/task742_lhoestq_answer_generation_frequency'")
    assert "HF_HUB_OFFLINE=1" in line and "data.datasets_dir=DIR" in line and "\n" not in line
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_plan_of_the_paper_scale_config_with_local_copies(shared_data, tmp_path, monkeypatch, capsys):
    """Offline with local copies of the named tasks, ``zhyper plan`` says what the Mistral-7B run needs."""
    from zhyper.cli import main

    repo = Path(__file__).resolve().parents[2]
    picks = {"lol_453": "Lots-of-LoRAs/task453_swag_answer_generation",
             "lol_701": "Lots-of-LoRAs/task701_mmmlu_answer_generation_high_school_computer_science"}
    for dataset in picks.values():
        hub_folder(tmp_path / dataset, dataset, n_train=10)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(repo)
    assert main(["plan", "--config", "launch/configs/mistral7b-tasks.yaml", "--ds_config",
                 "launch/configs/ds_zero3_mistral7b.json", "--nodes", "2", "--gpus-per-node", "4",
                 f"data.path={shared_data / 'tasks'}", f"data.datasets_dir={tmp_path}",
                 f"data.contexts=[{','.join(picks)}]"]) == 0
    out = capsys.readouterr().out
    assert "zhyper plan: mistralai/Mistral-7B-Instruct-v0.2, zhyper diag r8" in out and "FITS" in out
