"""Task-description loader for the T2L / Zhyper ``tasks/<name>/metadata.yaml`` format.

A task's rows come from one of two places:

- the dataset its metadata names, through ``datasets.load_dataset(**ds_kwargs)``: a hub id
  (``Lots-of-LoRAs/task022_...``), or a local folder laid out like the hub dataset (the same call:
  ``datasets_dir=DIR`` reads ``DIR/<ds_kwargs.path>`` in place of the hub id when that folder
  exists, e.g. a ``hf download --repo-type dataset <id> --local-dir DIR/<id>`` copy);
- local files the user names per task (``data_files``: json / jsonl / csv / parquet), read here
  so that every problem names its file and line; ``ds_kwargs['split']``'s slice (``train[:10000]``)
  is applied to them.

Each row becomes (system = system_message, prompt = user_prompt_template.format(**row),
response = assistant_prefill + row[response_field] + assistant_postfill). Rows in the
Lots-of-LoRAs shape (``input``: the Super-NaturalInstructions prompt, ``output``: a list of
answers) are first turned into ``task_def`` / ``problem`` / ``answer``, the fields of the lol
metadata's template, as T2L does (``sni_fields``).

Splits: a seen task's rows [0, 90%) are "train" and the rest "validation" (positional, as the
reference's ``train[:90%]``; with ``split_file`` only the split's validation tasks are cut, the
other seen tasks train on all their rows); an unseen task's first ``max_unseen_examples`` rows
are "unseen". Descriptions: seen tasks keep ``1 - heldout_fraction`` for training (seeded per
task), unseen tasks have all of theirs held out.

``split_file``: the paper's split (T2L's ``hyper_lora_decontam_lol_tasks.yaml``, read in place):
``train_ds_names`` are the seen tasks, the ``eval_ds_info`` tasks among them the seen-validation
tasks, its ``lol_`` tasks outside them the unseen ones (read from ``valid[:500]``, as T2L does);
its other tasks (benchmarks) are not loaded. Its own ``eval_ds_info`` descriptions, never in a
metadata file, become the tasks' ``paraphrases`` (evaluation only).

Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or without a network, a task whose rows are
only on the hub is one ``ValueError`` naming the task, the dataset id, why, and how to pass local
copies instead; ``check_reachable`` says it before anything is loaded (run configs call it).

Local files: a line that is not JSON, a CSV row with the wrong number of fields, a row whose
template field or response field is missing or null (an empty CSV cell is null) is a
``ValueError`` naming ``file line N`` (parquet and datasets: ``row N``). With
``skip_bad_rows=True`` such rows are skipped instead, counted per file (or dataset) in
``TaskData.skipped`` and logged. A task left without rows is an error. Bytes that are not valid
UTF-8 are replaced, counted in ``TaskData.decode_errors`` and logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import ContextData, check_descriptions, split_descriptions, split_labels
from .metadata import DecodeCount, RowError, TaskSpec, csv_rows, read_yaml, template_fields, utf8_lines

logger = logging.getLogger(__name__)

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
UNSEEN_SPLIT = "valid[:500]"  # T2L reads an unseen lol task's rows from its dataset's valid split
SNI_FIELDS = ("task_def", "problem", "answer")  # what the lol metadata's template reads of a Lots-of-LoRAs row
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _resolve(task: str, files: str | Path | Sequence[str | Path], task_dir: Path) -> list[str]:
    items = [files] if isinstance(files, (str, Path)) else list(files)
    if not items:
        raise ValueError(f"data_files[{task!r}]: expected a file or a list of files, got an empty list")
    out = []
    for item in items:
        candidates = [Path(item)] if Path(item).is_absolute() else [Path(item), task_dir / item]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ValueError(f"data_files[{task!r}]: file {str(item)!r} not found (looked in "
                             f"{[str(p) for p in candidates]})")
        out.append(str(found.resolve()))
    kinds = {Path(p).suffix.lower() for p in out}
    if not kinds <= set(BUILDERS) or len({BUILDERS[k] for k in kinds}) != 1:
        raise ValueError(f"data_files[{task!r}]: expected files of one format among {sorted(BUILDERS)}, got "
                         f"suffixes {sorted(kinds)}")
    return out


def _local_split(split: str | None) -> str:
    """The slice of a split spec applied to the local files' only split: 'test[:50]' -> 'train[:50]'."""
    return re.sub(r"^[A-Za-z_]\w*", "train", str(split or "train"))


