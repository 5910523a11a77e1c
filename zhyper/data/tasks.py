"""Task-description loader for the T2L / Zhyper ``tasks/<name>/metadata.yaml`` format.

The hub datasets named in ``ds_kwargs`` are not downloaded: the user names local files per task
(json / jsonl / csv / parquet). ``ds_kwargs['split']``'s slice (``train[:10000]``) is applied to
them. Each row becomes (system = system_message, prompt = user_prompt_template.format(**row),
response = assistant_prefill + row[response_field] + assistant_postfill).

Splits: a seen task's rows [0, 90%) are "train" and the rest "validation" (positional, as the
reference's ``train[:90%]``); an unseen task's first ``max_unseen_examples`` rows are "unseen".
Descriptions: seen tasks keep ``1 - heldout_fraction`` for training (seeded per task), unseen
tasks have all of theirs held out.

Files are read here, not by ``datasets``, so that every problem names its file and line: a line
that is not JSON, a CSV row with the wrong number of fields, a row whose template field or
response field is missing or null (an empty CSV cell is null) is a ``ValueError`` naming
``file line N`` (parquet: ``row N``). With ``skip_bad_rows=True`` such rows are skipped instead,
counted per file in ``TaskData.skipped`` and logged. A task left without rows is an error. Bytes
that are not valid UTF-8 are replaced, counted in ``TaskData.decode_errors`` and logged.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import ContextData, split_descriptions, split_labels
from .metadata import DecodeCount, RowError, TaskSpec, csv_rows, utf8_lines

logger = logging.getLogger(__name__)

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


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


def _local_split(ds_kwargs: Mapping) -> str:
    """The slice of ``ds_kwargs['split']`` applied to the local files' only split: 'test[:50]' -> 'train[:50]'."""
    split = str(ds_kwargs.get("split") or "train")
    return re.sub(r"^[A-Za-z_]\w*", "train", split)


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


def _slice(records: list, spec: TaskSpec) -> list:
    """Apply ``ds_kwargs.split``'s slice ('train[:10000]', 'train[90%:]') to the local rows."""
    from datasets import ReadInstruction

    split = _local_split(spec.ds_kwargs)
    try:
        parts = ReadInstruction.from_spec(split).to_absolute({"train": len(records)})
    except (ValueError, AssertionError) as err:
        raise ValueError(f"{spec.source}: ds_kwargs.split {spec.ds_kwargs.get('split')!r} is not a split slice "
                         f"like 'train[:1000]' ({err})") from None
    return [r for part in parts for r in records[part.from_:part.to]]


def _check_arguments(root: Path, data_files, unseen, train_fraction: float) -> None:
    if not root.is_dir():
        raise ValueError(f"root: task folder {str(root)!r} does not exist")
    if not data_files:
        raise ValueError("data_files: expected at least one {task: file} entry, got none")
    unknown_unseen = sorted(set(unseen) - set(data_files))
    if unknown_unseen:
        raise ValueError(f"unseen: tasks {unknown_unseen} have no entry in data_files ({sorted(data_files)})")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction: expected a value in (0, 1], got {train_fraction}")


def _task_spec(root: Path, task: str) -> TaskSpec:
    meta_path = root / task / "metadata.yaml"
    if not meta_path.is_file():
        available = sorted(p.parent.name for p in root.glob("*/metadata.yaml"))
        raise ValueError(f"data_files: task {task!r} has no {meta_path}; tasks under {root}: {available[:20]}")
    return TaskSpec.from_file(meta_path)


def _task_rows(task: str, spec: TaskSpec, paths: list[str], records, skip_bad_rows: bool,
               skipped: Counter) -> tuple[list[str], list[str]]:
    """(prompts, responses) of one task's records; a bad row is a ValueError, or counted in ``skipped``."""
    prompts, responses, n_skipped = [], [], 0
    for file, where, row in _slice(records, spec):
        try:
            if isinstance(row, RowError):
                raise row
            prompt, response = spec.prompt(row, where=where), spec.response(row, where=where)
        except RowError as err:
            if not skip_bad_rows:
                raise ValueError(f"{err} (task {task!r}; pass skip_bad_rows=True to skip and count such "
                                 "rows)") from None
            skipped[file] += 1
            n_skipped += 1
            logger.warning("task %s: skipped %s", task, err)
            continue
        prompts.append(prompt)
        responses.append(response)
    if not prompts:
        raise ValueError(f"data_files[{task!r}]: no usable rows in {paths} ({n_skipped} skipped)")
    return prompts, responses


def load_tasks(root: str | Path, data_files: Mapping[str, str | Path | Sequence[str | Path]],
               unseen: Sequence[str] = (), heldout_fraction: float = 0.1, train_fraction: float = 0.9,
               max_unseen_examples: int | None = None, seed: int = 0, skip_bad_rows: bool = False) -> TaskData:
    """Load the tasks named in ``data_files`` ({task folder name: file or files}) from ``root``.

    unseen: tasks held out entirely (split "unseen"; all descriptions held out).
    skip_bad_rows: skip (and count in ``skipped``) rows that are not JSON, have the wrong number of
        CSV fields, or miss a required field or have it null; by default such a row is a ValueError
        naming its file and line.
    Returns TaskData (a ContextData) whose contexts are the task folder names; extra columns: none.
    """
    from datasets import Dataset, concatenate_datasets

    root = Path(root)
    _check_arguments(root, data_files, unseen, train_fraction)
    parts, descriptions, heldout = [], {}, {}
    skipped: Counter = Counter()
    decode: dict[str, int] = {}
    for task, files in data_files.items():
        spec = _task_spec(root, task)
        paths = _resolve(task, files, root / task)
        records, columns = read_records(paths, decode)
        if not records:
            raise ValueError(f"data_files[{task!r}]: no rows in {paths}")
        spec.check_columns(columns, ", ".join(paths))
        prompts, responses = _task_rows(task, spec, paths, records, skip_bad_rows, skipped)
        is_unseen = task in unseen
        splits = split_labels(len(prompts), is_unseen, train_fraction, max_unseen_examples)
        prompts, responses = prompts[:len(splits)], responses[:len(splits)]
        if is_unseen:
            heldout[task] = list(spec.descriptions)
        else:
            descriptions[task], heldout[task] = split_descriptions(spec.descriptions, heldout_fraction, seed, task,
                                                                   source=str(root / task / "metadata.yaml"))
        parts.append(Dataset.from_dict({
            "context": [task] * len(prompts),
            "prompt": prompts,
            "response": responses,
            "split": splits,
            "system": [spec.system_message] * len(prompts),
        }))
        logger.info("task %s: %d rows (%s)", task, len(prompts), "unseen" if is_unseen else "seen")
    seen = [t for t in data_files if t not in unseen]
    return TaskData(concatenate_datasets(parts), descriptions, heldout, seen, [t for t in data_files if t in unseen],
                    skipped=dict(skipped), decode_errors=decode)
