"""Rule compliance of greedy answers under descriptions and controls, scored by every rule's checker.

One evaluation set (``generation_items``) asks the same prompts under every condition:

| condition | description given | adapters | what it measures |
|---|---|---|---|
| ``heldout`` | a held-out training-style description of rule X | on | compliance (held-out wording) |
| ``paraphrase`` | a held-out paraphrase of rule X (another style; never trained on) | on | compliance (new wording) |
| ``random`` | a random string or an unrelated sentence | on | default modes: rules triggered by nothing |
| ``base`` | none | off | what the base model does by itself |
| ``base+prompt`` | rule X's held-out description in the prompt | off | the prompting baseline |

Every answer is scored by every rule's checker, so one pass gives compliance (X's checker on X's
descriptions), the wrong-context control (X's checker on other rules' descriptions), the random
control per rule, and the confusion matrix (rows: whose description; columns: whose checker).
For a method that reads descriptions from the prompt (``description_in_prompt``), the ``heldout``,
``paraphrase`` and ``random`` descriptions go into the prompt; otherwise only to the hypernetwork.

Items are split over ranks; answers are gathered so every rank holds all of them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

CONDITIONS = ("heldout", "paraphrase", "random", "base", "base+prompt")
RANDOM_SOURCES = ("random_string", "unrelated_sentence")
NONE = "none"


@dataclass(frozen=True)
class GenItem:
    """One greedy answer to produce: which condition, whose description (``source``), what to ask."""

    condition: str
    source: str  # a rule name, one of RANDOM_SOURCES, or NONE
    prompt: str
    system: str
    description: str  # "" when none is given
    adapters: bool
    in_prompt: bool


def eval_prompts(data, n_prompts: int) -> list[tuple[str, str]]:
    """(prompt, system) pairs of the validation split, the first ``n_prompts`` distinct ones in row order.

    The built-in suite uses the same validation prompts for every seen context; unseen contexts were
    never trained on any prompt, so the same prompts serve every rule and every control.
    """
    rows = data.split("validation")
    out: dict[tuple[str, str], None] = {}
    for prompt, system in zip(rows["prompt"], rows["system"]):
        out.setdefault((prompt, system or ""), None)
        if len(out) == n_prompts:
            break
    if not out:
        raise ValueError("data: no validation rows to ask prompts from")
    return list(out)


def generation_items(data, n_prompts: int = 8, paraphrases_per_prompt: int = 2, n_controls: int = 16,
                     description_in_prompt: bool = False, base_prompt: bool = True, seed: int = 0) -> list[GenItem]:
    """The whole evaluation set, in a fixed order (the same on every rank); ``base_prompt=False`` leaves
    out the base+prompt answers (they do not depend on what was trained)."""
    from zhyper.data.controls import control_descriptions

    prompts = eval_prompts(data, n_prompts)
    paraphrases = getattr(data, "paraphrases", None) or {}
    items: list[GenItem] = []
    for rule in data.contexts:
        pool = data.heldout_descriptions.get(rule) or data.descriptions[rule]
        for i, (prompt, system) in enumerate(prompts):
            held = pool[(i + seed) % len(pool)]
            items.append(GenItem("heldout", rule, prompt, system, held, True, description_in_prompt))
            if base_prompt:
                items.append(GenItem("base+prompt", rule, prompt, system, held, False, True))
            para = paraphrases.get(rule) or []
            for k in range(paraphrases_per_prompt if para else 0):
                d = para[(i * paraphrases_per_prompt + k + seed) % len(para)]
                items.append(GenItem("paraphrase", rule, prompt, system, d, True, description_in_prompt))
    for i, (kind, text) in enumerate(control_descriptions(n_controls, "eval", seed)):
        prompt, system = prompts[i % len(prompts)]
        items.append(GenItem("random", kind, prompt, system, text, True, description_in_prompt))
    for prompt, system in prompts:
        items.append(GenItem("base", NONE, prompt, system, "", False, False))
    return items


@dataclass
class ComplianceResult:
    """Counts of answers and checker passes per (condition, source), over all rules as columns."""

    rules: list[str]
    seen: list[str]
    unseen: list[str]
    counts: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # [n, hits per rule ...]
    answers: list[tuple[GenItem, str]] = field(default_factory=list)
    retention: object = None  # a zhyper.evaluation.retention.Retention when measured

    def _row(self, condition: str, sources: Sequence[str]) -> tuple[float, list[float]]:
        n, hits = 0.0, [0.0] * len(self.rules)
        for s in sources:
            row = self.counts.get((condition, s))
            if row is not None:
                n += row[0]
                hits = [h + x for h, x in zip(hits, row[1:])]
        return n, hits

    def rate(self, condition: str, rule: str, sources: Sequence[str] | None = None) -> tuple[float, int]:
        """(fraction of answers passing ``rule``'s checker, number of answers) for ``condition``.

        ``sources`` defaults to ``[rule]`` (compliance); pass others for controls. NaN when no answer.
        """
        if rule not in self.rules:
            raise ValueError(f"rule: expected one of {self.rules}, got {rule!r}")
        n, hits = self._row(condition, [rule] if sources is None else sources)
        return (hits[self.rules.index(rule)] / n if n else math.nan), int(n)

    def compliance(self, condition: str, rule: str) -> tuple[float, int]:
        return self.rate(condition, rule)

    def random_rate(self, rule: str) -> tuple[float, int]:
        """How often a random string or unrelated sentence yields an answer passing ``rule``."""
        return self.rate("random", rule, RANDOM_SOURCES)

    def base_rate(self, rule: str) -> tuple[float, int]:
        """How often the base model (adapters off, no description) passes ``rule`` by itself."""
        return self.rate("base", rule, [NONE])

    def wrong_rate(self, rule: str, condition: str = "paraphrase") -> tuple[float, int]:
        """How often another rule's description yields an answer passing ``rule`` (wrong-context control)."""
        return self.rate(condition, rule, [r for r in self.rules if r != rule])

    def confusion(self, condition: str = "paraphrase") -> tuple[list[str], list[list[float]]]:
        """(row labels, matrix): row = whose description (rules, then the controls), column = whose checker."""
        labels, matrix = [], []
        for label, sources, cond in ([(r, [r], condition) for r in self.rules]
                                     + [("random", list(RANDOM_SOURCES), "random"), ("adapters off", [NONE], "base")]):
            n, hits = self._row(cond, sources)
            if n:
                labels.append(label)
                matrix.append([h / n for h in hits])
        return labels, matrix

    def mean(self, condition: str, rules: Sequence[str]) -> tuple[float, float, int]:
        """(mean compliance over ``rules`` weighted by answers, its standard error, answers)."""
        n, k = 0, 0.0
        for rule in rules:
            p, m = self.compliance(condition, rule)
            if m:
                n, k = n + m, k + p * m
        if not n:
            return math.nan, math.nan, 0
        p = k / n
        return p, math.sqrt(p * (1 - p) / n), n

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow and eval.json (NaN-free: missing figures are left out)."""
        out: dict[str, float] = {}
        for condition in ("heldout", "paraphrase", "base+prompt"):
            for split, rules in (("seen", self.seen), ("unseen", self.unseen)):
                p, se, n = self.mean(condition, rules)
                if n:
                    out[f"compliance_{condition.replace('+', '_')}_{split}"] = p
                    out[f"compliance_{condition.replace('+', '_')}_{split}_se"] = se
        for rule in self.rules:
            for condition in ("heldout", "paraphrase"):
                p, n = self.compliance(condition, rule)
                if n:
                    out[f"compliance_{condition}.{rule}"] = p
            for name, (p, n) in (("random", self.random_rate(rule)), ("base", self.base_rate(rule)),
                                 ("wrong", self.wrong_rate(rule))):
                if n:
                    out[f"control_{name}.{rule}"] = p
        excess = [self.random_rate(r)[0] - self.base_rate(r)[0] for r in self.seen]
        excess = [e for e in excess if not math.isnan(e)]
        if excess:
            out["random_excess_max_seen"] = max(excess)
        return out

    def to_dict(self) -> dict:
        return {"rules": self.rules, "seen": self.seen, "unseen": self.unseen,
                "counts": [{"condition": c, "source": s, "n": row[0], "hits": dict(zip(self.rules, row[1:]))}
                           for (c, s), row in sorted(self.counts.items())]}


def _gather(local: list[tuple[int, str]]) -> list[tuple[int, str]]:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return [x for part in parts for x in part]


def _scorer(data) -> Callable[[str, str, GenItem], bool]:
    """``data.score`` with the item's description and prompt where the checker needs its parameters (IFEval)."""
    import inspect

    if "description" in inspect.signature(data.score).parameters:
        return lambda rule, answer, it: data.score(rule, answer, it.description, it.prompt)
    return lambda rule, answer, it: data.score(rule, answer)


GenerateFn = Callable[[list[str], list[str], str, bool, bool], list[str]]


def compliance_eval(generate: GenerateFn, data, items: list[GenItem], rank: int = 0, world: int = 1,
                    batch_size: int = 16, progress: bool = False) -> ComplianceResult:
    """Answer ``items`` (this rank's share), gather every rank's answers, score them with every checker.

    ``generate(prompts, descriptions, system, description_in_prompt, adapters) -> answers`` answers
    one batch greedily; ``data`` must have ``score(rule, answer)`` (the built-in suite).
    """
    if not hasattr(data, "score"):
        raise TypeError(f"data: {type(data).__name__} has no rule checkers (score); compliance needs the built-in "
                        "suite")
    mine = [(i, it) for i, it in enumerate(items) if i % world == rank]
    groups: dict[tuple[bool, bool, str], list[tuple[int, GenItem]]] = defaultdict(list)
    for i, it in mine:
        groups[(it.adapters, it.in_prompt, it.system)].append((i, it))
    batches = [g[j:j + batch_size] for g in groups.values() for j in range(0, len(g), batch_size)]
    local: list[tuple[int, str]] = []
    from tqdm import tqdm

    for chunk in tqdm(batches, desc="generate", disable=not progress, dynamic_ncols=True):
        _, first = chunk[0]
        answers = generate([it.prompt for _, it in chunk], [it.description or NONE for _, it in chunk],
                           first.system, first.in_prompt, first.adapters)
        local.extend((i, a) for (i, _), a in zip(chunk, answers))
    answers = dict(_gather(local))
    if len(answers) != len(items):
        raise RuntimeError(f"compliance_eval: gathered {len(answers)} answers for {len(items)} items")
    rules = list(data.contexts)
    score = _scorer(data)
    result = ComplianceResult(rules, list(data.seen_contexts), list(data.unseen_contexts))
    for i, it in enumerate(items):
        answer = answers[i]
        row = result.counts.setdefault((it.condition, it.source), [0.0] * (1 + len(rules)))
        row[0] += 1
        for j, rule in enumerate(rules):
            row[1 + j] += float(score(rule, answer, it))
        result.answers.append((it, answer))
    return result
