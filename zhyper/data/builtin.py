"""The built-in conditioning suite: formatting-rule contexts written by the project, shipped in the package.

Content (hand-written, no third-party text): ``builtin_prompts.yaml`` (80 prompts, each with a
one-sentence base answer), ``builtin_contexts.yaml`` (29 contexts x 16 descriptions; 5 marked
unseen) and ``builtin_paraphrases.yaml`` (10 held-out paraphrases per context, in other styles:
longer, indirect, informal, with a typo, as a question; evaluation only). A context's response to a prompt is its rule (``rules.RULES``) applied to the base
answer, so every target is exactly compliant and ``score`` measures conditioning as accuracy.

Splits: seen contexts share the same ``n_validation`` validation prompts (drawn with ``seed``)
and train on the rest; unseen contexts have all prompts in split "unseen". Each seen context's
descriptions are split train / held-out (``heldout_fraction``, seeded per context).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

from .base import ContextData, check_descriptions, split_descriptions
from .rules import RULES

logger = logging.getLogger(__name__)

PROMPTS_FILE = "builtin_prompts.yaml"
CONTEXTS_FILE = "builtin_contexts.yaml"
PARAPHRASES_FILE = "builtin_paraphrases.yaml"


@lru_cache(maxsize=1)
def _content() -> tuple[tuple[tuple[str, str], ...], dict[str, tuple[bool, tuple[str, ...]]]]:
    """(prompts as (prompt, base answer), {context: (unseen by default, descriptions)}) from package data."""
    import yaml

    root = resources.files("zhyper.data")
    prompts = yaml.safe_load(root.joinpath(PROMPTS_FILE).read_text(encoding="utf-8"))
    contexts = yaml.safe_load(root.joinpath(CONTEXTS_FILE).read_text(encoding="utf-8"))
    pairs = tuple((str(p["prompt"]), str(p["answer"])) for p in prompts)
    table = {name: (bool(spec["unseen"]), tuple(d.strip() for d in check_descriptions(
                 spec["descriptions"], f"{CONTEXTS_FILE}:{name}: descriptions", non_empty=True)))
             for name, spec in contexts.items()}
    if set(table) != set(RULES):
        raise AssertionError(f"{CONTEXTS_FILE} and rules.RULES disagree: {sorted(set(table) ^ set(RULES))}")
    return pairs, table


@lru_cache(maxsize=1)
def paraphrases() -> dict[str, tuple[str, ...]]:
    """{context: held-out paraphrases} from ``builtin_paraphrases.yaml`` (10 per rule; evaluation only)."""
    import yaml

    raw = yaml.safe_load(resources.files("zhyper.data").joinpath(PARAPHRASES_FILE).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or set(raw) != set(RULES):
        raise AssertionError(f"{PARAPHRASES_FILE} and rules.RULES disagree: {sorted(set(raw or {}) ^ set(RULES))}")
    return {name: tuple(d.strip() for d in check_descriptions(items, f"{PARAPHRASES_FILE}:{name}", non_empty=True))
            for name, items in raw.items()}


@dataclass
class BuiltinSuite(ContextData):
    """ContextData of the built-in suite plus rule compliance scoring.

    Extra example columns: prompt_id (int, index into the prompt pool) and base_answer (str).
    """

    def score(self, context: str, answer: str) -> bool:
        """True iff ``answer`` (surrounding whitespace ignored) obeys ``context``'s rule exactly."""
        if context not in RULES:
            raise ValueError(f"context: expected one of {sorted(RULES)}, got {context!r}")
        return bool(RULES[context].check(answer.strip()))

    def accuracy(self, contexts: Sequence[str], answers: Sequence[str]) -> float:
        """Fraction of (context, answer) pairs that comply; both sequences have the same length."""
        if len(contexts) != len(answers) or not answers:
            raise ValueError(f"contexts/answers: expected equal non-zero lengths, got {len(contexts)} and {len(answers)}")
        return sum(self.score(c, a) for c, a in zip(contexts, answers)) / len(answers)

    @staticmethod
    def apply(context: str, base_answer: str) -> str:
        """The compliant response for ``context`` given a plain base answer."""
        if context not in RULES:
            raise ValueError(f"context: expected one of {sorted(RULES)}, got {context!r}")
        return RULES[context].apply(base_answer)


def builtin_suite(seed: int = 0, n_validation: int = 8, heldout_fraction: float = 0.25,
                  unseen: Sequence[str] | None = None) -> BuiltinSuite:
    """Build the suite (a few ms; no I/O beyond the package's two YAML files).

    seed: picks the validation prompts and each context's held-out descriptions.
    n_validation: prompts per seen context kept for validation (the same prompts for all contexts).
    heldout_fraction: share of a seen context's descriptions held out (0.25 -> 4 of 16).
    unseen: context names held out entirely; default: those marked ``unseen`` in the YAML (5).
    """
    from datasets import Dataset

    pairs, table = _content()
    if not 0 <= n_validation < len(pairs):
        raise ValueError(f"n_validation: expected 0 <= n_validation < {len(pairs)}, got {n_validation}")
    names = list(table)
    if unseen is None:
        unseen_set = {n for n in names if table[n][0]}
    else:
        unknown = sorted(set(unseen) - set(names))
        if unknown:
            raise ValueError(f"unseen: unknown contexts {unknown}; known: {names}")
        unseen_set = set(unseen)
    seen_names = [n for n in names if n not in unseen_set]
    unseen_names = [n for n in names if n in unseen_set]
    if not seen_names:
        raise ValueError("unseen: at least one context must stay seen")
    val_ids = set(random.Random(f"{seed}:validation").sample(range(len(pairs)), n_validation))

    cols: dict[str, list] = {k: [] for k in ("context", "prompt", "response", "split", "system", "prompt_id",
                                              "base_answer")}
    for name in [*seen_names, *unseen_names]:
        rule = RULES[name]
        for i, (prompt, base) in enumerate(pairs):
            split = "unseen" if name in unseen_set else ("validation" if i in val_ids else "train")
            for k, v in zip(cols, (name, prompt, rule.apply(base), split, "", i, base)):
                cols[k].append(v)

    descriptions, heldout = {}, {}
    for name in seen_names:
        descriptions[name], heldout[name] = split_descriptions(table[name][1], heldout_fraction, seed, name)
    for name in unseen_names:
        heldout[name] = list(table[name][1])
    logger.debug("builtin suite: %d seen, %d unseen contexts, %d prompts", len(seen_names), len(unseen_names),
                 len(pairs))
    para = paraphrases()
    return BuiltinSuite(Dataset.from_dict(cols), descriptions, heldout, seen_names, unseen_names,
                        {name: list(para[name]) for name in names})