@dataclass
class TaskData(ContextData):
    """ContextData of the task loader.

    skipped: {data file: rows skipped} (only with ``skip_bad_rows=True``; otherwise a bad row raises).
    decode_errors: {data file: bytes that were not valid UTF-8, replaced by U+FFFD}.
    """

    skipped: dict[str, int] = field(default_factory=dict)
    decode_errors: dict[str, int] = field(default_factory=dict)


Record = tuple[str, Any]  # (where: "<file> line N", the row: a dict, or the RowError that row raised)


def _json_document(path: Path, lines: list[str]) -> list | None:
    """A .json file that is one JSON document: its rows (an array of objects, or a mapping of equally
    long columns); None when it is not one document (then it is read as JSON lines)."""
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    try:
        doc = json.loads("".join(lines))
    except json.JSONDecodeError as err:
        if first.startswith("["):
            raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
        return None
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict) or sum(1 for ln in lines if ln.strip()) < 2:
        return None  # one object on one line: a JSON-lines file of one row
    if doc and all(isinstance(v, list) for v in doc.values()):  # {column: [values]}
        lengths = {k: len(v) for k, v in doc.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{path}: a mapping of columns needs columns of one length, got lengths {lengths}")
        return [{k: v[i] for k, v in doc.items()} for i in range(next(iter(lengths.values())))]
    return [doc]  # one pretty-printed object: one row


def _json_records(path: Path, count: DecodeCount) -> tuple[list[Record], list[str]]:
    """Rows of a .json (an array of objects, a mapping of columns, or JSON lines) / .jsonl file, with lines."""
    records, columns = [], {}
    lines = list(utf8_lines(path, count))
    items = _json_document(path, lines) if path.suffix.lower() == ".json" else None
    if items is not None:
        for i, item in enumerate(items):
            where = f"{path} element {i}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a JSON object (one row), got {type(item).__name__}")
            columns.update(dict.fromkeys(item))
            records.append((where, item))
        return records, list(columns)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            records.append((where, RowError(f"{where}: not valid JSON ({err.msg}, column {err.colno})")))
            continue
        if not isinstance(item, dict):
            records.append((where, RowError(f"{where}: expected a JSON object (one row), got {type(item).__name__}")))
            continue
        columns.update(dict.fromkeys(item))
        records.append((where, item))
    return records, list(columns)


def _csv_records(path: Path, count: DecodeCount) -> tuple[list[Record], list[str]]:
    """Rows of a CSV file (header first), each with the line it starts on; an empty cell is null (None)."""
    header, parsed = csv_rows(path, count)
    records = []
    for start, row in parsed:
        where = f"{path} line {start}"
        if isinstance(row, str):
            records.append((where, RowError(f"{where}: {row}")))
        else:
            records.append((where, {k: (v if v != "" else None) for k, v in zip(header, row)}))
    return records, header


