"""Content retention: does an answer under a context still state the fact it states without one?

``facts.yaml`` holds 44 factual questions with known answers (never trained on). Each question is
asked with adapters off and under every context's description; an answer *keeps the fact* when it
contains an accepted form as whole words, with case, punctuation and ``_``/``-`` ignored (so
"PARIS", "the_capital_is_paris" and "Paris." all count). Retention of a context is its fraction
of kept facts divided by the adapters-off fraction: 1.0 means the context changed the form only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, Sequence

OFF = "adapters off"


@lru_cache(maxsize=1)
def facts() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(question, accepted answers) pairs of ``facts.yaml``."""
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("zhyper.evaluation").joinpath("facts.yaml").read_text("utf-8"))
    return tuple((str(r["question"]), tuple(str(a).lower() for a in r["answers"])) for r in raw)


def _words(text: str) -> str:
    return " " + " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split()) + " "


def keeps_fact(answer: str, accepted: Sequence[str]) -> bool:
    """Whether ``answer`` states one of ``accepted`` as whole words (case and punctuation ignored)."""
    words = _words(answer)
    return any(_words(a) in words for a in accepted)


@dataclass
class Retention:
    """Kept facts per condition (a context name, or ``OFF``) and the answers."""

    kept: dict[str, list[int]] = field(default_factory=dict)  # condition -> [kept, asked]
    answers: dict[str, list[str]] = field(default_factory=dict)

    def rate(self, condition: str) -> float:
        kept, n = self.kept[condition]
        return kept / n if n else float("nan")

    def relative(self, condition: str) -> float:
        """Rate under ``condition`` over the adapters-off rate (1.0: the content is kept as well)."""
        off = self.rate(OFF)
        return self.rate(condition) / off if off > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        out = {f"retention/{c}": self.relative(c) for c in self.kept if c != OFF}
        out["retention/adapters_off_rate"] = self.rate(OFF)
        ctx = [v for k, v in out.items() if k != "retention/adapters_off_rate"]
        if ctx:
            out["retention/mean"] = sum(ctx) / len(ctx)
            out["retention/worst"] = min(ctx)
        return out

    def markdown(self) -> str:
        lines = ["| condition | facts kept | relative to adapters off |", "|---|---|---|"]
        for c, (kept, n) in self.kept.items():
            rel = "1.00 (reference)" if c == OFF else f"{self.relative(c):.2f}"
            lines.append(f"| {c} | {kept}/{n} ({kept / n:.2f}) | {rel} |")
        return "\n".join(lines)


AskFn = Callable[[list[str], str | None], list[str]]


def retention_eval(ask: AskFn, descriptions: Mapping[str, str], n_questions: int | None = None, rank: int = 0,
                   world: int = 1) -> Retention:
    """``ask(questions, description or None for adapters off)`` under every context's description.

    ``descriptions``: {context: one description}. Every context is asked the same questions; the
    conditions are shared out over ``world`` ranks and gathered, so every rank returns all of them.
    """
    from zhyper.evaluation.compliance import _gather

    if n_questions is not None and (isinstance(n_questions, bool) or n_questions < 1):
        raise ValueError(f"n_questions: expected a positive number of questions (or None: all), got {n_questions!r}")
    qa = facts()[:n_questions]
    questions = [q for q, _ in qa]
    conditions = [(OFF, None), *descriptions.items()]
    local = [(i, ask(questions, d)) for i, (_, d) in enumerate(conditions) if i % world == rank]
    got = dict(_gather(local))
    out = Retention()
    for i, (condition, _) in enumerate(conditions):
        out.answers[condition] = got[i]
        out.kept[condition] = [sum(keeps_fact(a, acc) for a, (_, acc) in zip(got[i], qa)), len(qa)]
    return out
