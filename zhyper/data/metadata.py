"""Reading the T2L / Zhyper ``metadata.yaml`` of a task or culture, applying its prompt template to a
data row, and reading data files as UTF-8 text with the invalid bytes counted.

Rows: a template field or the response field that is missing from a row or null (``None``; an
empty CSV cell) is a ``RowError`` naming the file and line, never the text "None".

Text: data files are decoded as UTF-8 (a byte-order mark is dropped). Bytes that are not valid
UTF-8 (a Latin-1 file, a damaged line) are replaced by U+FFFD, counted per file (``DecodeCount``)
and reported with a warning naming the file, the count and the first line: lenient, because
real scraped data (AskX) has a few such bytes, and visible, because the count is also returned
on the loaders' data (``decode_errors``).
"""

from __future__ import annotations

import logging
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .base import check_descriptions

logger = logging.getLogger(__name__)

KNOWN_KEYS = ("descriptions", "user_prompt_template", "response_field", "assistant_prefill", "assistant_postfill",
              "system_message", "ds_kwargs", "task_name")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file (libyaml's safe loader where built: 500 task metadata files in well under a second, not
    ten); a syntax error becomes a ValueError naming the file and the position."""
    import yaml

    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}); "
                         "save the file as UTF-8") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: malformed YAML: {err}") from err


class RowError(ValueError):
    """A data row that cannot be used: a required field missing or null, or a template that cannot be filled."""


class _NullField(Exception):
    def __init__(self, name: str, missing: bool, state: str = "null"):
        super().__init__(name)
        self.name, self.missing, self.state = name, missing, ("missing" if missing else state)


def _value_problem(value: Any) -> str | None:
    """Why a field's value cannot be written into a prompt or be an answer; None when it can.

    null; a non-finite number (JSON lines may hold a bare ``NaN``); a list or an object (it would be
    written as its Python repr); an empty or blank string.
    """
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not a finite number)"
    if isinstance(value, (list, tuple, dict)):
        return f"a {'list' if not isinstance(value, dict) else 'JSON object'}, not a single value"
    if isinstance(value, str) and not value.strip():
        return "empty"
    return None


class _RowFormatter(string.Formatter):
    """``str.format_map`` that refuses a missing or null field instead of writing "None"."""

    def get_field(self, field_name, args, kwargs):
        from _string import formatter_field_name_split

        first, rest = formatter_field_name_split(field_name)
        if first not in kwargs:
            raise _NullField(str(first), missing=True)
        obj, path = kwargs[first], str(first)
        for is_attr, key in rest:
            if obj is None:
                raise _NullField(path, missing=False)
            obj = getattr(obj, key) if is_attr else obj[key]
            path += f".{key}" if is_attr else f"[{key}]"
        problem = _value_problem(obj)
        if problem is not None:
            raise _NullField(path, missing=False, state=problem)
        return obj, first


_FORMATTER = _RowFormatter()


@dataclass(frozen=True)
class TaskSpec:
    """One metadata.yaml: how to turn a data row into (system, user prompt, response) + descriptions."""

    source: str  # the file it came from, for error messages
    descriptions: tuple[str, ...]
    user_prompt_template: str
    response_field: str
    system_message: str = ""
    assistant_prefill: str = ""
    assistant_postfill: str = ""
    ds_kwargs: Mapping[str, Any] = field(default_factory=dict)
    task_name: str = ""

    @classmethod
    def from_file(cls, path: Path) -> "TaskSpec":
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of metadata keys, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(KNOWN_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known keys: {list(KNOWN_KEYS)}")
        for key in ("descriptions", "user_prompt_template", "response_field"):
            if key not in raw:
                raise ValueError(f"{path}: missing required key {key!r}")
        for key in ("user_prompt_template", "response_field", "system_message", "assistant_prefill",
                    "assistant_postfill", "task_name"):
            if key in raw and raw[key] is not None and not isinstance(raw[key], str):
                raise ValueError(f"{path}: {key!r} must be a string, got {type(raw[key]).__name__}")
        if not raw["response_field"]:
            raise ValueError(f"{path}: 'response_field' must be a non-empty string")
        template_fields(raw["user_prompt_template"], str(path))
        return cls(source=str(path), descriptions=tuple(
            d.strip() for d in check_descriptions(raw["descriptions"], f"{path}: descriptions", non_empty=True)),
                   user_prompt_template=raw["user_prompt_template"], response_field=raw["response_field"],
                   system_message=raw.get("system_message") or "", assistant_prefill=raw.get("assistant_prefill") or "",
                   assistant_postfill=raw.get("assistant_postfill") or "", ds_kwargs=dict(raw.get("ds_kwargs") or {}),
                   task_name=raw.get("task_name") or "")

    def check_columns(self, columns: Sequence[str], data_source: str) -> None:
        """Every template field and the response field must be columns of the data."""
        unknown = [f for f in template_fields(self.user_prompt_template, self.source) if f not in columns]
        if unknown:
            raise ValueError(f"{self.source}: user_prompt_template uses unknown fields {unknown}; "
                             f"columns of {data_source}: {list(columns)}")
        if self.response_field not in columns:
            raise ValueError(f"{self.source}: response_field {self.response_field!r} is not a column of {data_source}; "
                             f"columns: {list(columns)}")

    def prompt(self, row: Mapping[str, Any], index: int = -1, where: str | None = None) -> str:
        """The user message for one data row.

        A field that is missing or null (at any depth, e.g. ``{choices[text][0]}``) or a nested
        lookup that fails raises ``RowError`` naming ``where`` (e.g. "data.jsonl line 3") or the row index.
        """
        where = where or f"data row {index}"
        try:
            return _FORMATTER.vformat(self.user_prompt_template, (), row)
        except _NullField as err:
            raise RowError(f"{where}: field {err.name!r} is {err.state}, but the user_prompt_template of {self.source} "
                           "needs it") from None
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise RowError(f"{where}: the user_prompt_template of {self.source} cannot be filled from this row: "
                           f"{type(err).__name__}: {err}") from err

    def response(self, row: Mapping[str, Any], where: str | None = None) -> str:
        """prefill + row[response_field] + postfill; a missing, null, empty, non-finite or list/object
    response field raises ``RowError``."""
        value = row.get(self.response_field) if isinstance(row, Mapping) else None
        problem = _value_problem(value)
        if problem is not None:
            state = "missing" if self.response_field not in row else problem
            raise RowError(f"{where or 'data row'}: response field {self.response_field!r} is {state} "
                           f"(response_field of {self.source})")
        return f"{self.assistant_prefill}{value}{self.assistant_postfill}"


def template_fields(template: str, source: str) -> list[str]:
    """Top-level names a ``str.format`` template reads: '{choices[label][0]}' -> 'choices'."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{source}: user_prompt_template is not a valid format string: {err}") from err
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError(f"{source}: user_prompt_template has a positional field {{{name}}}; use named fields")
        if root not in names:
            names.append(root)
    return names


