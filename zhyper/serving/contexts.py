"""The named contexts a served checkpoint answers to: ``model: "zhyper:<name>"`` -> one description.

Two sources, later ones overriding earlier ones by name:

1. the built-in suite (``zhyper.data.builtin_suite()``, all 29 rules such as ``upper_case`` or
   ``json_answer``): a context's served description is its first held-out description (for an
   unseen rule: its first description), the same one a training run exports as its PEFT example;
2. an optional ``contexts.json`` in the checkpoint folder, ``{"name": ["description", ...]}``: the
   first description of each list is the one served (the others document the context).

A checkpoint folder without ``contexts.json`` stays a valid checkpoint: the file is optional and
nothing else reads it. ``save_contexts`` writes it atomically.

Which contexts are trained (``context_table``): a training run writes every context of its data
into ``final/contexts.json``, so when the file exists its contexts are the checkpoint's own
(``trained: true``) and a built-in rule missing from it is ``trained: false`` (listed, but a request
naming it is refused by the server with the description to send instead). Without the file the
checkpoint does not say what it was trained on: built-in rules are ``trained: null`` and served.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .logsafe import safe_logger

logger = safe_logger(__name__)

CONTEXTS_FILE = "contexts.json"
PREFIX = "zhyper:"  # model names "zhyper:<context>" select a named context


def builtin_contexts() -> dict[str, str]:
    """{rule name: served description} for every context of the built-in suite."""
    from zhyper.data import builtin_suite

    suite = builtin_suite()
    return {name: (suite.heldout_descriptions.get(name) or suite.descriptions[name])[0]
            for name in [*suite.seen_contexts, *suite.unseen_contexts]}


def _check_table(raw, path: Path) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object {{name: [description, ...]}}, got {type(raw).__name__}")
    table = {}
    for name, descriptions in raw.items():
        if not name.strip() or any(c.isspace() for c in name):
            raise ValueError(f"{path}: context name {name!r} is empty or contains whitespace; expected a word "
                             "like 'upper_case'")
        if "+" in name:  # the server reads model "zhyper:a+b" as contexts a and b combined
            raise ValueError(f"{path}: context name {name!r} contains '+', which joins context names in a model id "
                             f"('{PREFIX}a+b' combines a and b); expected a name without '+', e.g. "
                             f"{name.replace('+', '_')!r}")
        if (not isinstance(descriptions, list) or not descriptions
                or not all(isinstance(d, str) and d.strip() for d in descriptions)):
            raise ValueError(f"{path}: context {name!r}: expected a non-empty list of non-empty description "
                             f"strings, got {descriptions!r}")
        table[name] = [d.strip() for d in descriptions]
    return table


def read_contexts_file(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The ``contexts.json`` of a checkpoint folder ({} when there is none); raises on a malformed file."""
    from zhyper.io import read_text

    path = Path(folder) / CONTEXTS_FILE
    if not path.exists():
        return {}
    try:  # a directory or a file that is not UTF-8 is named, never skipped
        raw = json.loads(read_text(path, "contexts file"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {{name: [description, ...]}}") from None
    return _check_table(raw, path)


@dataclass(frozen=True)
class NamedContext:
    """A context a server answers to: its served description and whether the checkpoint was trained on it
    (True / False, or None when the checkpoint does not say)."""

    description: str
    trained: bool | None
    source: str  # "checkpoint" (contexts.json), "builtin" or "given" (passed to create_app)


def context_table(folder: str | os.PathLike | None = None, builtin: bool = True) -> dict[str, NamedContext]:
    """{name: NamedContext}: built-in rules, then ``folder/contexts.json`` (see the module docstring)."""
    own = read_contexts_file(folder) if folder is not None else {}
    table = {}
    if builtin:
        trained = None if not own else False
        table = {name: NamedContext(text, trained, "builtin") for name, text in builtin_contexts().items()}
    table.update({name: NamedContext(descriptions[0], True, "checkpoint") for name, descriptions in own.items()})
    return table


def load_contexts(folder: str | os.PathLike | None = None, builtin: bool = True) -> dict[str, str]:
    """{context name: the description served for it}: built-in rules, then ``folder/contexts.json``."""
    contexts = builtin_contexts() if builtin else {}
    if folder is not None:
        own = read_contexts_file(folder)
        if own:
            logger.info("%s: %d named contexts", Path(folder) / CONTEXTS_FILE, len(own))
        contexts.update({name: descriptions[0] for name, descriptions in own.items()})
    return contexts


def save_contexts(folder: str | os.PathLike, contexts: Mapping[str, Sequence[str] | str]) -> Path:
    """Write ``folder/contexts.json`` atomically ({name: [descriptions]}; a bare string is one description)."""
    from zhyper.io import atomic_write

    path = Path(folder) / CONTEXTS_FILE
    table = _check_table({name: [d] if isinstance(d, str) else list(d) for name, d in contexts.items()}, path)
    return atomic_write(path, json.dumps(table, indent=2, ensure_ascii=False) + "\n")
