"""Control descriptions: text that describes no context, for training "null" examples and for evaluation.

Two kinds, each in two disjoint pools (``"train"`` may be used to train, ``"eval"`` only to evaluate):

- random strings: pseudo-words of random letters and syllables (``random_strings``), drawn from a
  seeded generator whose seed differs between the pools;
- unrelated sentences: hand-written sentences about weather, cooking, travel ... that say nothing
  about how to answer (``builtin_controls.yaml``; the pools share no sentence).

A description-conditioned model should answer these as if no context were given: a behaviour that
a random string triggers as often as the real description is a default mode, not conditioning.
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources

CONTROLS_FILE = "builtin_controls.yaml"
POOLS = ("train", "eval")
_VOWELS = "aeiou"
_CONSONANTS = "bcdfghjklmnprstvwz"
_POOL_SEED = {"train": 1013, "eval": 7919}  # different streams: the pools never share a string


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")


def _word(rng: random.Random) -> str:
    if rng.random() < 0.5:  # pronounceable: consonant-vowel syllables
        return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 4)))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))


def random_strings(n: int, pool: str = "train", seed: int = 0) -> list[str]:
    """``n`` distinct strings of 1-6 random pseudo-words (first letter sometimes capitalised).

    Deterministic in (pool, seed); the train and eval pools are drawn from different streams.
    """
    _check_pool(pool)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    rng = random.Random(_POOL_SEED[pool] * 1_000_003 + seed)
    out: dict[str, None] = {}
    while len(out) < n:
        text = " ".join(_word(rng) for _ in range(rng.randint(1, 6)))
        if rng.random() < 0.3:
            text = text[:1].upper() + text[1:]
        out[text] = None
    return list(out)


@lru_cache(maxsize=1)
def _sentences() -> dict[str, tuple[str, ...]]:
    import yaml

    raw = yaml.safe_load(resources.files("zhyper.data").joinpath(CONTROLS_FILE).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or set(raw) != set(POOLS):
        raise ValueError(f"{CONTROLS_FILE}: expected the keys {list(POOLS)}")
    out = {}
    for pool in POOLS:
        items = raw[pool]
        if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
            raise ValueError(f"{CONTROLS_FILE}:{pool}: expected a list of non-empty strings")
        out[pool] = tuple(s.strip() for s in items)
    shared = set(out["train"]) & set(out["eval"])
    if shared:
        raise ValueError(f"{CONTROLS_FILE}: the pools must be disjoint; both hold {sorted(shared)[:3]}")
    return out


def unrelated_sentences(pool: str = "train") -> list[str]:
    """The hand-written unrelated sentences of one pool (60 train, 40 eval)."""
    _check_pool(pool)
    return list(_sentences()[pool])


def control_descriptions(n: int, pool: str = "eval", seed: int = 0) -> list[tuple[str, str]]:
    """``n`` control descriptions as (kind, text), alternating random strings and unrelated sentences.

    kind is ``"random_string"`` or ``"unrelated_sentence"``. Sentences are taken in a seeded order
    and repeat only when ``n`` exceeds twice the pool.
    """
    strings = random_strings((n + 1) // 2, pool, seed)
    sentences = unrelated_sentences(pool)
    random.Random(f"{pool}:{seed}").shuffle(sentences)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(("random_string", strings[i // 2]))
        else:
            out.append(("unrelated_sentence", sentences[(i // 2) % len(sentences)]))
    return out
