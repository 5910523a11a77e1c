"""Task-description loader for the T2L / Zhyper ``tasks/<name>/metadata.yaml`` format.

The hub datasets named in ``ds_kwargs`` are not downloaded: the user names local files per task
(json / jsonl / csv / parquet). ``ds_kwargs['split']``'s slice (``train[:10000]``) is applied to
them. Each row becomes (system = system_message, prompt = user_prompt_template.format(**row),
response = assistant_prefill + row[response_field] + assistant_postfill).

Splits: a seen task's rows [0, 90%) are "train" and the rest "validation" (positional, as the
reference's ``train[:90%]``); an unseen task's first ``max_unseen_examples`` rows are "unseen".
Descriptions: seen tasks keep ``1 - heldout_fraction`` for training (seeded per task), unseen
tasks have all of theirs held out.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

from .base import ContextData, positional_split, split_descriptions
from .metadata import TaskSpec

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


def load_tasks(root: str | Path, data_files: Mapping[str, str | Path | Sequence[str | Path]],
               unseen: Sequence[str] = (), heldout_fraction: float = 0.1, train_fraction: float = 0.9,
               max_unseen_examples: int | None = None, seed: int = 0) -> ContextData:
    """Load the tasks named in ``data_files`` ({task folder name: file or files}) from ``root``.

    unseen: tasks held out entirely (split "unseen"; all descriptions held out).
    Returns ContextData whose contexts are the task folder names; extra columns: none.
    """
    from datasets import Dataset, concatenate_datasets, load_dataset

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root: task folder {str(root)!r} does not exist")
    if not data_files:
        raise ValueError("data_files: expected at least one {task: file} entry, got none")
    unknown_unseen = sorted(set(unseen) - set(data_files))
    if unknown_unseen:
        raise ValueError(f"unseen: tasks {unknown_unseen} have no entry in data_files ({sorted(data_files)})")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction: expected a value in (0, 1], got {train_fraction}")
    parts, descriptions, heldout = [], {}, {}
    for task, files in data_files.items():
        meta_path = root / task / "metadata.yaml"
        if not meta_path.is_file():
            available = sorted(p.parent.name for p in root.glob("*/metadata.yaml"))
            raise ValueError(f"data_files: task {task!r} has no {meta_path}; tasks under {root}: {available[:20]}")
        spec = TaskSpec.from_file(meta_path)
        paths = _resolve(task, files, root / task)
        data = load_dataset(BUILDERS[Path(paths[0]).suffix.lower()], data_files=paths,
                            split=_local_split(spec.ds_kwargs))
        spec.check_columns(data.column_names, ", ".join(paths))
        rows = data.to_list()
        is_unseen = task in unseen
        if is_unseen:
            rows = rows[:max_unseen_examples] if max_unseen_examples is not None else rows
            splits = ["unseen"] * len(rows)
            heldout[task] = list(spec.descriptions)
        else:
            cut = positional_split(len(rows), train_fraction)
            splits = ["train"] * cut + ["validation"] * (len(rows) - cut)
            descriptions[task], heldout[task] = split_descriptions(spec.descriptions, heldout_fraction, seed, task,
                                                                   source=str(meta_path))
        if not rows:
            raise ValueError(f"data_files[{task!r}]: no rows in {paths}")
        parts.append(Dataset.from_dict({
            "context": [task] * len(rows),
            "prompt": [spec.prompt(r, i) for i, r in enumerate(rows)],
            "response": [spec.response(r) for r in rows],
            "split": splits,
            "system": [spec.system_message] * len(rows),
        }))
        logger.info("task %s: %d rows (%s)", task, len(rows), "unseen" if is_unseen else "seen")
    seen = [t for t in data_files if t not in unseen]
    return ContextData(concatenate_datasets(parts), descriptions, heldout, seen, [t for t in data_files if t in unseen])
