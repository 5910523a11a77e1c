"""Batched generation with per-row descriptions: left padding, chat template, one modulation per row."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch



def _as_list(value, n: int | None, argument: str) -> list[str]:
    if isinstance(value, str):
        return [value] * (n or 1)
    values = list(value)
    if n is not None and len(values) != n:
        raise ValueError(f"{argument}: expected one per prompt ({n}), got {len(values)}")
    if not values:
        raise ValueError(f"{argument}: expected at least one, got an empty list")
    return values


def rows_per_input(gen_kwargs: dict) -> int:
    """How many rows HF's generate runs per input row: num_beams for beam search, else num_return_sequences."""
    beams = int(gen_kwargs.get("num_beams", 1) or 1)
    sequences = int(gen_kwargs.get("num_return_sequences", 1) or 1)
    if sequences > beams > 1:
        raise ValueError(f"num_return_sequences ({sequences}) must not exceed num_beams ({beams}) in beam search")
    return beams if beams > 1 else sequences


def _expand(modulation, k: int):
    """Repeat every batch row k times (as HF does for beams / num_return_sequences)."""
    if k == 1:
        return modulation
    if isinstance(modulation, torch.Tensor):
        return modulation.repeat_interleave(k, dim=0)
    return {t: m.repeat_interleave(k, dim=0) for t, m in modulation.items()}


def format_prompts(tokenizer, prompts: Sequence[str], descriptions: Sequence[str], system: str = "",
                   description_in_prompt: bool = False) -> list[str]:
    """Chat-template texts ending with the assistant header (zhyper.data.format_prompt)."""
    from zhyper.data import format_prompt

    return [format_prompt(tokenizer, p, system=system, description=d, description_in_prompt=description_in_prompt)
            for p, d in zip(prompts, descriptions)]


def max_new_tokens_for(model, prompts: Sequence[str], requested: int | None, default: int = 128,
                       system: str = "") -> int:
    """The answer length for ``prompts`` on a ZhyperModel, bounded by its base's context as the server
    bounds a request: ``requested`` (given by the user) must fit beside the longest chat-formatted prompt,
    else ValueError naming both; without one, ``default`` capped by what the context leaves."""
    cfg = getattr(model.base, "config", None)
    context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
    if context is None or model.tokenizer is None:
        return requested if requested is not None else default
    texts = format_prompts(model.tokenizer, list(prompts), ["none"] * len(prompts), system)
    longest = max(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    wanted = requested if requested is not None else min(default, context - longest)
    if longest + max(wanted, 1) > context:
        raise ValueError(f"this model's maximum context length is {context} tokens; the answer needs "
                         f"{longest + max(wanted, 1)} ({longest} in the longest prompt, {max(wanted, 1)} in the "
                         f"answer): shorten the prompt or lower --max-new-tokens (max_new_tokens)")
    return wanted


@torch.no_grad()
def generate_texts(lm, tokenizer, prompts: Sequence[str] | str, descriptions: Sequence[str] | str, system: str = "",
                   description_in_prompt: bool = False, context=None, **gen_kwargs) -> list[str]:
    """Decoded new tokens of ``lm.generate`` for chat-formatted ``prompts`` (greedy unless told otherwise).

    ``context(descriptions, rows_per_input)`` may return a context manager to run generation in
    (ZhyperModel uses it to set the per-row modulation). Returns ``len(prompts) * num_return_sequences``
    answers, each input's sequences together.
    """
    if tokenizer is None:
        raise ValueError("generate needs a tokenizer: pass tokenizer= when building or loading the model")
    prompts = _as_list(prompts, None, "prompts")
    descriptions = _as_list(descriptions, len(prompts), "descriptions")
    k = rows_per_input(gen_kwargs)
    texts = format_prompts(tokenizer, prompts, descriptions, system, description_in_prompt)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(iter(lm.parameters())).device
    batch = {key: v.to(device) for key, v in batch.items()}
    gen_kwargs.setdefault("do_sample", False)
    gen_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
    was_training = lm.training
    lm.eval()
    try:
        with (context(descriptions, k) if context is not None else nullcontext()):
            out = lm.generate(**batch, **gen_kwargs)
    finally:
        lm.train(was_training)
    new = out[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


@torch.no_grad()
def generate(model, prompts: Sequence[str] | str, descriptions, system: str = "", description_in_prompt: bool = False,
             weights=None, combine: str = "modulation", check_finite: bool = True, **gen_kwargs) -> list[str]:
    """A ZhyperModel's answers: row i conditioned on descriptions[i] through the hypernetwork.

    ``check_finite``: a modulation holding NaN or inf is a ``FloatingPointError`` naming the
    description (never an empty or garbage answer).

    An entry of ``descriptions`` is a string or a list of strings, with optional ``weights``
    (``zhyper.compose``: combined as a weighted sum of modulations, or as one joined text).
    """
    from zhyper import compose

    prompts = _as_list(prompts, None, "prompts")
    items = compose.entries(descriptions, weights, len(prompts))
    compose.check_combine(combine, items, model.config.mode)

    def modulated(_, k):
        z = compose.modulation(model, [t for t, _ in items], [w for _, w in items], combine, check_finite)
        return model.conditioned(_expand(z, k))

    return generate_texts(model.base, model.tokenizer, prompts, [compose.as_text(e) for e in items], system=system,
                          description_in_prompt=description_in_prompt, context=modulated, **gen_kwargs)


def plain_answers(base_model: str, prompts: Sequence[str], max_new_tokens: int = 96, batch_size: int = 16,
                  progress: bool = True) -> dict[str, str]:
    """{prompt: the base model's greedy answer to the plain prompt} (chat template), generated once and cached.

    The cache (``zhyper.data.ifeval.cached_answers``) is keyed by model, revision and token limit.
    """
    from zhyper.data.ifeval import cached_answers

    def make(missing: list[str], save) -> None:
        from tqdm import tqdm
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from zhyper.base_model import resolve_base

        path = resolve_base(base_model)
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        for i in tqdm(range(0, len(missing), batch_size), desc="base answers", disable=not progress):
            chunk = missing[i:i + batch_size]
            save(dict(zip(chunk, generate_texts(lm, tok, chunk, ["none"] * len(chunk),
                                                max_new_tokens=max_new_tokens))))

    return cached_answers(base_model, list(prompts), make, max_new_tokens)