def _parquet_records(path: Path) -> tuple[list[Record], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: cannot be read as parquet ({type(err).__name__}: {err})") from None
    return [(f"{path} row {i + 1}", row) for i, row in enumerate(table.to_pylist())], list(table.column_names)


def read_records(paths: Sequence[str], decode: dict[str, int]) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """Every row of the task's files in order as (file, where, row), and the union of their columns."""
    records, columns = [], {}
    for p in paths:
        path = Path(p)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            recs, cols = _parquet_records(path)
        else:
            count = DecodeCount(path)
            recs, cols = (_csv_records if suffix == ".csv" else _json_records)(path, count)
            count.warn()
            if count.bad_bytes:
                decode[str(path)] = count.bad_bytes
        records.extend((str(path), where, row) for where, row in recs)
        columns.update(dict.fromkeys(cols))
    return records, list(columns)


def _slice(records: list, spec: TaskSpec, split: str | None) -> list:
    """Apply a split's slice ('train[:10000]', 'train[90%:]') to the local rows."""
    from datasets import ReadInstruction

    try:
        parts = ReadInstruction.from_spec(_local_split(split)).to_absolute({"train": len(records)})
    except (ValueError, AssertionError) as err:
        raise ValueError(f"{spec.source}: ds_kwargs.split {split!r} is not a split slice like 'train[:1000]' "
                         f"({err})") from None
    return [r for part in parts for r in records[part.from_:part.to]]


# ------------------------------------------------------------------ rows: the template's view of a data row
def sni_fields(row: Mapping[str, Any], where: str) -> dict[str, str]:
    """T2L's reading of a Lots-of-LoRAs row (its ``get_preprocessing_fn`` for ``lol_`` tasks).

    ``input`` is a Super-NaturalInstructions prompt ("Definition: ... Positive Example 1 - ... Now
    complete the following example - Input: ... Output:"), ``output`` the list of accepted answers.
    task_def: the definition + " Please complete the task without any explanation." (+ a line asking
    for a comma-separated list when there are several answers); problem: the input of the example to
    complete; answer: the answers joined by ", ". A row not of that shape is a ``RowError``.
    """
    text, outputs = row.get("input"), row.get("output")
    outputs = [outputs] if isinstance(outputs, str) else outputs
    marker = "Now complete the following example -"
    if not isinstance(text, str) or "Definition: " not in text or marker not in text \
            or "Input: " not in text.split(marker, 1)[1]:
        raise RowError(f"{where}: field 'input' is not a Super-NaturalInstructions prompt (expected 'Definition: ' "
                       f"and '{marker}' followed by 'Input: ' in it)")
    if not outputs or not isinstance(outputs, (list, tuple)) or not all(isinstance(o, str) for o in outputs):
        raise RowError(f"{where}: field 'output' must be a non-empty list of answers, got {outputs!r}")
    task_def = text.split("Definition: ", 1)[1].split("\n\nPositive Example", 1)[0]
    task_def += " Please complete the task without any explanation."
    if len(outputs) > 1:
        task_def += "\nThe answer should be a comma-separated list of possible completions."
    problem = text.split(marker, 1)[1].split("Input: ", 1)[1].split("\nOutput:", 1)[0]
    return {"task_def": task_def, "problem": problem, "answer": ", ".join(outputs)}


def _uses_sni(spec: TaskSpec, columns: Sequence[str], data_source: str) -> bool:
    """Whether the rows are read through ``sni_fields``: the template needs task_def / problem / answer and
    the data has Lots-of-LoRAs' ``input`` / ``output`` instead. Otherwise the columns must hold every field."""
    needed = {*template_fields(spec.user_prompt_template, spec.source), spec.response_field}
    missing = needed - set(columns)
    if missing and missing <= set(SNI_FIELDS) and {"input", "output"} <= set(columns):
        return True
    spec.check_columns(columns, data_source)
    return False


def _prompt_response(spec: TaskSpec, sni: bool, row, where: str) -> tuple[str, str]:
    if isinstance(row, RowError):
        raise row
    if sni:
        row = {**row, **sni_fields(row, where)}
    return spec.prompt(row, where=where), spec.response(row, where=where)


def _bad_row(err: RowError, task: str, skip_bad_rows: bool) -> None:
    """A row that cannot be used: an error, or (``skip_bad_rows``) a logged skip."""
    if not skip_bad_rows:
        raise ValueError(f"{err} (task {task!r}; pass skip_bad_rows=True to skip and count such rows)") from None
    logger.warning("task %s: skipped %s", task, err)


def _task_rows(task: str, spec: TaskSpec, sni: bool, paths: list[str], records, skip_bad_rows: bool,
               skipped: Counter) -> tuple[list[str], list[str]]:
    """(prompts, responses) of one task's local records; a bad row is a ValueError, or counted in ``skipped``."""
    prompts, responses, n_skipped = [], [], 0
    for file, where, row in records:
        try:
            prompt, response = _prompt_response(spec, sni, row, where)
        except RowError as err:
            _bad_row(err, task, skip_bad_rows)
            skipped[file] += 1
            n_skipped += 1
            continue
        prompts.append(prompt)
        responses.append(response)
    if not prompts:
        raise ValueError(f"data_files[{task!r}]: no usable rows in {paths} ({n_skipped} skipped)")
    return prompts, responses


def _local_rows(task: str, spec: TaskSpec, files, task_dir: Path, split: str | None, skip_bad_rows: bool,
                skipped: Counter, decode: dict[str, int]):
    """The (prompt, response) Dataset of a task's local files (``data_files``), read here row by row."""
    from datasets import Dataset

    paths = _resolve(task, files, task_dir)
    records, columns = read_records(paths, decode)
    if not records:
        raise ValueError(f"data_files[{task!r}]: no rows in {paths}")
    sni = _uses_sni(spec, columns, ", ".join(paths))
    prompts, responses = _task_rows(task, spec, sni, paths, _slice(records, spec, split), skip_bad_rows, skipped)
    return Dataset.from_dict({"prompt": prompts, "response": responses})


# ------------------------------------------------------------------ rows through datasets.load_dataset
def hub_offline() -> list[str]:
    """The offline switches that are on (``HF_HUB_OFFLINE=1`` ...), as huggingface_hub reads them; [] when none."""
    return [f"{k}={os.environ[k]}" for k in OFFLINE_VARIABLES
            if os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")]


def dataset_kwargs(task: str, spec: TaskSpec, datasets_dir: str | Path | None = None,
                   split: str | None = None) -> dict[str, Any]:
    """The ``load_dataset`` arguments of a task: its ``ds_kwargs``, ``split`` in place of its own when given,
    and ``<datasets_dir>/<ds_kwargs.path>`` in place of the hub id when that folder exists."""
    kwargs = dict(spec.ds_kwargs)
    if not isinstance(kwargs.get("path"), str) or not kwargs["path"].strip():
        raise ValueError(f"{spec.source}: task {task!r} has no data_files entry, so its rows come from "
                         f"datasets.load_dataset(**ds_kwargs), but ds_kwargs has no 'path' (a hub dataset id or a "
                         f"local folder); got ds_kwargs {dict(spec.ds_kwargs)}")
    kwargs["split"] = split or kwargs.get("split") or "train"
    if datasets_dir is not None and (Path(datasets_dir) / kwargs["path"]).is_dir():
        kwargs["path"] = str(Path(datasets_dir) / kwargs["path"])
    return kwargs


def _unreachable(task: str, kwargs: Mapping[str, Any], datasets_dir, err: Exception) -> ValueError:
    """One line: the task's rows are on the hub, why they cannot be had, and how to pass local copies."""
    path = kwargs["path"]
    switches = hub_offline()
    why = (f"the hub is switched off ({', '.join(switches)})" if switches
           else f"the hub cannot be reached (no network? {type(err).__name__}: {err})")
    looked = f" (and {Path(datasets_dir) / path} does not exist)" if datasets_dir is not None else ""
    return ValueError(
        f"task {task!r}: its rows are on the Hugging Face hub, dataset {path!r} (split {kwargs['split']!r}), not in "
        f"the datasets cache, and {why}{looked}; pass local copies instead: datasets_dir=DIR with DIR/{path} laid out "
        f"like the hub dataset (`hf download --repo-type dataset {path} --local-dir DIR/{path}` where the hub is "
        f"reachable), or data_files={{{task!r}: FILE}} (json / jsonl / csv / parquet); in a run config "
        "data.datasets_dir=DIR or data.data_files")


def _not_loadable(task: str, kwargs: Mapping[str, Any], datasets_dir, err: Exception) -> ValueError:
    if isinstance(err, ConnectionError):  # offline, or no network: datasets says "Couldn't reach ..."
        return _unreachable(task, kwargs, datasets_dir, err)
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return ValueError(f"task {task!r}: datasets.load_dataset({call}) failed: {type(err).__name__}: {err}")


def _local_cache_dir(folder: Path) -> str:
    """A datasets cache of its own for a local dataset folder, named by the folder and its files (names, sizes,
    times). ``datasets`` names its cache of a folder whose README.md declares the configs (the hub layout) by
    the folder's name and that README only: two copies, or a copy whose files changed, would share one
    stale cache."""
    import hashlib

    from datasets import config

    digest = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts):
        stat = f.stat()
        digest.update(f"{f.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return str(Path(config.HF_DATASETS_CACHE) / "zhyper-local" / digest.hexdigest()[:16])


def _open_dataset(task: str, kwargs: Mapping[str, Any], datasets_dir):
    """``datasets.load_dataset(**kwargs)``: a hub id or a local folder, the same call (a local folder with a
    cache of its own, ``_local_cache_dir``, unless ds_kwargs names one)."""
    from datasets import Dataset, load_dataset

    call = dict(kwargs)
    if Path(call["path"]).is_dir() and "cache_dir" not in call:
        call["cache_dir"] = _local_cache_dir(Path(call["path"]))
    try:
        ds = load_dataset(**call)
    except (ConnectionError, FileNotFoundError, ValueError) as err:  # unreachable, no such dataset, unknown split
        raise _not_loadable(task, kwargs, datasets_dir, err) from None
    if not isinstance(ds, Dataset):
        raise ValueError(f"task {task!r}: datasets.load_dataset(**ds_kwargs) gave a {type(ds).__name__}; expected "
                         f"one split as a Dataset (ds_kwargs {dict(kwargs)}: no streaming)")
    return ds


@dataclass(frozen=True)
class _Formatter:
    """``Dataset.map`` function (batched, with indices): the (prompt, response) of each usable row."""

    task: str
    spec: TaskSpec
    sni: bool
    label: str
    skip_bad_rows: bool

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"prompt": [], "response": []}
        for j, i in enumerate(indices):
            where = f"{self.label} row {i + 1}"
            try:
                prompt, response = _prompt_response(self.spec, self.sni, {k: v[j] for k, v in batch.items()}, where)
            except RowError as err:
                _bad_row(err, self.task, self.skip_bad_rows)
                continue
            out["prompt"].append(prompt)
            out["response"].append(response)
        return out


def _dataset_rows(task: str, spec: TaskSpec, kwargs: Mapping[str, Any], datasets_dir, skip_bad_rows: bool,
                  skipped: Counter):
    """The (prompt, response) Dataset of a task's ``load_dataset`` rows (cached by ``datasets`` beside them)."""
    ds = _open_dataset(task, kwargs, datasets_dir)
    label = f"{kwargs['path']} [{kwargs['split']}]"
    if len(ds) == 0:
        raise ValueError(f"task {task!r}: no rows in {label}")
    sni = _uses_sni(spec, ds.column_names, label)
    out = ds.map(_Formatter(task, spec, sni, label, skip_bad_rows), batched=True, with_indices=True,
                 remove_columns=ds.column_names, desc=f"task {task}")
    if len(out) < len(ds):
        skipped[label] = len(ds) - len(out)
    if len(out) == 0:
        raise ValueError(f"task {task!r}: no usable rows in {label} ({len(ds)} skipped)")
    return out


# ------------------------------------------------------------------ which tasks: data_files, or the split file
@dataclass(frozen=True)
class TaskSplit:
    """The paper's split (T2L's ``hyper_lora_decontam_lol_tasks.yaml``): which tasks train, validate, stay unseen.

    train: ``train_ds_names``. validation: the ``eval_ds_info`` tasks that also train (their rows are cut
    90 / 10). unseen: the ``eval_ds_info`` tasks named ``lol_*`` that do not train (T2L's rule).
    benchmarks: the other ``eval_ds_info`` tasks (not loaded here). eval_descriptions: each
    ``eval_ds_info`` task's own descriptions (none of them in a metadata file).
    """

    source: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    unseen: tuple[str, ...]
    benchmarks: tuple[str, ...]
    eval_descriptions: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_file(cls, path: str | Path) -> "TaskSplit":
        raw = read_yaml(Path(path))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping with train_ds_names and eval_ds_info, got "
                             f"{type(raw).__name__}")
        train, info = raw.get("train_ds_names"), raw.get("eval_ds_info") or {}
        if not isinstance(train, list) or not train or not all(isinstance(t, str) and t.strip() for t in train):
            raise ValueError(f"{path}: train_ds_names: expected a non-empty list of task names, got {str(train)[:80]}")
        twice = sorted(t for t, n in Counter(train).items() if n > 1)
        if twice:
            raise ValueError(f"{path}: train_ds_names: tasks {twice} are listed more than once")
        if not isinstance(info, dict):
            raise ValueError(f"{path}: eval_ds_info: expected a mapping {{task: {{descriptions: [...]}}}}, got "
                             f"{type(info).__name__}")
        texts = {}
        for name, entry in info.items():
            given = entry.get("descriptions") if isinstance(entry, dict) else None
            try:
                texts[name] = tuple(d.strip() for d in check_descriptions(
                    given or [], f"{path}: eval_ds_info.{name}.descriptions"))
            except TypeError as err:
                raise ValueError(str(err)) from None
        seen = set(train)
        return cls(str(path), tuple(train), tuple(n for n in info if n in seen),
                   tuple(n for n in info if n not in seen and str(n).startswith("lol_")),
                   tuple(n for n in info if n not in seen and not str(n).startswith("lol_")),
                   {n: d for n, d in texts.items() if d})


