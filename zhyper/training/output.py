"""Which output folders a training run may write into, so that the user's own files are never replaced.

A run writes into a folder that does not exist yet, an empty folder, or a folder a zhyper training
run created (its own earlier run: ``--resume`` continues it, or a run that ended before its first
checkpoint). Rank 0 marks the folder as zhyper's with ``.zhyper-output.json`` when the run starts;
folders written before that marker existed are recognised by the run lock ``.zhyper-run.lock``.

Anything else is refused before anything is written, naming the files in the way and the two ways
on: a new ``output_dir=...``, or ``--overwrite`` (then files of the names a run writes, e.g.
``eval.md``, are replaced and all others kept). Inside a zhyper folder, ``final/`` and
``peft_example/`` must hold only what zhyper writes there: a file of the user's there is refused too
(a run's end would otherwise merge the new checkpoint into a folder holding other things).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MARKER = ".zhyper-output.json"
LEGACY_MARKERS = (".zhyper-run.lock",)  # runs from before MARKER: the lock file every run leaves
# what zhyper writes into the checkpoint folders of a run (zhyper checkpoint, PEFT adapter, the example)
CHECKPOINT_FILES = {"model.safetensors", "zhyper_config.json", "contexts.json", "adapter_config.json",
                    "adapter_model.safetensors", "README.md", "zhyper_export.json", "DESCRIPTION.txt"}
CHECKPOINT_FOLDERS = ("final", "peft_example")


def is_own(out_dir: Path) -> bool:
    """Whether ``out_dir`` was created by a zhyper training run."""
    return any((out_dir / name).exists() for name in (MARKER, *LEGACY_MARKERS))


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def foreign_checkpoint_files(out_dir: Path) -> list[str]:
    """Files in ``final/`` and ``peft_example/`` that zhyper does not write there (relative paths)."""
    found = []
    for folder in CHECKPOINT_FOLDERS:
        root = out_dir / folder
        if root.exists() and not root.is_dir():
            found.append(folder)
        elif root.is_dir():
            found += [str(p.relative_to(out_dir)) for p in sorted(root.rglob("*"))
                      if not (p.is_file() and p.parent == root and p.name in CHECKPOINT_FILES)]
    return found


def check_output_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse (``SystemExit`` with the files in the way and what to do) a folder this run must not write into."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise SystemExit(f"output_dir {out_dir} exists and is not a folder; choose another output_dir=...")
    names = sorted(p.name for p in out_dir.iterdir())
    if not names or overwrite:
        return
    how = ("choose a new (or empty) output_dir=..., or pass --overwrite to write into it anyway (files of the "
           "names a run writes, such as eval.md and final/, are then replaced; all others are kept)")
    if not is_own(out_dir):
        raise SystemExit(f"output_dir {out_dir} holds files a zhyper training run did not write: {_listing(names)}. "
                         f"A run writes only into an empty folder, one it created, or its own earlier run; {how}")
    foreign = foreign_checkpoint_files(out_dir)
    if foreign:
        raise SystemExit(f"output_dir {out_dir} is a zhyper run, but its checkpoint folders hold files zhyper did "
                         f"not write there: {_listing(foreign)}; the run's end would mix its checkpoint with them. "
                         f"Move them elsewhere, or {how}")


def mark_output_dir(out_dir: Path) -> None:
    """Record (once) that ``out_dir`` belongs to zhyper training runs, with the run id its checkpoints carry
    (``run_id``; a marker written before run ids existed gets one)."""
    import uuid

    from zhyper.io import atomic_write

    marker = out_dir / MARKER
    if not marker.exists():
        atomic_write(marker, json.dumps({"written_by": "zhyper launch/train.py",
                                         "created": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv,
                                         "run_id": uuid.uuid4().hex}, indent=1) + "\n")
    elif run_id(out_dir) is None:
        record = _marker(out_dir)
        if record is not None:
            atomic_write(marker, json.dumps({**record, "run_id": uuid.uuid4().hex}, indent=1) + "\n")


def _marker(out_dir: Path) -> dict | None:
    try:
        record = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_id(out_dir: Path) -> str | None:
    """The id of the run that owns ``out_dir`` (one per folder: a resumed run keeps it), or None when its
    marker records none. Every checkpoint records it, so one copied in from another run is recognised."""
    record = _marker(Path(out_dir))
    value = record.get("run_id") if record is not None else None
    return value if isinstance(value, str) and value else None
