"""SHA-256 checksums of the weight files zhyper writes, recorded beside them and checked on load.

A checkpoint (``zhyper_config.json``) and an export (``zhyper_export.json``) record, under
``"files"``, each weight file's size and SHA-256 as written. Loading compares them before the
weights are used: a flipped byte, a truncated file or a weight file copied in from another
checkpoint is refused with an error naming the file. Folders written before checksums were
recorded have no ``"files"`` and load unchecked.

Opting out, for weights edited on purpose: ``verify=False`` (``ZhyperModel.from_pretrained``,
``LoRABaseline.from_pretrained``, ``verify_export``), or the environment variable
``ZHYPER_VERIFY_CHECKSUMS=0`` for the command line and the server.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "ZHYPER_VERIFY_CHECKSUMS"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_records(folder: str | os.PathLike, names) -> dict[str, dict]:
    """{name: {"bytes", "sha256"}} of the files ``names`` in ``folder`` (those that exist), in name order."""
    folder = Path(folder)
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in sorted(names) if (folder / name).is_file()}


def enabled(verify: bool | None) -> bool:
    """``verify`` when given, else the environment's ``ZHYPER_VERIFY_CHECKSUMS`` (on unless 0/false/no/off)."""
    if verify is not None:
        return bool(verify)
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def check_record(files, record_path: Path) -> None:
    """The ``"files"`` field's shape: {file name: {"bytes": int, "sha256": 64 hex digits}}; an error names the field."""
    if not isinstance(files, dict):
        raise ValueError(f"{record_path}: field 'files': expected a mapping of file name -> "
                         f"{{bytes, sha256}}, got {type(files).__name__}")
    for name, want in files.items():
        ok = (isinstance(want, dict) and isinstance(want.get("bytes"), int) and isinstance(want.get("sha256"), str)
              and len(want["sha256"]) == 64 and "/" not in name and name not in ("", ".", ".."))
        if not ok:
            raise ValueError(f"{record_path}: field 'files.{name}': expected a file name in the folder with "
                             f"{{\"bytes\": int, \"sha256\": 64 hex digits}}, got {str(want)[:120]}")


def verify_files(folder: str | os.PathLike, files: dict, record_path: Path, verify: bool | None = None) -> None:
    """Each recorded file of ``folder`` has its recorded size and SHA-256; else a ValueError naming the file."""
    if not enabled(verify) or not files:
        return
    check_record(files, record_path)
    folder = Path(folder)
    how = (f"save it again, or, if you edited the weights on purpose, load with verify=False ({ENV_VAR}=0 on the "
           "command line)")
    for name, want in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path} is missing: {record_path} records it (the folder is incomplete); {how}")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise ValueError(f"{path} has {size} bytes, but {record_path} records {want['bytes']}: the file was "
                             f"truncated, changed or replaced after it was saved; {how}")
        got = sha256_file(path)
        if got != want["sha256"]:
            raise ValueError(f"{path}: its SHA-256 {got[:16]}... differs from the {want['sha256'][:16]}... that "
                             f"{record_path} records: the file was changed, or swapped in from another checkpoint, "
                             f"after it was saved; {how}")