@dataclass
class _Selection:
    tasks: list[str]
    unseen: list[str]
    validation: list[str] | None  # None: every seen task is cut into train / validation
    paraphrases: dict[str, list[str]]
    unseen_split: str | None  # read for unseen tasks in place of their ds_kwargs.split
    source: str  # where the task names came from, for messages


def _find(split_file: str | Path, root: Path) -> Path:
    given = Path(split_file)
    candidates = [given] if given.is_absolute() else [given, root / given]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ValueError(f"split_file: {str(split_file)!r} not found (looked in {[str(p) for p in candidates]}); "
                         "expected T2L's hyper_lora_decontam_lol_tasks.yaml or a YAML of the same keys")
    return found


def _from_split_file(root: Path, data_files: Mapping, unseen: Sequence[str], split_file) -> _Selection:
    if unseen:
        raise ValueError(f"unseen: the split file {split_file} names the unseen tasks; got unseen={list(unseen)} too")
    split = TaskSplit.from_file(_find(split_file, root))
    tasks = [*split.train, *split.unseen]
    extra = sorted(set(data_files) - set(tasks))
    if extra:
        raise ValueError(f"data_files: tasks {extra} are neither training nor unseen tasks of {split.source}")
    return _Selection(tasks, list(split.unseen), list(split.validation),
                      {t: list(d) for t, d in split.eval_descriptions.items() if t in tasks}, UNSEEN_SPLIT,
                      split.source)


