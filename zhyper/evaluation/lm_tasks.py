"""The paper's ten benchmarks as lm-evaluation-harness tasks, from the hub or from local files.

Each benchmark is lm-eval's own task definition (its YAML, its ``doc_to_*`` functions, its metrics
and filters), unchanged except, with ``data_dir``, where its rows come from: ``<data_dir>/<task>/
<split>.jsonl`` (or ``.json`` / ``.parquet``) in the row schema of the hub dataset the YAML names,
read by ``datasets``' json/parquet builder. A split the folder lacks is dropped from the task (a
missing train split means no few-shot examples: such a task runs zero-shot, as gsm8k does here);
a task without its evaluation split in the folder is an error naming the file expected. Without
``data_dir`` the task is named as it is and lm-eval reads the hub dataset.

humaneval and mbpp execute the model's code: lm-eval requires an explicit opt-in for them
(``confirm_run_unsafe_code`` and ``HF_ALLOW_CODE_EVAL=1``), and so does zhyper
(``allow_code_execution``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# the paper's ten benchmarks (T2L's evaluation set), by lm-eval task name
BENCHMARKS = ("arc_challenge", "arc_easy", "boolq", "gsm8k", "hellaswag", "openbookqa", "piqa", "winogrande",
              "humaneval", "mbpp")
CODE_EXECUTION = frozenset({"humaneval", "mbpp"})
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def parse_tasks(text: str | None, data_dir: str | Path | None = None, code_execution: bool = True) -> list[str]:
    """``"piqa,winogrande"`` -> names; None: the benchmarks ``data_dir`` holds (or all ten without it), less
    the code-executing ones unless ``code_execution`` (named tasks are kept: the opt-in check names them)."""
    if text is None:
        held = list(BENCHMARKS) if data_dir is None else [t for t in BENCHMARKS if (Path(data_dir) / t).is_dir()]
        if not held:
            raise FileNotFoundError(f"--data-dir {data_dir}: holds none of the benchmarks {list(BENCHMARKS)} "
                                    "(expected folders <task>/<split>.jsonl)")
        skipped = [t for t in held if t in CODE_EXECUTION and not code_execution]
        if skipped:
            log.warning("%s left out: they execute generated code (--allow-code-execution, or name them in --tasks)",
                        skipped)
        return [t for t in held if t not in skipped]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--tasks: expected task names separated by commas, got {text!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"--tasks: a task is named twice in {text!r}")
    return names


def check_code_execution(tasks: list[str], allowed: bool) -> None:
    """Refuse code-executing tasks without the opt-in, naming the flag; set lm-eval's switch with it."""
    import os

    risky = [t for t in tasks if t in CODE_EXECUTION]
    if risky and not allowed:
        raise ValueError(f"{risky} execute the model's generated code on this machine; pass "
                         "--allow-code-execution to run them (lm-eval requires the same opt-in)")
    if risky:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # read by the code_eval metric that humaneval/mbpp use
        _check_code_eval_metric(risky)


def _check_code_eval_metric(tasks: list[str]) -> None:
    """humaneval/mbpp score with ``evaluate.load("code_eval")``, a metric that lives on the hub: say so up front."""
    try:
        import evaluate

        evaluate.load("code_eval")
    except Exception as err:  # offline and not cached: lm-eval would fail only when it builds the task
        raise FileNotFoundError(
            f"{tasks} are scored by lm-eval with the hub metric evaluate-metric/code_eval (evaluate.load('code_eval')), "
            f"which could not be loaded ({type(err).__name__}: {str(err)[:160]}); make the hub reachable once (it is "
            "cached afterwards) or leave these tasks out of --tasks") from None


def _task_yaml(name: str, task_manager) -> Path:
    entry = task_manager.task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"task {name!r}: not a task of lm-eval's own (a YAML task); the paper's benchmarks "
                         f"are {list(BENCHMARKS)}")
    return Path(entry.yaml_path)


def _split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{s}" for s in SUFFIXES if (folder / f"{split}{s}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder}: several files for split {split!r} ({[p.name for p in found]}); keep one")
    return found[0] if found else None


def local_task_config(name: str, data_dir: str | Path, task_manager) -> dict:
    """lm-eval's own config of task ``name`` (functions resolved) reading its rows from ``data_dir/name``."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader lm-eval's TaskManager uses (pinned 0.4.13)

    task_yaml = _task_yaml(name, task_manager)
    folder = Path(data_dir) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no folder {name}/ (expected {folder}/<split>.jsonl in "
                                "the row schema of the task's hub dataset)")
    cfg = dict(load_yaml(task_yaml, resolve_func=True))
    files = {}
    for key in SPLIT_KEYS:
        split = cfg.get(key)
        path = _split_file(folder, split) if split else None
        if split and path is None:
            cfg[key] = None
        elif path is not None:
            files[split] = path
    if cfg.get("test_split") is None and cfg.get("validation_split") is None:
        raise FileNotFoundError(f"--data-dir: task {name} has no evaluation split in {folder} (expected "
                                f"{_eval_split_names(name, task_manager)} as .jsonl, .json or .parquet)")
    builders = {SUFFIXES[p.suffix] for p in files.values()}
    if len(builders) > 1:
        raise ValueError(f"{folder}: mixes json and parquet files; use one format per task")
    cfg.update(dataset_path=builders.pop(), dataset_name=None,
               dataset_kwargs={"data_files": {s: str(p.resolve()) for s, p in files.items()}})
    if cfg.get("fewshot_split") is None and cfg.get("training_split") is None and cfg.get("num_fewshot") \
            and not (cfg.get("fewshot_config") or {}).get("samples"):
        log.warning("%s: no train split in %s, so no few-shot examples: run zero-shot (its YAML says %s-shot)",
                    name, folder, cfg["num_fewshot"])
        cfg["num_fewshot"] = 0
    return cfg


def _eval_split_names(name: str, task_manager) -> list[str]:
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(_task_yaml(name, task_manager), resolve_func=False)
    return [cfg[k] for k in ("test_split", "validation_split") if cfg.get(k)]


def task_spec(name: str, data_dir: str | Path | None, task_manager):
    """What ``simple_evaluate(tasks=[...])`` takes for ``name``: its name (hub) or its local config."""
    return name if data_dir is None else local_task_config(name, data_dir, task_manager)


def data_digest(spec) -> str:
    """SHA-256 over the local files a task spec reads (the hub dataset's name when it reads the hub)."""
    if isinstance(spec, str):
        return f"hub:{spec}"
    digest = hashlib.sha256()
    for split, path in sorted(spec["dataset_kwargs"]["data_files"].items()):
        digest.update(split.encode() + b"\0")
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()
