"""zhyper eval benchmarks: lm-eval's tasks on local rows, T2L's cells, paired differences, the command end to
end with its resume after a real crash."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("lm_eval")

from tests.evaluation.bench_fixtures import benchmark_dirs  # noqa: E402
from zhyper.evaluation import benchmarks as bm  # noqa: E402
from zhyper.evaluation import lm_tasks  # noqa: E402


@pytest.fixture(scope="module")
def manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


def test_local_task_keeps_lm_evals_definition_and_drops_missing_splits(tmp_path, manager):
    data, _ = benchmark_dirs(tmp_path)
    piqa = lm_tasks.local_task_config("piqa", data, manager)
    assert piqa["dataset_path"] == "json" and piqa["validation_split"] == "validation"
    assert piqa["training_split"] is None and piqa["doc_to_choice"] == "{{[sol1, sol2]}}"
    assert piqa["dataset_kwargs"]["data_files"] == {"validation": str((data / "piqa" / "validation.jsonl").resolve())}
    gsm = lm_tasks.local_task_config("gsm8k", data, manager)
    assert gsm["num_fewshot"] == 0 and gsm["fewshot_split"] is None  # no train split here: zero-shot
    (data / "gsm8k" / "train.jsonl").write_text((data / "gsm8k" / "test.jsonl").read_text())
    assert lm_tasks.local_task_config("gsm8k", data, manager)["num_fewshot"] == 5  # the twin: YAML's own
    assert lm_tasks.task_spec("piqa", None, manager) == "piqa"  # no --data-dir: the hub, by name


def test_local_task_errors_name_what_is_missing(tmp_path, manager):
    data, _ = benchmark_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder winogrande/"):
        lm_tasks.local_task_config("winogrande", data, manager)
    (data / "winogrande").mkdir()
    (data / "winogrande" / "train.jsonl").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"no evaluation split .*\['validation'\]"):
        lm_tasks.local_task_config("winogrande", data, manager)
    with pytest.raises(ValueError, match="not a task of lm-eval's own"):
        lm_tasks.local_task_config("no_such_task", data, manager)
    (data / "piqa" / "validation.json").write_text("[]")
    with pytest.raises(ValueError, match="several files for split 'validation'"):
        lm_tasks.local_task_config("piqa", data, manager)


def test_task_lists_and_the_code_execution_opt_in(tmp_path, monkeypatch):
    data, _ = benchmark_dirs(tmp_path)
    assert lm_tasks.parse_tasks(None, data) == ["gsm8k", "piqa"]
    (data / "mbpp").mkdir()
    assert lm_tasks.parse_tasks(None, data, code_execution=False) == ["gsm8k", "piqa"]  # left out by default
    assert lm_tasks.parse_tasks(None, data, code_execution=True) == ["gsm8k", "piqa", "mbpp"]
    assert lm_tasks.parse_tasks(None, None) == list(lm_tasks.BENCHMARKS) and len(lm_tasks.BENCHMARKS) == 10
    assert lm_tasks.parse_tasks(" piqa, winogrande ") == ["piqa", "winogrande"]
    with pytest.raises(ValueError, match="named twice"):
        lm_tasks.parse_tasks("piqa,piqa")
    with pytest.raises(FileNotFoundError, match="holds none of the benchmarks"):
        lm_tasks.parse_tasks(None, tmp_path / "data" / "piqa")
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(ValueError, match="--allow-code-execution"):
        lm_tasks.check_code_execution(["piqa", "mbpp"], allowed=False)
    lm_tasks.check_code_execution(["piqa"], allowed=False)
    assert "HF_ALLOW_CODE_EVAL" not in os.environ
    monkeypatch.chdir(tmp_path)  # evaluate.load looks for ./code_eval/ first
    with pytest.raises(FileNotFoundError, match="evaluate-metric/code_eval"):  # offline here: not loadable
        lm_tasks.check_code_execution(["humaneval"], allowed=True)


def test_cells_follow_t2ls_protocol(tmp_path):
    _, tasks_dir = benchmark_dirs(tmp_path)
    descs = bm.benchmark_descriptions(tasks_dir, "piqa", 2, seed=0)
    assert len(descs) == 2 and descs == bm.benchmark_descriptions(tasks_dir, "piqa", 2, seed=0)
    assert descs != bm.benchmark_descriptions(tasks_dir, "piqa", 2, seed=3)  # another draw
    randoms = bm.random_descriptions(2, seed=0)
    assert len(set(randoms)) == 2 and randoms != bm.random_descriptions(2, seed=1)
    cells = bm.plan("piqa", ["descriptions", "random", "description_in_prompt"], descs, randoms)
    assert [c.id for c in cells] == ["adapters_off", "descriptions_0", "descriptions_1", "random_0", "random_1",
                                     "description_in_prompt_0", "description_in_prompt_1"]
    assert cells[5].text == cells[1].text  # the same descriptions, in the prompt instead
    with pytest.raises(ValueError, match="fewer than --descriptions 9"):
        bm.benchmark_descriptions(tasks_dir, "piqa", 9, seed=0)
    with pytest.raises(FileNotFoundError, match="no winogrande/metadata.yaml"):
        bm.benchmark_descriptions(tasks_dir, "winogrande", 1, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        bm.plan("piqa", ["nope"])


def test_paired_difference_and_groups():
    ref = {"0": 1.0, "1": 0.0, "2": 1.0, "3": 0.0}
    same = bm.paired(dict(ref), ref)
    assert same == {"diff": 0.0, "two_se": 0.0, "n": 4, "changed": 0.0}
    flipped = bm.paired({"0": 0.0, "1": 1.0, "2": 1.0, "3": 0.0}, ref)  # the twin: the sides differ
    assert flipped["diff"] == 0.0 and flipped["two_se"] > 0.5 and flipped["changed"] == 0.5
    better = bm.paired({"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0, "9": 1.0}, ref)
    assert better["n"] == 4 and better["diff"] == 0.5
    assert math.isclose(better["two_se"], 2 * math.sqrt((1 / 3) / 4))
    cell = bm.CellResult(bm.Cell("t", "adapters_off"), {"acc,none": 0.5, "acc_stderr,none": 0.1}, {"acc,none": ref})
    members = [bm.CellResult(bm.Cell("t", "random", i), {"acc,none": v}, {"acc,none": {"0": v, "1": v}})
               for i, v in enumerate((0.0, 1.0))]
    group = bm.summarize_group(members, cell, "acc,none")
    assert group["mean"] == 0.5 and group["min"] == 0.0 and math.isclose(group["sd_across"], math.sqrt(0.5))
    assert group["paired_vs_adapters_off"]["n"] == 2 and group["paired_vs_adapters_off"]["diff"] == 0.0


def test_per_doc_scores_keep_metric_and_filter():
    samples = [{"doc_id": 0, "filter": "strict-match", "metrics": ["exact_match"], "exact_match": 1.0},
               {"doc_id": 0, "filter": "flexible-extract", "metrics": ["exact_match"], "exact_match": 0.0},
               {"doc_id": 1, "filter": "strict-match", "metrics": ["exact_match", "bleu"], "exact_match": True,
                "bleu": ("not", "numeric")}]
    assert bm.per_doc_scores(samples) == {"exact_match,strict-match": {"0": 1.0, "1": 1.0},
                                          "exact_match,flexible-extract": {"0": 0.0}}


def _cli(args, cwd, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "zhyper", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _checkpoint(tmp_path):
    from tests.serving.conftest import make_checkpoint

    return make_checkpoint(tmp_path)


def _args(ckpt, data, tasks, out):
    return ["eval", "benchmarks", "--checkpoint", str(ckpt), "--data-dir", str(data), "--tasks-dir", str(tasks),
            "--descriptions", "2", "--random", "1", "--max-gen-toks", "4", "--batch-size", "4",
            "--conditions", "adapters_off", "descriptions", "random", "description_in_prompt", "contexts",
            "--contexts", "pirate", "--out", str(out)]


@pytest.mark.slow
def test_command_end_to_end_and_its_resume_after_a_crash(tmp_path):
    ckpt = _checkpoint(tmp_path)
    data, tasks = benchmark_dirs(tmp_path)
    out = tmp_path / "out"
    proc = _cli(_args(ckpt, data, tasks, out), tmp_path)
    deadline = time.time() + 300
    while not list((out / "cells").glob("*/*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()  # a real crash after the first finished cell
    proc.wait()
    first = sorted(p.name for p in (out / "cells").rglob("*.json"))
    assert 1 <= len(first) < 14
    done = _cli(_args(ckpt, data, tasks, out), tmp_path)
    log, _ = done.communicate(timeout=600)
    assert done.returncode == 0, log[-3000:]
    assert log.count(": reused (") == len(first)  # nothing finished was evaluated again
    summary = json.loads((out / "benchmarks.json").read_text())
    piqa = summary["tasks"]["piqa"]
    assert piqa["metric"] == "acc,none" and piqa["n"] == 6
    assert set(piqa["groups"]) == {"descriptions", "random", "description_in_prompt"}
    assert "contexts:pirate" in piqa["conditions"] and "acc_stderr,none" in piqa["conditions"]["adapters_off"]
    assert summary["tasks"]["gsm8k"]["metric"] == "exact_match,strict-match"
    assert "| adapters off (base model) |" in (out / "benchmarks.md").read_text()
    assert (out / "benchmarks.png").read_bytes()[:4] == b"\x89PNG" and (out / "mlflow.db").is_file()
    again = _cli(_args(ckpt, data, tasks, out) + ["--limit", "3"], tmp_path)  # another setting: new cells
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and ": reused (" not in log
    assert set(first) <= {p.name for p in (out / "cells").rglob("*.json")}  # the first run's cells are kept


def test_command_refuses_bad_input_before_loading(tmp_path):
    from zhyper.cli import main

    data, tasks = benchmark_dirs(tmp_path)
    assert main(["eval", "benchmarks", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "zhyper_config.json").write_text("{}")
    base = ["eval", "benchmarks", "--checkpoint", str(ckpt), "--data-dir", str(data)]
    assert main([*base, "--out", str(ckpt / "inside"), "--tasks-dir", str(tasks)]) == 2
    assert main([*base, "--out", str(tmp_path / "o")]) == 2  # descriptions need --tasks-dir
    assert main([*base, "--out", str(tmp_path / "o"), "--conditions", "adapters_off", "peft"]) == 2
    assert main([*base, "--out", str(tmp_path / "o"), "--tasks", "mbpp", "--conditions", "adapters_off"]) == 2
    assert not (tmp_path / "o").exists()