def _select(root: Path, data_files: Mapping, unseen: Sequence[str], split_file, contexts) -> _Selection:
    """The tasks to load and their roles, from ``split_file`` or from ``data_files`` (+ ``unseen``)."""
    if not root.is_dir():
        raise ValueError(f"root: task folder {str(root)!r} does not exist")
    if split_file is not None:
        sel = _from_split_file(root, data_files, unseen, split_file)
    elif not data_files:
        raise ValueError("data_files: expected at least one {task: file} entry, got none (or name the tasks with "
                         "split_file=, T2L's hyper_lora_decontam_lol_tasks.yaml)")
    else:
        missing = sorted(set(unseen) - set(data_files))
        if missing:
            raise ValueError(f"unseen: tasks {missing} have no entry in data_files ({sorted(data_files)})")
        sel = _Selection(list(data_files), list(unseen), None, {}, None, "data_files")
    if contexts:
        unknown = sorted(set(contexts) - set(sel.tasks))
        keep = [t for t in sel.tasks if t in set(contexts)]
        if unknown or not set(keep) - set(sel.unseen):
            raise ValueError(f"contexts: expected names of tasks of {sel.source}, at least one of them seen; got "
                             f"{list(contexts)} (unknown: {unknown[:10]})")
        sel.tasks, sel.unseen = keep, [t for t in sel.unseen if t in keep]
        sel.paraphrases = {t: p for t, p in sel.paraphrases.items() if t in keep}
    _check_metadata(root, sel.tasks, sel.source)
    return sel


