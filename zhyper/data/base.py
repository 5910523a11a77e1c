"""ContextData: what every loader returns (examples + per-context descriptions + seen/unseen split).

A *context* is what the hypernetwork conditions on (a task, a culture, a formatting rule). Each
context has natural-language descriptions; training draws from ``descriptions[c]``, evaluation
uses ``heldout_descriptions[c]`` (for an unseen context: all of its descriptions). The examples
are one ``datasets.Dataset`` with at least the columns of ``REQUIRED_COLUMNS``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from zhyper.hyper.spec import check_descriptions  # noqa: F401  (its home: the encoder's floor, hyper)

if TYPE_CHECKING:  # datasets is heavy: imported by the loaders only
    from datasets import Dataset

SPLITS = ("train", "validation", "unseen")
REQUIRED_COLUMNS = ("context", "prompt", "response", "split", "system")


@dataclass
class ContextData:
    """Examples of several contexts with their train / held-out descriptions.

    examples: Dataset with columns context, prompt (user message, template applied), response,
        split ("train" | "validation" | "unseen"), system (may be "") and any loader extras.
    descriptions: {seen context: [training descriptions]}.
    heldout_descriptions: {context: [held-out descriptions]}; an unseen context's are all of its.
    seen_contexts / unseen_contexts: disjoint context names, in a stable order.
    paraphrases: {context: [held-out paraphrases]}, optional: descriptions written in other styles
        than the training ones (longer, indirect, informal, with a typo, as a question), used only
        to evaluate (never trained on, never used for model selection).
    """

    examples: "Dataset"
    descriptions: dict[str, list[str]]
    heldout_descriptions: dict[str, list[str]]
    seen_contexts: list[str]
    unseen_contexts: list[str]
    paraphrases: dict[str, list[str]] = field(default_factory=dict)
    _split_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.examples.column_names]
        if missing:
            raise ValueError(f"examples: missing columns {missing}; expected at least {list(REQUIRED_COLUMNS)}, "
                             f"got {self.examples.column_names}")
        both = sorted(set(self.seen_contexts) & set(self.unseen_contexts))
        if both:
            raise ValueError(f"seen_contexts and unseen_contexts must be disjoint; both contain {both}")
        for c in self.seen_contexts:
            if not self.descriptions.get(c):
                raise ValueError(f"descriptions: seen context {c!r} has no training descriptions")
        for c in self.unseen_contexts:
            if not self.heldout_descriptions.get(c):
                raise ValueError(f"heldout_descriptions: unseen context {c!r} has no descriptions")
        trained = {d for ds in self.descriptions.values() for d in ds}
        overlap = sorted({p for ps in self.paraphrases.values() for p in ps} & trained)
        if overlap:
            raise ValueError(f"paraphrases: must never be trained on, but {overlap[:3]} are training descriptions")
        leaked = sorted(set(self.descriptions) & set(self.unseen_contexts))
        if leaked:
            raise ValueError(f"descriptions: unseen contexts {leaked} must not have training descriptions")
        bad = sorted(set(self.examples.unique("split")) - set(SPLITS))
        if bad:
            raise ValueError(f"examples['split']: expected values in {list(SPLITS)}, got {bad}")

    @property
    def contexts(self) -> list[str]:
        """All context names: seen first, then unseen."""
        return [*self.seen_contexts, *self.unseen_contexts]

    def restrict(self, contexts: Sequence[str]) -> "ContextData":
        """The same data limited to ``contexts`` (each keeps its seen/unseen role and descriptions).

        Fewer contexts give each one more training steps in a short run (the main job uses this).
        """
        names = list(dict.fromkeys(contexts))
        unknown = [c for c in names if c not in self.contexts]
        if not names or unknown:
            raise ValueError(f"contexts: expected a non-empty list of names from {self.contexts}, "
                             f"got {names} (unknown: {unknown})")
        keep = set(names)
        seen = [c for c in self.seen_contexts if c in keep]
        if not seen:
            raise ValueError(f"contexts: at least one must be a seen context {self.seen_contexts}, got {names}")
        col = self.examples["context"]
        return type(self)(self.examples.select([i for i, c in enumerate(col) if c in keep]),
                          {c: list(self.descriptions[c]) for c in seen},
                          {c: list(d) for c, d in self.heldout_descriptions.items() if c in keep},
                          seen, [c for c in self.unseen_contexts if c in keep],
                          {c: list(p) for c, p in self.paraphrases.items() if c in keep})

    def split(self, name: str) -> "Dataset":
        """The examples of one split ("train", "validation" or "unseen"), in their original order."""
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {list(SPLITS)}, got {name!r}")
        if name not in self._split_cache:
            col = self.examples["split"]
            self._split_cache[name] = self.examples.select([i for i, s in enumerate(col) if s == name])
        return self._split_cache[name]


def split_descriptions(descriptions: Sequence[str], heldout_fraction: float, seed: int, key: str,
                       source: str = "descriptions") -> tuple[list[str], list[str]]:
    """Split one context's descriptions into (train, held-out), reproducibly from (seed, key).

    Duplicates are dropped (first occurrence kept) so a held-out description never also appears
    in training. At least one description stays on each side when there are two or more.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction: expected a value in [0, 1), got {heldout_fraction}")
    unique = list(dict.fromkeys(d.strip() for d in descriptions if isinstance(d, str) and d.strip()))
    if not unique:
        raise ValueError(f"{source}: context {key!r} has no non-empty descriptions")
    if len(unique) == 1 or heldout_fraction == 0.0:
        return unique, []
    n_held = min(len(unique) - 1, max(1, round(heldout_fraction * len(unique))))
    order = list(range(len(unique)))
    random.Random(f"{seed}:{key}").shuffle(order)
    held = set(order[:n_held])
    return [d for i, d in enumerate(unique) if i not in held], [d for i, d in enumerate(unique) if i in held]


def positional_split(n: int, train_fraction: float) -> int:
    """Rows [0, cut) train, [cut, n) validation, as HF's ``train[:90%]`` / ``train[90%:]`` (rounded)."""
    return int(round(n * train_fraction))


def split_labels(n: int, unseen: bool, train_fraction: float, max_unseen_examples: int | None = None) -> list[str]:
    """The split of each of a context's ``n`` rows: an unseen context's first ``max_unseen_examples`` (all when
    None) are "unseen" (the caller keeps only those), a seen one is cut positionally into train / validation."""
    if unseen:
        return ["unseen"] * (n if max_unseen_examples is None else min(n, max_unseen_examples))
    cut = positional_split(n, train_fraction)
    return ["train"] * cut + ["validation"] * (n - cut)

