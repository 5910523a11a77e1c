"""Evaluation of a Zhyper run: validation losses, the conditioning gap, rule-compliance accuracy.

Every rank computes its share and the sums are all-reduced, so rank 0 reports global
figures. Under ZeRO-3 every forward is a collective (parameters are gathered), so all ranks
must run the same number of batches: shards are padded with zero-weight repeats.

The conditioning gap is the loss with the right description minus the loss with a wrong one
(a description of another context) on the same examples: negative means the hypernetwork's
modulation carries the context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .objective import per_example_loss

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    prompt: str
    response: str
    system: str
    context: str
    description: str


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def shard(items: list, rank: int, world: int) -> tuple[list, list[float]]:
    """This rank's share, padded to the same length on every rank; weights 0 mark padding."""
    per_rank = -(-len(items) // world)
    mine = items[rank::world]
    weights = [1.0] * len(mine)
    while len(mine) < per_rank:
        mine.append(items[0])
        weights.append(0.0)
    return mine, weights


@torch.no_grad()
def example_losses(forward, collator, encode, items: list[EvalItem], rank: int, world: int,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response loss and response-token count of every item: two (len(items),) float64 tensors.

    Each rank computes its share; the results are all-reduced so every rank holds all of them.
    ``forward(input_ids, attention_mask, context_embeddings) -> logits``; ``encode(list[str])``
    returns (n, d_c) description embeddings.
    """
    mine, weights = shard(items, rank, world)
    index = list(range(rank, len(items), world))  # shard() takes items[rank::world], then pads
    out = torch.zeros(2, len(items), dtype=torch.float64)
    for i in range(0, len(mine), batch_size):
        chunk = mine[i:i + batch_size]
        batch = collator([{"prompt": it.prompt, "response": it.response, "system": it.system,
                           "description": it.description} for it in chunk])
        logits = forward(batch["input_ids"], batch["attention_mask"], encode(batch["descriptions"]))
        loss, n = per_example_loss(logits, batch["labels"])
        for j, w in enumerate(weights[i:i + batch_size]):
            if w:
                out[0, index[i + j]], out[1, index[i + j]] = float(loss[j]), float(n[j])
    out = _all_reduce(out)
    return out[0], out[1]


def mean_loss(forward, collator, encode, items: list[EvalItem], rank: int, world: int, batch_size: int) -> float:
    """Token-mean response loss over ``items`` (all ranks together)."""
    loss, n = example_losses(forward, collator, encode, items, rank, world, batch_size)
    return float(loss.sum() / n.sum().clamp_min(1))


def paired_gap(right: tuple[torch.Tensor, torch.Tensor], wrong: tuple[torch.Tensor, torch.Tensor]
               ) -> tuple[float, float]:
    """Token-mean loss difference (right - wrong) on the same examples and its standard error.

    ``right`` / ``wrong``: (loss sums, token counts) per example, as ``example_losses`` returns;
    both describe the same responses, so the counts agree. The error treats the examples as the
    sampled units (ratio estimator): the gap is clearly negative when gap + 2·se < 0.
    """
    (r, n), (w, n_wrong) = right, wrong
    if not torch.equal(n, n_wrong):
        raise ValueError("paired_gap: right and wrong must score the same responses (token counts differ)")
    total = float(n.sum())
    if total == 0:
        return 0.0, 0.0
    gap = float((r - w).sum()) / total
    m = len(n)
    resid = (r - w) - gap * n  # per-example deviation from the ratio
    se = (m / max(m - 1, 1) * float(resid.pow(2).sum())) ** 0.5 / total
    return gap, se


def eval_items(data, split: str, max_examples: int, wrong: bool = False, seed: int = 0) -> list[EvalItem]:
    """Up to ``max_examples`` rows of ``split`` with a held-out description of their context.

    With ``wrong=True`` each row gets a description of a different context of the same split
    (the next context in sorted order), for the conditioning gap.
    """
    import random

    rows = data.split(split)
    if len(rows) == 0:
        return []
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    order = order[:max_examples]
    contexts = sorted(set(rows["context"]))
    items = []
    for i in order:
        row = rows[i]
        ctx = row["context"]
        if wrong:
            if len(contexts) < 2:
                return []
            ctx = contexts[(contexts.index(ctx) + 1) % len(contexts)]
        pool = data.heldout_descriptions.get(ctx) or data.descriptions[ctx]
        items.append(EvalItem(row["prompt"], row["response"], row.get("system") or "", row["context"],
                              pool[rng.randrange(len(pool))]))
    return items


def validation_metrics(forward, collator, encode, data, rank: int, world: int, max_examples: int,
                       batch_size: int) -> dict[str, float]:
    """val_seen_loss (held-out descriptions), val_seen_wrong_loss, conditioning_gap (+ its standard
    error conditioning_gap_se, paired over examples), val_unseen_loss."""
    out: dict[str, float] = {}
    seen = eval_items(data, "validation", max_examples)
    if seen:
        right = example_losses(forward, collator, encode, seen, rank, world, batch_size)
        out["val_seen_loss"] = float(right[0].sum() / right[1].sum().clamp_min(1))
        wrong = eval_items(data, "validation", max_examples, wrong=True)
        if wrong:
            scored = example_losses(forward, collator, encode, wrong, rank, world, batch_size)
            out["val_seen_wrong_loss"] = float(scored[0].sum() / scored[1].sum().clamp_min(1))
            out["conditioning_gap"], out["conditioning_gap_se"] = paired_gap(right, scored)
    unseen = eval_items(data, "unseen", max_examples)
    if unseen:
        out["val_unseen_loss"] = mean_loss(forward, collator, encode, unseen, rank, world, batch_size)
    return out


def accuracy_table(model, data, rank: int, world: int, n_examples: int, max_new_tokens: int,
                   batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Rule-compliance accuracy of greedy answers, {condition: {split: accuracy}}, all ranks together.

    Conditions: ``base`` (adapters off, no description), ``base+prompt`` (adapters off,
    description in the prompt), ``zhyper`` (description only through the hypernetwork:
    held-out descriptions on seen contexts, any description on unseen contexts).
    ``model`` is a plain (non-DeepSpeed) ZhyperModel; ``data`` must have ``score``.
    """
    from zhyper.layers import adapters_disabled

    table: dict[str, dict[str, float]] = {}
    for split, label in (("validation", "seen"), ("unseen", "unseen")):
        items = eval_items(data, split, n_examples, seed=1)
        if not items:
            continue
        mine, weights = shard(items, rank, world)
        for condition in ("base", "base+prompt", "zhyper"):
            hits = torch.zeros(2, dtype=torch.float64)
            for i in range(0, len(mine), batch_size):
                chunk, w = mine[i:i + batch_size], weights[i:i + batch_size]
                prompts = [it.prompt for it in chunk]
                descs = [it.description for it in chunk]
                kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, system=chunk[0].system,
                              description_in_prompt=condition == "base+prompt")
                if any(it.system != chunk[0].system for it in chunk):
                    raise ValueError("accuracy_table: items of one batch must share their system message")
                if condition == "zhyper":
                    answers = model.generate(prompts, descs, **kwargs)
                else:
                    with adapters_disabled(model):
                        answers = model.generate(prompts, descs, **kwargs)
                for it, ans, wt in zip(chunk, answers, w):
                    hits += torch.tensor([wt * float(data.score(it.context, ans)), wt], dtype=torch.float64)
            hits = _all_reduce(hits)
            table.setdefault(condition, {})[label] = float(hits[0] / hits[1].clamp_min(1))
    return table


def describe_gap(gap: float, se: float) -> str:
    """One sentence on the conditioning gap and whether it is distinguishable from zero (2 s.e.)."""
    verdict = ("clearly negative: the modulation carries the description" if gap + 2 * se < 0 else
               "clearly positive: the right description hurts" if gap - 2 * se > 0 else
               "not distinguishable from zero: no conditioning effect measured")
    return f"Conditioning gap {gap:+.4f} ± {2 * se:.4f} nats/token (2 s.e., paired over examples): {verdict}."


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A small Markdown table of the accuracy figures."""
    splits = sorted({s for row in table.values() for s in row}, key=lambda s: s != "seen")
    lines = ["| condition | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for cond, row in table.items():
        lines.append(f"| {cond} | " + " | ".join(f"{row[s]:.3f}" if s in row else "-" for s in splits) + " |")
    return "\n".join(lines)
