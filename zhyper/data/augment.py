"""Description augmentation: generic rewordings of a training description (style, not content).

A hypernetwork trained on a dozen wordings per context learns those embeddings, not the
instruction; users write "pls answer in caps, thx" or "Could you use capitals?". Each variant
here applies one to three generic edits chosen at random: case, punctuation, a polite or
informal frame, a question frame, a vague reason, a typo. The edits know nothing about any
context, so they add no content the original did not have.
"""

from __future__ import annotations

import random
from typing import Sequence

_PREFIXES = ("Please ", "Hey, ", "For this one: ", "Quick request: ", "Important: ", "One thing: ", "Note: ",
             "Listen, ", "From now on, ", "Rule for the reply: ")
_SUFFIXES = (" Thanks!", " Thank you.", " Please.", " No exceptions.", " Keep to that.", " Cheers.",
             " That is all.", " Do not forget.")
_REASONS = (" It is for a project I am working on.", " My tool expects it.", " That is how I need it.",
            " It makes the reply easier for me to use.", " My teacher asked for it.")
_QUESTIONS = ("Could you do this? ", "Can you manage this: ", "Would you mind? ")


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swap two neighbours
    elif kind == 1:
        w = w[:j] + w[j + 1:]  # drop one
    else:
        w = w[:j] + w[j] + w[j:]  # double one
    words[i] = w
    return " ".join(words)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


_EDITS = (
    lambda t, r: t.lower(),
    lambda t, r: t.rstrip(".!"),
    lambda t, r: r.choice(_PREFIXES) + _lower_first(t),
    lambda t, r: t.rstrip() + r.choice(_SUFFIXES),
    lambda t, r: t.rstrip() + r.choice(_REASONS),
    lambda t, r: r.choice(_QUESTIONS) + t,
    _typo,
)


def augment_description(text: str, rng: random.Random) -> str:
    """One variant of ``text``: one to three generic edits, applied in a random order."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text: expected a non-empty description, got {text!r}")
    out = text.strip()
    for edit in rng.sample(_EDITS, rng.randint(1, 3)):
        out = edit(out, rng).strip() or out
    return out


def augment_descriptions(descriptions: Sequence[str], per_description: int, seed: int = 0,
                         key: str = "") -> list[str]:
    """``descriptions`` followed by up to ``per_description`` distinct variants of each (seeded by key)."""
    if not isinstance(per_description, int) or isinstance(per_description, bool) or per_description < 0:
        raise ValueError(f"per_description: expected an int >= 0, got {per_description!r}")
    rng = random.Random(f"{seed}:{key}")
    out = dict.fromkeys(d.strip() for d in descriptions)
    for d in list(out):
        for _ in range(per_description):
            out.setdefault(augment_description(d, rng))
    return list(out)
