"""Answers kept as they arrive, so a long evaluation resumes where it stopped.

A benchmark run over hundreds of prompts takes an hour on a CPU. ``AnswerJournal`` appends each
batch's answers to a JSONL file as soon as they are generated, every line tagged with the run's
fingerprint (a hash of what determines the answer: the checkpoint's files, the base, the condition,
the generation length) and the row's own fingerprint (its key, prompt text, instruction ids and
their arguments). Run the same command again after a crash or an interrupt and the answers already
given are read back instead of generated; a longer ``--limit`` reuses the shorter run's answers. An
answer is reused only by the same run for the same row: another checkpoint's or another length's
lines, and the answer to a prompt whose text or arguments changed since, are never reused; a line
torn by a crash is skipped.

Nothing is deleted that was not superseded: ``compact`` (the end of a run) rewrites the file with
this run's answers in row order after every other line it holds (other runs' answers, this run's
answers to rows beyond a shorter ``--limit``), dropping only older lines of the same run and row.
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


def row_fingerprint(row: dict) -> str:
    """A short hash of what an answer answers: the row's key, prompt text, instruction ids and arguments."""
    return fingerprint({"key": row["key"], "prompt": row["prompt"],
                        "instruction_id_list": row.get("instruction_id_list"), "kwargs": row.get("kwargs")})


def _identity(entry: dict) -> tuple:
    """(run, key, row fingerprint) of a journal line; lines from before row fingerprints never match a new one."""
    row = entry.get("row") or ("prompt", entry.get("prompt"))
    return entry.get("run"), str(entry.get("key")), row


class AnswerJournal:
    """``path`` (a JSONL of ``{"key", "prompt", "row", "response", "run"}``) read back and appended to, one run at a
    time; appends and ``compact`` take the file's lock (``.<name>.lock`` beside it)."""

    def __init__(self, path: str | os.PathLike, run: str, reuse: bool = True):
        self.path, self.run, self.reuse = Path(path), run, reuse

    def _entries(self) -> list[dict | str]:
        """The file's lines in order: parsed JSON objects, or the raw text of a readable line that is not one;
        a line cut by a crash is skipped (with a warning)."""
        out: list[dict | str] = []
        if not self.path.is_file():
            return out
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if line.strip():
                        log.warning("%s:%d: an unreadable line (cut by a crash?) is skipped", self.path, n)
                    continue
                out.append(entry if isinstance(entry, dict) else line)
        return out

    def load(self) -> dict[tuple[str, str], str]:
        """{(str(key), row fingerprint): response} of the lines written by this run's fingerprint (the last one
        wins; none when ``reuse`` is off)."""
        if not self.reuse:
            return {}
        return {(str(e["key"]), e["row"]): e["response"] for e in self._entries()
                if isinstance(e, dict) and e.get("run") == self.run and "response" in e and "row" in e}

    def lookup(self, rows: Iterable[dict]) -> list[str | None]:
        """This run's saved answer to each of ``rows`` (None where it has none for that key, prompt and arguments)."""
        done = self.load()
        return [done.get((str(r["key"]), row_fingerprint(r))) for r in rows]

    def _lock(self):
        from zhyper.io import file_lock

        return file_lock(self.path.with_name(f".{self.path.name}.lock"), timeout=60, what=f"the answers {self.path}")

    def append(self, rows: Iterable[dict], answers: Iterable[str]) -> None:
        """Add one batch's answers (flushed to disk before returning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            torn = self.path.is_file() and self.path.stat().st_size > 0 and self._last_byte() != b"\n"
            with open(self.path, "a", encoding="utf-8") as f:
                if torn:  # a crash cut the last line: end it, so this batch starts a line of its own
                    f.write("\n")
                for row, answer in zip(rows, answers):
                    f.write(self.line(row, answer))
                f.flush()
                os.fsync(f.fileno())

    def compact(self, rows: list[dict], answers: list[str]) -> None:
        """Rewrite the file (temporary file, then one rename): every line it holds that these answers do not
        supersede, in order (the last of equal lines), then this run's ``answers`` to ``rows`` in row order."""
        from zhyper.io import atomic_write

        new = [self.line(row, answer) for row, answer in zip(rows, answers)]
        mine = {_identity(json.loads(line)) for line in new}
        with self._lock():
            kept: dict = {}
            for n, entry in enumerate(self._entries()):
                if isinstance(entry, str):
                    kept[("raw", n)] = entry if entry.endswith("\n") else entry + "\n"
                elif _identity(entry) not in mine:
                    kept.pop(_identity(entry), None)  # an older line of the same run and row: superseded
                    kept[_identity(entry)] = json.dumps(entry) + "\n"
            atomic_write(self.path, "".join([*kept.values(), *new]))

    def _last_byte(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)

    def line(self, row: dict, answer: str) -> str:
        return json.dumps({"key": row["key"], "prompt": row["prompt"], "row": row_fingerprint(row),
                           "response": answer, "run": self.run}) + "\n"
