"""Answers kept as they arrive, so a long evaluation resumes where it stopped.

A benchmark run over hundreds of prompts takes an hour on a CPU. ``AnswerJournal`` appends each
batch's answers to a JSONL file as soon as they are generated, every line tagged with the run's
fingerprint (a hash of what determines the answer: the checkpoint's files, the base, the condition,
the generation length). Run the same command again after a crash or an interrupt and the answers
already given are read back instead of generated; a longer ``--limit`` reuses the shorter run's
answers. Lines of another fingerprint (another checkpoint, another length) are never reused, and a
line torn by a crash is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def checkpoint_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the names and bytes of the files directly in ``folder`` (a checkpoint), in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"checkpoint {folder}: expected a checkpoint folder")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def fingerprint(settings: dict) -> str:
    """A short hash of JSON-able ``settings`` (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class AnswerJournal:
    """``path`` (a JSONL of ``{"key", "prompt", "response", "run"}``) read back and appended to, one run at a time."""

    def __init__(self, path: str | os.PathLike, run: str, reuse: bool = True):
        self.path, self.run, self.reuse = Path(path), run, reuse

    def load(self) -> dict[str, str]:
        """{str(key): response} of the lines written by this run's fingerprint (the last one wins; none
        when ``reuse`` is off)."""
        done: dict[str, str] = {}
        if not self.reuse or not self.path.is_file():
            return done
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: an unreadable line (cut by a crash?) is skipped", self.path, n)
                    continue
                if isinstance(entry, dict) and entry.get("run") == self.run and "response" in entry:
                    done[str(entry["key"])] = entry["response"]
        return done

    def append(self, rows: Iterable[dict], answers: Iterable[str]) -> None:
        """Add one batch's answers (flushed to disk before returning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.is_file() and self.path.stat().st_size > 0 and self._last_byte() != b"\n"
        with open(self.path, "a", encoding="utf-8") as f:
            if torn:  # a crash cut the last line: end it, so this batch starts a line of its own
                f.write("\n")
            for row, answer in zip(rows, answers):
                f.write(self.line(row, answer))
            f.flush()
            os.fsync(f.fileno())

    def _last_byte(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)

    def line(self, row: dict, answer: str) -> str:
        return json.dumps({"key": row["key"], "prompt": row["prompt"], "response": answer, "run": self.run}) + "\n"