_BAD_BYTES = re.compile("[\udc80-\udcff]+")


@dataclass
class DecodeCount:
    """Bytes of one file that were not valid UTF-8 (each replaced by U+FFFD), and where the first was."""

    path: Path
    bad_bytes: int = 0
    bad_lines: int = 0
    first_line: int | None = None

    def clean(self, text: str, line: int) -> str:
        """``text`` decoded with surrogateescape -> every undecodable byte counted and replaced by U+FFFD."""
        n = 0

        def replace(match):
            nonlocal n
            n += len(match.group())
            return "\ufffd" * len(match.group())

        text = _BAD_BYTES.sub(replace, text)
        if n:
            self.bad_bytes += n
            self.bad_lines += 1
            self.first_line = self.first_line or line
        return text

    def warn(self) -> None:
        if self.bad_bytes:
            logger.warning("%s: %d bytes on %d lines are not valid UTF-8 (e.g. Latin-1; first at line %d); each was "
                           "replaced by U+FFFD. Re-encode the file as UTF-8 to keep those characters",
                           self.path, self.bad_bytes, self.bad_lines, self.first_line)


def utf8_lines(path: Path, count: DecodeCount) -> Iterator[str]:
    """The lines of ``path`` (line ends kept, as ``csv`` needs), invalid UTF-8 bytes counted into ``count``."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        for i, line in enumerate(fh, 1):
            yield count.clean(line, i) if _BAD_BYTES.search(line) else line


def csv_rows(path: Path, count: DecodeCount) -> tuple[list[str], Iterator[tuple[int, list[str] | str]]]:
    """(header, iterator of (line the row starts on, its fields or a sentence saying why it is malformed)).

    One reader for every CSV zhyper loads: quoted newlines kept, invalid UTF-8 counted into
    ``count``, blank lines skipped; a row with the wrong number of fields or a CSV error is yielded
    as a message so the caller decides whether to skip or raise.
    """
    import csv

    csv.field_size_limit(1 << 30)
    reader = csv.reader(utf8_lines(Path(path), count))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty CSV, expected a header row") from None
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num}: CSV error in the header: {err}") from None

    def rows():
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, f"CSV error: {err}"
                continue
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                yield start, f"{len(row)} fields, but the header has {len(header)}"
                continue
            yield start, row

    return header, rows()
