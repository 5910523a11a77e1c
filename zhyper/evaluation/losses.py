"""Validation losses and paired conditioning gaps, computed over rank shares.

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
import torch.nn.functional as F

from zhyper.data.chat import IGNORE_INDEX

log = logging.getLogger(__name__)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor):
    """Summed response-token loss and token count per example: two (b,) tensors."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = shift_labels != IGNORE_INDEX
    return (tok * mask).sum(1), mask.sum(1)


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


DESCRIPTION_SOURCES = ("heldout", "paraphrase", "wrong")


def eval_items(data, split: str, max_examples: int, description: str = "heldout", seed: int = 0) -> list[EvalItem]:
    """Up to ``max_examples`` rows of ``split``, each with one description drawn as ``description`` says.

    ``"heldout"``: one of the context's held-out descriptions (all of an unseen context's are);
    ``"paraphrase"``: one of its held-out paraphrases (``data.paraphrases``; never trained on);
    ``"wrong"``: a held-out description of another context of the same split (the next one in
    sorted order), for the paired gap. The rows are the same for every source at a given seed.
    """
    import random

    if description not in DESCRIPTION_SOURCES:
        raise ValueError(f"description: expected one of {DESCRIPTION_SOURCES}, got {description!r}")
    rows = data.split(split)
    if len(rows) == 0:
        return []
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    order = order[:max_examples]
    contexts = sorted(set(rows["context"]))
    if description == "wrong" and len(contexts) < 2:
        return []
    paraphrases = getattr(data, "paraphrases", None) or {}
    if description == "paraphrase" and not all(paraphrases.get(c) for c in contexts):
        return []
    items = []
    for i in order:
        row = rows[i]
        ctx = row["context"]
        if description == "wrong":
            ctx = contexts[(contexts.index(ctx) + 1) % len(contexts)]
        pool = (paraphrases[ctx] if description == "paraphrase"
                else data.heldout_descriptions.get(ctx) or data.descriptions[ctx])
        drawn = pool[rng.randrange(len(pool))]
        if description == "heldout" and row.get("description"):  # a target made for this row's own description
            drawn = row["description"]
        items.append(EvalItem(row["prompt"], row["response"], row.get("system") or "", row["context"], drawn))
    return items


def _gap_metrics(prefix: str, forward, collator, encode, data, split: str, rank: int, world: int,
                 max_examples: int, batch_size: int, sources: tuple[str, ...]) -> dict[str, float]:
    """Losses of ``split`` under each description source, and each source's paired gap against "wrong"."""
    out: dict[str, float] = {}
    scored, heldout_items = {}, []
    for source in ("wrong", *sources):
        items = eval_items(data, split, max_examples, description=source)
        if items:
            scored[source] = example_losses(forward, collator, encode, items, rank, world, batch_size)
            heldout_items = items if source == "heldout" else heldout_items
    for source, (loss, n) in scored.items():
        name = f"val_{prefix}_loss" if source == "heldout" else f"val_{prefix}_{source}_loss"
        out[name] = float(loss.sum() / n.sum().clamp_min(1))
    scored, heldout_items, unpaired = paired_only(scored, heldout_items)
    if unpaired:
        log.warning("%s gaps: %d example(s) left out: the description in the prompt left them fewer response "
                    "tokens within max_length under one description than under another", prefix, unpaired)
        out[f"{prefix}_gap_unpaired"] = float(unpaired)
    for source in scored:
        if source != "wrong" and "wrong" in scored:
            gap = f"{prefix}_gap" if source == "heldout" else f"{prefix}_{source}_gap"
            out[gap], out[f"{gap}_se"] = paired_gap(scored[source], scored["wrong"])
    if "heldout" in scored and "wrong" in scored:
        out.update(context_gaps(prefix, heldout_items, scored["heldout"], scored["wrong"]))
    return out


def paired_only(scored: dict[str, tuple[torch.Tensor, torch.Tensor]], items: list
                ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list, int]:
    """The examples scored on the same response tokens under every description source, and how many were not.

    With the description written into the prompt (``data.description_in_prompt``) a longer
    description can leave fewer response tokens within ``max_length``; such an example cannot be
    paired. Returns (``scored`` restricted to the rest, ``items`` likewise, the number left out).
    """
    if not scored:
        return scored, items, 0
    counts = torch.stack([n for _, n in scored.values()])
    same = (counts == counts[0]).all(dim=0)
    unpaired = int((~same).sum())
    if unpaired == 0:
        return scored, items, 0
    idx = same.nonzero().squeeze(1)
    kept = [items[i] for i in idx.tolist()] if items else items
    return {k: (loss[idx], n[idx]) for k, (loss, n) in scored.items()}, kept, unpaired


MAX_CONTEXT_GAPS = 8  # per-context gaps are reported for runs with at most this many contexts (e.g. cultures)


def context_gaps(prefix: str, items: list[EvalItem], right, wrong) -> dict[str, float]:
    """``{prefix}_gap/<context>`` and its ``_se``: the paired gap on each context's own examples (the same
    rows, its own held-out description against another context's), when there are 2..MAX_CONTEXT_GAPS."""
    contexts = sorted({it.context for it in items})
    if not 2 <= len(contexts) <= MAX_CONTEXT_GAPS:
        return {}
    out = {}
    for c in contexts:
        idx = torch.tensor([i for i, it in enumerate(items) if it.context == c])
        g, se = paired_gap((right[0][idx], right[1][idx]), (wrong[0][idx], wrong[1][idx]))
        out[f"{prefix}_gap/{c}"], out[f"{prefix}_gap_se/{c}"] = g, se
    return out


def validation_metrics(forward, collator, encode, data, rank: int, world: int, max_examples: int,
                       batch_size: int) -> dict[str, float]:
    """Validation losses and paired gaps (right description minus another context's, same examples).

    Seen contexts (validation rows): ``val_seen_loss`` with held-out descriptions,
    ``val_seen_paraphrase_loss`` with held-out paraphrases (when the data has them),
    ``val_seen_wrong_loss``; ``seen_gap`` (also under its historical name ``conditioning_gap``) and
    ``seen_paraphrase_gap``, each with ``*_se``. Unseen contexts: ``val_unseen_loss``,
    ``val_unseen_wrong_loss`` and ``unseen_gap`` (+ ``unseen_gap_se``) when there are two or more.
    """
    out = _gap_metrics("seen", forward, collator, encode, data, "validation", rank, world, max_examples, batch_size,
                       ("heldout", "paraphrase"))
    if "seen_gap" in out:
        out["conditioning_gap"], out["conditioning_gap_se"] = out["seen_gap"], out["seen_gap_se"]
    out.update(_gap_metrics("unseen", forward, collator, encode, data, "unseen", rank, world, max_examples,
                            batch_size, ("heldout",)))
    return out
