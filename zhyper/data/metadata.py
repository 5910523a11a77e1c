"""Reading the T2L / Zhyper ``metadata.yaml`` of a task or culture, and applying its prompt template."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import check_descriptions

KNOWN_KEYS = ("descriptions", "user_prompt_template", "response_field", "assistant_prefill", "assistant_postfill",
              "system_message", "ds_kwargs", "task_name")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ValueError naming the file and the position."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: malformed YAML: {err}") from err


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

    def prompt(self, row: Mapping[str, Any], index: int = -1) -> str:
        """The user message for one data row; a row that lacks a nested field names the row."""
        try:
            return self.user_prompt_template.format_map(row)
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ValueError(f"{self.source}: user_prompt_template cannot be filled from data row {index}: "
                             f"{type(err).__name__}: {err}") from err

    def response(self, row: Mapping[str, Any]) -> str:
        return f"{self.assistant_prefill}{row[self.response_field]}{self.assistant_postfill}"


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
