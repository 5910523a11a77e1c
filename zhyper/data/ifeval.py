"""``data.source: ifeval``: IFEval's instruction types as contexts, targets that keep the base model's content.

Contexts are instruction ids of IFEval's official registry (``ifeval_checkers``). Every training
row has its own description, an official instruction text drawn with ``build_description`` (new
numbers, keywords and phrases per draw), and a target made from the base model's own answer to
the plain prompt (generated once and cached on disk by model and prompt: ``cached_answers``, called
by ``zhyper.generation.plain_answers``),
reshaped for that draw (``ifeval_transforms``) and kept only if the official checker passes it.
Prompts are the project's own (``ifeval_prompts.yaml``: 360 task x topic prompts), never IFEval's.

Splits: prompts are split train / validation (``validation_prompts``); draws are split too
(training draws vs held-out draws from another seed range). ``HELDOUT_TYPES`` (5 types from 4 of
IFEval's categories) are never trained: their rows are split "unseen".

Pairs (``pairs=n``, ``data.pairs``): n extra training rows, each under two seen types at once: the
answer reshaped by both transformations in turn, kept only if both official checkers pass, the
description the two instruction texts joined (as ``combine="text"`` joins them), the context the
first type's. ``EVAL_PAIRS`` (the pairs the composition evaluation measures) are never drawn, so
that evaluation measures pairs the model never saw together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from .base import ContextData

log = logging.getLogger(__name__)

HELDOUT_TYPES = ("startend:quotation", "detectable_format:title", "keywords:forbidden_words",
                 "length_constraints:number_paragraphs", "change_case:capital_word_frequency")
# the pairs the composition evaluation measures (their checkers can both pass); never trained as pairs
EVAL_PAIRS = (("punctuation:no_comma", "detectable_content:postscript"),
              ("change_case:english_lowercase", "detectable_format:number_bullet_lists"),
              ("detectable_format:json_format", "change_case:english_lowercase"),
              ("detectable_content:postscript", "detectable_format:number_highlighted_sections"))
HELDOUT_DRAW_OFFSET = 100_000  # held-out draws use seeds from here on: never a training draw's seed


@lru_cache(maxsize=1)
def training_prompts() -> tuple[str, ...]:
    """The 360 shipped training prompts (template x topic), in a fixed order."""
    import yaml

    raw = yaml.safe_load(resources.files("zhyper.data").joinpath("ifeval_prompts.yaml").read_text("utf-8"))
    return tuple(t.format(topic=topic) for topic in raw["topics"] for t in raw["templates"])


def complete_sentences(text: str) -> str:
    """Drop a trailing unfinished sentence (generation stopped at the token limit)."""
    text = text.strip()
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), text.rfind(".\n"))
    if text.endswith((".", "!", "?")) or cut < 0:
        return text
    return text[:cut + 1].strip()


def _cache_file(base_model: str, max_new_tokens: int):
    from zhyper.base_model import base_identity, cache_dir

    name, revision = base_identity(base_model)
    key = hashlib.sha256(f"{name}|{revision}|{max_new_tokens}".encode()).hexdigest()[:16]
    return cache_dir() / "base_answers" / f"{key}.jsonl"


def _read_cache(path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {row["prompt"]: row["answer"] for row in map(json.loads, path.read_text("utf-8").splitlines())}


def cached_answers(base_model: str, prompts, make, max_new_tokens: int = 96) -> dict[str, str]:
    """{prompt: the base model's plain answer}, from the disk cache or made by ``make(missing, save)``.

    The cache file is keyed by (model id, revision, max_new_tokens); ``make`` generates the missing
    prompts' answers and calls ``save({prompt: answer})`` after each batch (an interrupted run keeps
    what it made). It runs under a file lock: one process generates, the others wait and read.
    ``zhyper.generation.plain_answers`` is the generating caller.
    """
    from zhyper.io import atomic_write, file_lock

    path = _cache_file(base_model, max_new_tokens)
    with file_lock(path.with_suffix(".lock"), what="the base-answer cache"):
        cached = _read_cache(path)
        missing = [p for p in dict.fromkeys(prompts) if p not in cached]

        def save(batch: dict[str, str]) -> None:
            cached.update({p: complete_sentences(a) for p, a in batch.items()})
            atomic_write(path, "".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in cached.items()))

        if missing:
            log.info("generating the base model's answers to %d prompts (once; cached in %s)", len(missing), path)
            make(missing, save)
    return {p: cached[p] for p in prompts}


def read_answers(path) -> dict[str, str]:
    """{prompt: answer} from a JSONL of ``{"prompt": ..., "answer": ...}`` rows (errors name the line)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path {path}: no such file; expected a JSONL of {{prompt, answer}} rows")
    out = {}
    for i, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["prompt"])] = str(row["answer"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{i}: expected a JSON object with 'prompt' and 'answer', got {line[:80]!r}") \
                from None
    return out


@dataclass
class IFEvalSuite(ContextData):
    """ContextData of IFEval instruction types; ``score`` is the official checker.

    instructions: {description text: (instruction id, parameters)} of every draw the data holds.
    canonical: {instruction id: parameters} used to score an answer with another type's checker.
    Extra example columns: description (the row's own), kwargs (JSON), base_answer; second and
    second_kwargs: a pair row's second type and its parameters ("" and "{}" otherwise).
    """

    instructions: dict = field(default_factory=dict)
    canonical: dict = field(default_factory=dict)

    def kwargs_for(self, rule: str, description: str | None) -> dict:
        found = self.instructions.get(description or "")
        return dict(found[1]) if found and found[0] == rule else dict(self.canonical[rule])

    def score(self, rule: str, answer: str, description: str | None = None, prompt: str = "") -> bool:
        """The official strict checker of ``rule``, with ``description``'s parameters when it is one of rule's."""
        from .ifeval_checkers import check

        if rule not in self.canonical:
            raise ValueError(f"rule: expected one of {sorted(self.canonical)}, got {rule!r}")
        return check(rule, self.kwargs_for(rule, description), answer.strip(), prompt)


def trainable_types(registry_ids) -> list[str]:
    """The registry's ids that have a faithful transformation, in registry order."""
    from .ifeval_transforms import TRANSFORMS

    return [i for i in registry_ids if i in TRANSFORMS]


def _draws(instruction_id: str, seeds, prompt_of) -> list[tuple[str, dict, int]]:
    """(description, parameters, seed) per seed; ``prompt_of(seed)`` for the types that quote the prompt."""
    from .ifeval_checkers import draw

    out = []
    for s in seeds:
        text, kw = draw(instruction_id, s, prompt_of(s))
        kw.pop("prompt_to_repeat", None)  # the prompt is the row's own; checked with it
        out.append((text, kw, s))
    return out


def _rows(instruction_id: str, draws, prompts: list[str], answers: dict[str, str], per_draw: int, split: str,
          rng: random.Random, stats: dict) -> list[dict]:
    """Rows of one type: each draw paired with ``per_draw`` prompts; a target kept only if the checker passes."""
    from .ifeval_checkers import check
    from .ifeval_transforms import transform

    rows = []
    for text, kw, _ in draws:
        for prompt in rng.sample(prompts, min(per_draw, len(prompts))):
            target = transform(instruction_id, answers[prompt], kw, prompt)
            ok = target is not None and check(instruction_id, kw, target, prompt)
            stats[instruction_id][0] += 1
            stats[instruction_id][1] += int(ok)
            if ok:
                rows.append({"context": instruction_id, "prompt": prompt, "response": target, "split": split,
                             "system": "", "description": text, "kwargs": json.dumps(kw),
                             "base_answer": answers[prompt], "second": "", "second_kwargs": "{}"})
    return rows


def _pair_rows(seen: list[str], prompts: list[str], answers: dict[str, str], n: int, seed: int,
               rng: random.Random) -> list[dict]:
    """Up to ``n`` training rows under two seen types at once (see the module docstring), from training draws."""
    from .ifeval_checkers import check
    from .ifeval_transforms import transform

    excluded = {frozenset(p) for p in EVAL_PAIRS}
    rows, tries = [], 0
    while len(rows) < n and tries < 20 * n:
        tries += 1
        first, second = rng.sample(seen, 2)
        if frozenset((first, second)) in excluded:
            continue
        prompt = rng.choice(prompts)
        draws = [_draws(t, [seed * 10_000 + rng.randrange(10_000)], lambda s: "")[0][:2] for t in (first, second)]
        target = answers[prompt]
        for t, (_, kw) in zip((first, second), draws):
            target = transform(t, target, kw, prompt) if target is not None else None
        if target is None or not all(check(t, kw, target, prompt) for t, (_, kw) in zip((first, second), draws)):
            continue
        rows.append({"context": first, "prompt": prompt, "response": target, "split": "train", "system": "",
                     "description": f"{draws[0][0].strip()} {draws[1][0].strip()}", "kwargs": json.dumps(draws[0][1]),
                     "base_answer": answers[prompt], "second": second, "second_kwargs": json.dumps(draws[1][1])})
    log.info("ifeval pairs: %d rows kept from %d candidates", len(rows), tries)
    return rows


def load_ifeval(answers: dict[str, str], seed: int = 0, train_draws: int = 24, heldout_draws: int = 8,
                per_draw: int = 8, validation_prompts: int = 60, heldout_types=HELDOUT_TYPES,
                pairs: int = 0) -> IFEvalSuite:
    """The IFEval data source (see the module docstring); per-type candidate/pass counts are logged.

    ``answers``: {prompt: plain answer} for every ``training_prompts()`` prompt, normally the base
    model's own (``zhyper.generation.plain_answers``) or a file of them (``read_answers``).
    """
    from datasets import Dataset

    from .ifeval_checkers import registry

    types = trainable_types(registry())
    unknown = sorted(set(heldout_types) - set(types))
    if unknown:
        raise ValueError(f"heldout_types: {unknown} are not trainable IFEval types; expected some of {types}")
    prompts = list(training_prompts())
    rng = random.Random(f"ifeval:{seed}")
    rng.shuffle(prompts)
    val_prompts, train_prompts = prompts[:validation_prompts], prompts[validation_prompts:]
    missing = [p for p in prompts if not answers.get(p)]
    if missing:
        raise ValueError(f"answers: no plain answer for {len(missing)} prompts, e.g. {missing[0]!r}")
    stats = {t: [0, 0] for t in types}
    rows, train_desc, held_desc, instructions, canonical = [], {}, {}, {}, {}
    for t in types:
        held = _draws(t, range(HELDOUT_DRAW_OFFSET, HELDOUT_DRAW_OFFSET + heldout_draws), lambda s: "")
        canonical[t] = held[0][1]
        unseen = t in heldout_types
        rows += _rows(t, held, val_prompts, answers, max(1, per_draw // 2), "unseen" if unseen else "validation",
                      rng, stats)
        if not unseen:
            draws = _draws(t, range(seed * 10_000, seed * 10_000 + train_draws), lambda s: "")
            rows += _rows(t, draws, train_prompts, answers, per_draw, "train", rng, stats)
            train_desc[t] = list(dict.fromkeys(d for d, _, _ in draws))
            instructions.update({d: (t, kw) for d, kw, _ in draws})
        held_desc[t] = list(dict.fromkeys(d for d, _, _ in held))
        instructions.update({d: (t, kw) for d, kw, _ in held})
    for t, (n, ok) in stats.items():
        log.info("ifeval %-45s %4d / %4d candidate targets pass the official checker", t, ok, n)
    seen = [t for t in types if t not in heldout_types]
    if pairs:
        rows += _pair_rows(seen, train_prompts, answers, pairs, seed, rng)
    suite = IFEvalSuite(Dataset.from_list(rows), train_desc, held_desc, seen, [t for t in types if t in heldout_types],
                        instructions=instructions, canonical=canonical)
    suite.pass_counts = {t: tuple(v) for t, v in stats.items()}
    return suite
