"""Several descriptions at once, and a strength dial: one spelling for every interface.

Each entry of ``descriptions`` is a string or a list of strings; ``weights`` (optional) is
parallel: a number (or a one-element list) for a string, a list for a list. Two ways to combine:

``combine="modulation"`` (default): the weighted sum of the descriptions' modulations. The update
ΔW = s·B·M·A is linear in M (M = diag(z) or the square Z), so the sum of modulations is exactly
the sum of the weight updates: ``[a, b]`` with weights ``[1, 1]`` is adapter a plus adapter b,
weights default to 1/n (the mean), a weight 0 on a lone description is the base model exactly,
``[d, d]`` is exactly ``d``, and a weight above 1 strengthens a context. Exact for diag and
square; full mode (the hypernetwork emits A and B themselves) is refused, since a sum of factors
is not a sum of updates.

``combine="text"``: the descriptions joined into one sentence for the encoder ("a b"); weights
are refused there (they have no meaning for a text).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

COMBINE = ("modulation", "text")
Entry = tuple[tuple[str, ...], tuple[float, ...]]


def _weights_of(texts: tuple[str, ...], given, where: str) -> tuple[float, ...]:
    if given is None:
        return tuple(1.0 / len(texts) for _ in texts)
    values = [given] if isinstance(given, (int, float)) and not isinstance(given, bool) else given
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != len(texts):
        raise ValueError(f"weights{where}: expected {len(texts)} number(s), one per description, got {given!r}")
    out = []
    for w in values:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights{where}: expected finite numbers, got {w!r}")
        out.append(float(w))
    return tuple(out)


def entries(descriptions, weights=None, n: int | None = None) -> list[Entry]:
    """Normalised ``[(texts, weights), ...]``; a lone string is broadcast to ``n`` rows."""
    if isinstance(descriptions, str):
        descriptions = [descriptions] * (n or 1)
        weights = None if weights is None else [weights] * (n or 1)
    descriptions = list(descriptions)
    if n is not None and len(descriptions) != n:
        raise ValueError(f"descriptions: expected one per prompt ({n}), got {len(descriptions)}")
    if weights is not None and (isinstance(weights, (str, bytes)) or len(weights) != len(descriptions)):
        raise ValueError(f"weights: expected one entry per description entry ({len(descriptions)}), got {weights!r}")
    out = []
    for i, d in enumerate(descriptions):
        texts = (d,) if isinstance(d, str) else tuple(d) if isinstance(d, Sequence) else None
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"descriptions[{i}]: expected a non-empty string or a non-empty list of them, got {d!r}")
        given = None if weights is None else weights[i]
        lone = None if weights is not None or len(texts) > 1 else (1.0,)
        out.append((texts, lone or _weights_of(texts, given, f"[{i}]")))
    return out


def as_text(entry: Entry) -> str:
    """The entry as one description (``combine="text"``, and the prompt of description_in_prompt)."""
    return " ".join(t.strip() for t in entry[0])


def _weighted(items: Sequence[Entry]) -> bool:
    """Whether any entry carries weights other than the defaults (1 for one description, 1/n for n)."""
    return any(w != tuple(1.0 / len(t) for _ in t) and w != (1.0,) for t, w in items)


def full_mode_refusal(items: Sequence[Entry]) -> str:
    """The one message (library, CLI, server) for what a full-mode checkpoint cannot combine, with advice
    that works there: weights are dropped; several descriptions are joined with combine='text'."""
    why = ("in full mode the hypernetwork emits the LoRA factors A and B themselves, and a weighted sum of factors "
           "is not a weighted sum of updates (weights and sums need a diag or square checkpoint)")
    if _weighted(items):
        several = any(len(t) > 1 for t, _ in items)
        return (f"weights: {why}: drop the weights" + ("; to combine several descriptions, join them with "
                                                        "combine='text' (without weights)" if several else ""))
    return f"combine='modulation': {why}: join them with combine='text'"


def check_combine(combine: str, items: Sequence[Entry], mode: str) -> None:
    if combine not in COMBINE:
        raise ValueError(f"combine: expected one of {list(COMBINE)}, got {combine!r}")
    if mode == "full" and (_weighted(items) or (combine == "modulation" and any(len(t) > 1 for t, _ in items))):
        raise ValueError(full_mode_refusal(items))
    if combine == "text" and _weighted(items):
        raise ValueError("weights: combine='text' joins the descriptions into one sentence; weights apply to "
                         "combine='modulation' only")


def weighted(modulation: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(n, ...) rows: ``matrix`` (n, u) times the unique descriptions' modulations (u, ...)."""
    flat = modulation.reshape(modulation.shape[0], -1)
    return (matrix.to(flat) @ flat).reshape(matrix.shape[0], *modulation.shape[1:])