def _check_metadata(root: Path, tasks: Sequence[str], source: str) -> None:
    """Every task has its ``<root>/<task>/metadata.yaml``."""
    missing = [t for t in tasks if not (root / t / "metadata.yaml").is_file()]
    if missing:
        available = sorted(p.parent.name for p in root.glob("*/metadata.yaml"))
        raise ValueError(f"{source}: task {missing[0]!r} has no {root / missing[0] / 'metadata.yaml'}"
                         f"{f' (nor have {len(missing) - 1} more)' if len(missing) > 1 else ''}; tasks under {root}: "
                         f"{available[:20]}{' ...' if len(available) > 20 else ''}")


def check_reachable(root: str | Path, data_files: Mapping | None = None, unseen: Sequence[str] = (), *,
                    split_file: str | Path | None = None, datasets_dir: str | Path | None = None,
                    contexts: Sequence[str] | None = None) -> None:
    """What ``load_tasks`` with these arguments would refuse before reading any row, cheaply.

    The task selection (the split file, ``data_files``, ``contexts``) is checked. Offline
    (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``), the first task whose rows would come from a hub id
    (no ``data_files`` entry, no copy under ``datasets_dir``) is looked up with
    ``datasets.load_dataset_builder``: in the datasets cache it passes (a cluster node that downloaded
    before), otherwise this is the one-line ``ValueError`` naming the dataset. Online nothing is fetched.
    """
    root, data_files = Path(root), dict(data_files or {})
    sel = _select(root, data_files, unseen, split_file, contexts)
    if not hub_offline():
        return
    for task in sel.tasks:
        if task in data_files:
            continue
        kwargs = dataset_kwargs(task, TaskSpec.from_file(root / task / "metadata.yaml"), datasets_dir,
                                sel.unseen_split if task in sel.unseen else None)
        if Path(kwargs["path"]).exists():
            continue
        from datasets import load_dataset_builder

        try:
            load_dataset_builder(**{k: v for k, v in kwargs.items() if k != "split"})
        except (ConnectionError, FileNotFoundError, ValueError) as err:
            raise _not_loadable(task, kwargs, datasets_dir, err) from None
        return


