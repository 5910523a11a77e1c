"""Targets that keep the base model's content: its own answer, reshaped to satisfy one IFEval instruction.

``transform(instruction_id, answer, kwargs, prompt)`` returns the reshaped answer, or None when
this answer cannot be reshaped faithfully for these parameters (for example "at least 12
sentences" from a four-sentence answer). The data source keeps a target only if the official
checker passes it (``ifeval_checkers.check``), so a transformation may be approximate; what it
must never do is change the answer's facts. ``NOT_TRAINABLE`` lists the types with no faithful
transformation and why.
"""

from __future__ import annotations

import json
import re
from typing import Callable

NOT_TRAINABLE = {
    "language:response_language": "needs a translation of the answer, which this project cannot produce faithfully",
    "keywords:letter_frequency": "bounding how often a letter occurs means rewriting the answer's words",
    "length_constraints:nth_paragraph_first_word": "forcing a given random word to open a paragraph changes the text",
    "detectable_format:constrained_response": "the answer is one fixed phrase: nothing of the base answer is kept",
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentences(text: str) -> list[str]:
    """The answer cut after each . ! or ? followed by space (newlines folded)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _groups(items: list[str], n: int) -> list[list[str]] | None:
    """``items`` in ``n`` consecutive non-empty groups, as even as possible (None if too few)."""
    if n < 1 or len(items) < n:
        return None
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _title(prompt: str) -> str:
    words = re.findall(r"[A-Za-z']+", prompt)[:6]
    return " ".join(words).capitalize() or "Answer"


def _capital_words(answer: str, kw: dict) -> str | None:
    n, relation = int(kw["capital_frequency"]), kw["capital_relation"]
    words = answer.split(" ")
    if relation == "less than":  # fewer all-caps words: lower-case every all-caps word but the first n-1
        seen = 0
        out = []
        for w in words:
            if w.isupper() and any(c.isalpha() for c in w):
                seen += 1
                w = w if seen < n else w.lower()
            out.append(w)
        return " ".join(out)
    if len(words) < n + 2:
        return None
    return " ".join(w.upper() if i < n + 2 else w for i, w in enumerate(words))  # a margin for tokenization


def _keyword_frequency(answer: str, kw: dict) -> str | None:
    word, n, relation = kw["keyword"], int(kw["frequency"]), kw["relation"]
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    if relation == "less than":
        return pattern.sub("", answer) if n <= 1 else answer
    have = len(pattern.findall(answer))
    extra = max(0, n - have)
    return answer if not extra else f"{answer}\n\nKey word: " + ", ".join([word] * extra) + "."


def _forbidden(answer: str, kw: dict) -> str:
    for word in kw["forbidden_words"]:
        answer = re.sub(rf"\b{re.escape(word)}\b", "", answer, flags=re.IGNORECASE)
    return re.sub(r"[ \t]{2,}", " ", answer)


def _sentence_limit(answer: str, kw: dict) -> str | None:
    n, relation, parts = int(kw["num_sentences"]), kw["relation"], sentences(answer)
    if relation == "less than":
        return " ".join(parts[:n - 1]) if n > 1 else None
    return answer if len(parts) >= n else None


def _word_limit(answer: str, kw: dict) -> str | None:
    n, relation, words = int(kw["num_words"]), kw["relation"], answer.split()
    if relation == "less than":
        return " ".join(words[:n - 1]) if n > 1 else None
    return answer if len(words) >= n else None


def _joined(answer: str, n: int, fmt: Callable[[int, str], str], sep: str) -> str | None:
    groups = _groups(sentences(answer), n)
    return None if groups is None else sep.join(fmt(i, " ".join(g)) for i, g in enumerate(groups))


def _highlights(answer: str, kw: dict) -> str | None:
    parts, n = sentences(answer), int(kw["num_highlights"])
    if len(parts) < n:
        return None
    return " ".join(f"*{s}*" if i < n else s for i, s in enumerate(parts))


def _two_responses(answer: str) -> str | None:
    parts = sentences(answer)
    return None if len(parts) < 2 else f"{answer}\n******\n{parts[0]}"


TRANSFORMS: dict[str, Callable[[str, dict, str], str | None]] = {
    "change_case:english_lowercase": lambda a, kw, p: a.lower(),
    "change_case:english_capital": lambda a, kw, p: a.upper(),
    "change_case:capital_word_frequency": lambda a, kw, p: _capital_words(a, kw),
    "punctuation:no_comma": lambda a, kw, p: a.replace(",", ""),
    "startend:quotation": lambda a, kw, p: f'"{a}"',
    "startend:end_checker": lambda a, kw, p: f"{a.rstrip()} {kw['end_phrase']}",
    "detectable_format:title": lambda a, kw, p: f"<<{_title(p)}>>\n\n{a}",
    "detectable_format:json_format": lambda a, kw, p: "```json\n" + json.dumps({"answer": a}, indent=2) + "\n```",
    "detectable_format:number_highlighted_sections": lambda a, kw, p: _highlights(a, kw),
    "detectable_format:number_bullet_lists": lambda a, kw, p: _joined(a, int(kw["num_bullets"]),
                                                                       lambda i, s: f"* {s}", "\n"),
    "detectable_format:multiple_sections": lambda a, kw, p: _joined(
        a, int(kw["num_sections"]), lambda i, s: f"{kw['section_spliter']} {i + 1}\n{s}", "\n\n"),
    "length_constraints:number_paragraphs": lambda a, kw, p: _joined(a, int(kw["num_paragraphs"]),
                                                                      lambda i, s: s, "\n\n***\n\n"),
    "length_constraints:number_sentences": lambda a, kw, p: _sentence_limit(a, kw),
    "length_constraints:number_words": lambda a, kw, p: _word_limit(a, kw),
    "detectable_content:postscript": lambda a, kw, p: f"{a}\n\n{kw['postscript_marker']} I hope this helps.",
    "detectable_content:number_placeholders": lambda a, kw, p: a + "\n\n" + " ".join(
        f"[{name}]" for name in ("name", "date", "place", "email", "phone")[:int(kw["num_placeholders"])])
    if int(kw["num_placeholders"]) <= 5 else None,
    "keywords:existence": lambda a, kw, p: f"{a}\n\nKey words: " + ", ".join(kw["keywords"]) + ".",
    "keywords:frequency": lambda a, kw, p: _keyword_frequency(a, kw),
    "keywords:forbidden_words": lambda a, kw, p: _forbidden(a, kw),
    "combination:two_responses": lambda a, kw, p: _two_responses(a),
    "combination:repeat_prompt": lambda a, kw, p: f"{p}\n{a}",
}


def transform(instruction_id: str, answer: str, kwargs: dict, prompt: str) -> str | None:
    """``answer`` reshaped for one instruction, or None (no faithful version for these parameters)."""
    if instruction_id in NOT_TRAINABLE:
        raise ValueError(f"instruction_id: {instruction_id!r} is not trainable: {NOT_TRAINABLE[instruction_id]}")
    if instruction_id not in TRANSFORMS:
        raise ValueError(f"instruction_id: expected one of {sorted(TRANSFORMS)}, got {instruction_id!r}")
    answer = answer.strip()
    if not answer:
        return None
    out = TRANSFORMS[instruction_id](answer, kwargs, prompt)
    return out.strip() if out else None
