"""The next token of every row from the step's logits, and the verdict on a row whose output is unusable.

Greedy rows are one batched argmax (``max`` over the vocabulary gives the maximum and its first index in
one pass; a second pass gives the minimum). A row whose logits are not finite (the maximum and minimum
carry inf and propagate NaN) or constant (every token equally likely: what a final norm gives when the
activations overflowed float32) fails alone, as does a row whose sampling raises; the other rows keep
their tokens. Sampling runs in float64 on ``(logits - max) / temperature``, whose largest entry is
exactly 0, so no temperature > 0 can produce inf or NaN.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .logsafe import safe_logger
from .requests import Request, SamplingParams, quote

logger = safe_logger(__name__)

Failure = tuple[str, str, int]  # (message, code, HTTP status)


def choose(logits: torch.Tensor, rows: Sequence) -> tuple[torch.Tensor, list[tuple[object, Failure]]]:
    """(next token per row (b,), [(row, failure), ...]) for logits (b, V); finished or cancelled rows are
    skipped (their token is never used)."""
    high, tokens = logits.max(-1)  # one pass: the maximum and its first index (what argmax gives)
    low = logits.amin(-1)
    finite = (torch.isfinite(high) & torch.isfinite(low) & (high > low)).tolist()
    failures = []
    for i, row in enumerate(rows):
        if not row.live:
            continue
        if not finite[i]:
            failures.append((row, non_finite(row.request)))
        elif not row.params.greedy:
            try:
                tokens[i] = sample(logits[i], row.params, row.generator)
            except Exception as exc:
                logger.exception("request %s: sampling failed", row.request.name)
                failures.append((row, (f"sampling failed for this request ({type(exc).__name__}: {exc}); the other "
                                       "requests were not affected", "sampling_failed", 500)))
    return tokens, failures


def sample(logits: torch.Tensor, params: SamplingParams, generator) -> torch.Tensor:
    """One token from a row's finite logits (V,): float64, max-shifted before dividing by the temperature,
    so the largest score is exactly 0 at any temperature > 0 (tiny ones give -inf elsewhere: argmax)."""
    scores = logits.double()
    scores = (scores - scores.max()) / float(params.temperature)
    if params.top_p < 1.0:
        from transformers.generation.logits_process import TopPLogitsWarper

        empty = torch.empty((1, 0), dtype=torch.long, device=logits.device)
        scores = TopPLogitsWarper(float(params.top_p))(empty, scores[None])[0]
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)[0]


def non_finite(request: Request) -> Failure:
    """(message, code, status) of a row whose output is not finite: the request's weights when they amplify
    (their magnitudes sum past 1, so the row leaves the span of its descriptions' own rows), else the checkpoint."""
    weights = request.weights
    if weights is not None and sum(abs(w) for w in weights) > 1 + 1e-6:
        return (f"the modulation of {quote(request.description)} weighted by {list(weights)} overflows the base "
                "model's activations (its output is NaN or inf): use smaller weights (magnitudes summing to 1 "
                "at most stay within the descriptions' own modulations)", "invalid_weights", 400)
    return non_finite_output(request.description), "non_finite_output", 500


def non_finite_output(description: str | None) -> str:
    if description is None:
        return ("the base model's output for this prompt is not finite (NaN or inf) or carries no information "
                "(every token equally likely); nothing is returned")
    return (f"the model's output for description {quote(description)} is not finite (NaN or inf) or carries no "
            "information (every token equally likely): the checkpoint's modulation for it overflows the base "
            "model's activations (a diverged or corrupted hypernetwork); refused rather than answering with an "
            "empty text")