# ------------------------------------------------------------------ the loader
def _labelled(task: str, spec: TaskSpec, rows, is_unseen: bool, train_fraction: float,
              max_unseen_examples: int | None):
    """A task's (prompt, response) rows with its context, split and system columns (unseen rows capped)."""
    splits = split_labels(len(rows), is_unseen, train_fraction, max_unseen_examples)
    if len(splits) < len(rows):
        rows = rows.select(range(len(splits)))
    n = len(splits)
    return (rows.add_column("context", [task] * n).add_column("split", splits)
            .add_column("system", [spec.system_message] * n))


def load_tasks(root: str | Path, data_files: Mapping[str, str | Path | Sequence[str | Path]] | None = None,
               unseen: Sequence[str] = (), heldout_fraction: float = 0.1, train_fraction: float = 0.9,
               max_unseen_examples: int | None = None, seed: int = 0, skip_bad_rows: bool = False, *,
               split_file: str | Path | None = None, datasets_dir: str | Path | None = None,
               contexts: Sequence[str] | None = None) -> TaskData:
    """Load tasks whose ``metadata.yaml`` folders are under ``root`` (read in place).

    data_files: {task folder name: local file or files}; without ``split_file`` these are the tasks.
    unseen: tasks held out entirely (split "unseen"; all descriptions held out).
    split_file: the paper's split (``TaskSplit``; relative: from the working directory, then ``root``):
        its training and unseen tasks are loaded, each through ``datasets.load_dataset(**ds_kwargs)``
        unless ``data_files`` names local files for it.
    datasets_dir: local copies of the hub datasets, ``DIR/<ds_kwargs.path>``, read by the same call.
    contexts: load these tasks only (at least one seen).
    skip_bad_rows: skip (and count in ``skipped``) rows that are not JSON, have the wrong number of
        CSV fields, or miss a required field or have it null; by default such a row is a ValueError
        naming its file and line (dataset rows: ``<dataset> [<split>] row N``).
    Returns TaskData (a ContextData) whose contexts are the task folder names; extra columns: none.
    """
    from datasets import concatenate_datasets

    root, data_files = Path(root), dict(data_files or {})
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction: expected a value in (0, 1], got {train_fraction}")
    sel = _select(root, data_files, unseen, split_file, contexts)
    parts, descriptions, heldout = [], {}, {}
    skipped: Counter = Counter()
    decode: dict[str, int] = {}
    for task in sel.tasks:
        spec, is_unseen = TaskSpec.from_file(root / task / "metadata.yaml"), task in sel.unseen
        split = sel.unseen_split if is_unseen else None
        if task in data_files:
            rows = _local_rows(task, spec, data_files[task], root / task, split or spec.ds_kwargs.get("split"),
                               skip_bad_rows, skipped, decode)
        else:
            rows = _dataset_rows(task, spec, dataset_kwargs(task, spec, datasets_dir, split), datasets_dir,
                                 skip_bad_rows, skipped)
        cut = sel.validation is None or task in sel.validation
        parts.append(_labelled(task, spec, rows, is_unseen, train_fraction if cut else 1.0, max_unseen_examples))
        if is_unseen:
            heldout[task] = list(spec.descriptions)
        else:
            descriptions[task], heldout[task] = split_descriptions(spec.descriptions, heldout_fraction, seed, task,
                                                                   source=str(root / task / "metadata.yaml"))
        logger.info("task %s: %d rows (%s)", task, len(parts[-1]), "unseen" if is_unseen else "seen")
    seen = [t for t in sel.tasks if t not in sel.unseen]
    return TaskData(concatenate_datasets(parts), descriptions, heldout, seen, [t for t in sel.tasks if t in sel.unseen],
                    paraphrases=sel.paraphrases, skipped=dict(skipped), decode_errors=decode)
