"""Composition and the strength dial, measured with a data source's own checkers.

``pair_compliance``: pairs of trained contexts whose checkers can both pass; each pair's held-out
descriptions given together (``combine="modulation"`` or ``"text"``) on held-out prompts; reported:
both checkers pass, each alone, and each context's single-description compliance on the same prompts.

``dial``: one context's description at weights w (0 = the base model exactly, 1 = as trained,
above 1 stronger): compliance at each weight, and content retention at each weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class PairResult:
    """Counts per (pair, condition): [n, first passes, second passes, both pass]."""

    counts: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)

    def add(self, a: str, b: str, condition: str, ok_a: bool, ok_b: bool) -> None:
        row = self.counts.setdefault((a, b, condition), [0, 0, 0, 0])
        row[0] += 1
        row[1] += int(ok_a)
        row[2] += int(ok_b)
        row[3] += int(ok_a and ok_b)

    def markdown(self) -> str:
        lines = ["| pair | condition | n | first passes | second passes | both pass |", "|---|---|---|---|---|---|"]
        for (a, b, cond), (n, pa, pb, both) in self.counts.items():
            lines.append(f"| {a.split(':')[-1]} + {b.split(':')[-1]} | {cond} | {n} | {pa / n:.2f} | {pb / n:.2f} | "
                         f"{both / n:.2f} |")
        return "\n".join(lines)


def _score(data, rule: str, answer: str, description: str, prompt: str) -> bool:
    try:
        return bool(data.score(rule, answer, description, prompt))
    except TypeError:  # a data source whose checkers need no parameters (the built-in suite)
        return bool(data.score(rule, answer))


def pair_compliance(model, data, pairs: Sequence[tuple[str, str]], prompts: Sequence[str], max_new_tokens: int = 160,
                    combines: Sequence[str] = ("modulation", "text")) -> PairResult:
    """Both checkers on answers to ``prompts`` under each pair (held-out descriptions), and each alone."""
    out = PairResult()
    prompts = list(prompts)
    for a, b in pairs:
        da, db = data.heldout_descriptions[a][0], data.heldout_descriptions[b][0]
        conditions = {f"together ({c})": ([[da, db]] * len(prompts), c) for c in combines}
        conditions |= {"first alone": ([da] * len(prompts), "modulation"),
                       "second alone": ([db] * len(prompts), "modulation")}
        for name, (descs, combine) in conditions.items():
            answers = model.generate(prompts, descs, combine=combine, max_new_tokens=max_new_tokens)
            for p, ans in zip(prompts, answers):
                out.add(a, b, name, _score(data, a, ans, da, p), _score(data, b, ans, db, p))
    return out


def dial(model, data, contexts: Sequence[str], weights: Sequence[float], prompts: Sequence[str],
         n_questions: int = 12, max_new_tokens: int = 160, retention_tokens: int = 48) -> dict:
    """{context: {weight: (compliance, retention relative to adapters off)}} for one description per context."""
    from zhyper.evaluation.retention import OFF, retention_eval

    out: dict = {}
    prompts = list(prompts)
    plain: dict[tuple[str, ...], list[str]] = {}  # adapters-off answers: the same for every context and weight
    for c in contexts:
        d = data.heldout_descriptions[c][0]
        out[c] = {}
        for w in weights:
            answers = model.generate(prompts, [d] * len(prompts), weights=[w] * len(prompts),
                                     max_new_tokens=max_new_tokens)
            compliance = sum(_score(data, c, a, d, p) for a, p in zip(answers, prompts)) / len(prompts)

            def ask(questions, description, w=w):
                if description is None:
                    if tuple(questions) not in plain:
                        with model.adapters_off():
                            plain[tuple(questions)] = model.generate(questions, "none", max_new_tokens=retention_tokens)
                    return plain[tuple(questions)]
                return model.generate(questions, [description] * len(questions), weights=[w] * len(questions),
                                      max_new_tokens=retention_tokens)

            kept = retention_eval(ask, {c: d}, n_questions)
            out[c][w] = (compliance, kept.relative(c) if kept.rate(OFF) > 0 else float("nan"))
    return out
