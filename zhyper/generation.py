"""Batched generation with per-row descriptions: left padding, chat template, one modulation per row."""

from __future__ import annotations

from typing import Sequence

import torch

from zhyper.layers.inject import modulate


def _as_list(value, n: int | None, argument: str) -> list[str]:
    if isinstance(value, str):
        return [value] * (n or 1)
    values = list(value)
    if n is not None and len(values) != n:
        raise ValueError(f"{argument}: expected one per prompt ({n}), got {len(values)}")
    return values


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


@torch.no_grad()
def generate(model, prompts: Sequence[str] | str, descriptions: Sequence[str] | str, system: str = "",
             description_in_prompt: bool = False, **gen_kwargs) -> list[str]:
    """Decoded answers (new tokens only), row i conditioned on descriptions[i]; greedy unless told otherwise."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("generate needs a tokenizer: pass tokenizer= to ZhyperModel.from_base / from_pretrained")
    prompts = _as_list(prompts, None, "prompts")
    descriptions = _as_list(descriptions, len(prompts), "descriptions")
    texts = format_prompts(tokenizer, prompts, descriptions, system, description_in_prompt)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(iter(model.base.parameters())).device
    batch = {k: v.to(device) for k, v in batch.items()}
    gen_kwargs.setdefault("do_sample", False)
    gen_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
    k = int(gen_kwargs.get("num_beams", 1) or 1) * int(gen_kwargs.get("num_return_sequences", 1) or 1)
    modulation = _expand(model.modulation_for(descriptions), k)
    was_training = model.training
    model.eval()
    try:
        with modulate(model.base, model.layout, modulation):
            out = model.base.generate(**batch, **gen_kwargs)
    finally:
        model.train(was_training)
    new = out[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new, skip_special_tokens=True)
