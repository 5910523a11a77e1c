"""Evaluation inside a run, on the live engine: validation losses and gaps, then rule compliance.

Losses run through the engine (every rank its share; under ZeRO-3 each forward gathers what it
needs). Generation runs on the engine's own module: under ZeRO-3 its parameters are gathered once
for the whole evaluation (DeepSpeed's ``unwrap_model_for_generation``), so no second copy of the
base model is ever built, and each rank answers its share of the prompts independently.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def loss_metrics(engine, collator, run, cfg, rank: int, world: int) -> dict[str, float]:
    """Validation losses and paired gaps (``zhyper.evaluation.losses.validation_metrics``)."""
    from zhyper.evaluation.losses import validation_metrics

    def forward(ids, mask, emb):
        return engine(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device),
                      context_embeddings=emb).logits

    engine.eval()
    try:
        return validation_metrics(forward, collator, run.table, run.data, rank, world, cfg.eval.max_examples,
                                  cfg.eval.batch_size)
    finally:
        engine.train()


@contextmanager
def generation_module(engine) -> Iterator[torch.nn.Module]:
    """The engine's module, whole: ZeRO-3 parameters gathered for the block (one copy, the engine's)."""
    if engine.zero_optimization_stage() == 3:
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        ctx = unwrap_model_for_generation(engine)
    else:
        ctx = nullcontext(engine.module)
    with ctx as module:
        was_training = module.training
        module.eval()
        try:
            yield module
        finally:
            module.train(was_training)


def compliance(engine, run, cfg, rank: int, world: int, progress: bool = False):
    """Rule compliance under every condition (``zhyper.evaluation.compliance``), or None without checkers."""
    from zhyper.evaluation.compliance import compliance_eval, generation_items

    if not cfg.eval.generate or not hasattr(run.data, "score"):
        return None
    items = generation_items(run.data, cfg.eval.prompts, cfg.eval.paraphrases_per_prompt, cfg.eval.controls,
                             description_in_prompt=cfg.data.description_in_prompt, base_prompt=cfg.eval.base_prompt)
    with generation_module(engine) as model:
        def generate(prompts, descriptions, system, in_prompt, adapters, max_new_tokens=cfg.eval.max_new_tokens):
            kwargs = dict(system=system, description_in_prompt=in_prompt, max_new_tokens=max_new_tokens,
                          do_sample=False)
            if adapters:
                return model.generate(prompts, descriptions, **kwargs)
            with model.adapters_off():
                return model.generate(prompts, descriptions, **kwargs)

        result = compliance_eval(generate, run.data, items, rank, world, cfg.eval.generate_batch_size,
                                 progress=progress)
        if cfg.eval.retention:
            result.retention = retention(generate, run.data, cfg, rank, world)
        return result


def retention(generate, data, cfg, rank: int, world: int):
    """Content retention (``zhyper.evaluation.retention``) under each seen context's first held-out description.

    A method that reads the description from its prompt (``data.description_in_prompt``) gets it there.
    """
    from zhyper.evaluation.retention import retention_eval

    descriptions = {c: (data.heldout_descriptions.get(c) or data.descriptions[c])[0] for c in data.seen_contexts}
    size, in_prompt = cfg.eval.generate_batch_size, cfg.data.description_in_prompt

    def ask(questions, description):
        out = []
        for i in range(0, len(questions), size):
            chunk = questions[i:i + size]
            out += generate(chunk, [description or "none"] * len(chunk), "", in_prompt and description is not None,
                            description is not None, max_new_tokens=cfg.eval.retention_tokens)
        return out

    return retention_eval(ask, descriptions, cfg.eval.retention, rank, world)


def diagnostics(cfg, paths: dict):
    """Rank 0: the failure signatures of the written checkpoint on its contexts' descriptions (None for LoRA);
    a warning in the log for each failure regime the run falls in."""
    if cfg.method != "zhyper" or "checkpoint" not in paths:
        return None
    import logging

    from zhyper.evaluation.diagnostics import inspect_checkpoint

    found = inspect_checkpoint(paths["checkpoint"])
    for warning in found.warnings():
        logging.getLogger(__name__).warning("%s", warning)
    return found