def modulation(model, descriptions, weights=None, combine: str = "modulation", check_finite: bool = False):
    """The (n, ...) modulation of each entry of ``descriptions`` for a ZhyperModel (see the module docstring).

    ``check_finite=True``: a row that holds NaN or inf, or that makes the model's output NaN or inf
    (``check_output``: a huge weight such as 1e30 keeps the modulation finite but overflows the base
    model's activations: an empty or garbage answer), raises ``FloatingPointError`` naming the entry."""
    items = entries(descriptions, weights)
    check_combine(combine, items, model.config.mode)
    if combine == "text" or all(w == (1.0,) for _, w in items):
        out = model.modulation_for([as_text(e) for e in items], check_finite=check_finite)
    else:
        unique = list(dict.fromkeys(t for texts, _ in items for t in texts))
        index = {t: j for j, t in enumerate(unique)}
        matrix = torch.zeros(len(items), len(unique), dtype=torch.float64)
        for i, (texts, ws) in enumerate(items):
            for t, w in zip(texts, ws):
                matrix[i, index[t]] += w
        base = model.modulation_for(unique, check_finite=check_finite)
        if isinstance(base, dict):
            raise ValueError(full_mode_refusal(items))
        out = weighted(base, matrix)
        if check_finite:
            _refuse(items, ~torch.isfinite(out.reshape(len(items), -1)).all(dim=1), "holds NaN or inf")
    if check_finite:
        check_output(model, out, items)
    return out


def _refuse(items: Sequence[Entry], bad: torch.Tensor, what: str) -> None:
    """Raise FloatingPointError naming the entries whose row is ``bad`` (a bool per row)."""
    rows = [items[i] for i in bad.nonzero().flatten().tolist()]
    if not rows:
        return
    texts, ws = rows[0]
    more = f" (and {len(rows) - 1} more entries)" if len(rows) > 1 else ""
    if ws == (1.0,) or ws == tuple(1.0 / len(texts) for _ in texts):
        raise FloatingPointError(f"the modulation for description(s) {list(texts)!r}{more} {what}: it cannot be used "
                                 "(a diverged or overflowing hypernetwork; check the checkpoint's weights)")
    raise FloatingPointError(f"the modulation of weight(s) {list(ws)!r} for {list(texts)!r}{more} {what}: it cannot "
                             "be used; use a smaller weight (1 is as trained)")


PROBE = "Hello! How are you?"  # what check_output runs the base model on


@torch.no_grad()
def check_output(model, modulation, items: Sequence[Entry]) -> None:
    """Raise ``FloatingPointError`` when the base model, run on a short probe text under a row of
    ``modulation``, overflows: a logit is NaN or inf, or a hidden state's mean square is not finite in
    float32 (what an RMS or layer norm computes: past that the norm turns the state into zeros or NaN,
    the logits go flat and the answer comes out empty; a weight of 1e20 on a sane checkpoint does it)."""
    n = len(items)
    device = next(iter(model.base.parameters())).device
    if device.type == "meta":  # a weightless base (the copy a training run saves from): nothing to run the probe on
        return
    tokenizer = model.tokenizer
    ids = (tokenizer(PROBE, return_tensors="pt", add_special_tokens=False)["input_ids"] if tokenizer is not None
           else torch.arange(1, 5)[None])
    was_training = model.base.training
    model.base.eval()
    try:
        with model.conditioned(modulation):
            out = model.base(input_ids=ids.to(device).expand(n, -1), output_hidden_states=True)
    finally:
        model.base.train(was_training)
    bad = ~torch.isfinite(out.logits.reshape(n, -1)).all(dim=1)
    for hidden in out.hidden_states or ():
        bad |= ~torch.isfinite(hidden.float().pow(2).mean(dim=-1)).all(dim=1).to(bad.device)
    _refuse(items, bad.cpu(), "overflows the base model's activations (its answers would be empty or garbage)")
