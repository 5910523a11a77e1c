"""One optimizer step on the DeepSpeed engine: micro-batches -> forward -> backward -> step.

The loss is the summed response-token cross-entropy divided by the response tokens of the whole
step (every micro-batch, every rank: one all-reduce), and ``engine.backward(loss,
scale_wrt_gas=False)``, so k accumulated micro-batches give exactly the update of one batch of k
times the size; DeepSpeed averages gradients over ranks, hence the division by ``tokens / world``.
A loss that is not finite stops the run before anything is checkpointed or exported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch



class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class StepResult:
    loss: float  # token-mean training loss of the step, over all ranks
    tokens: int  # input tokens this rank processed (attention mask sum)


def micro_batches(run, collator, step: int, gas: int, micro: int) -> list[dict]:
    """This rank's share of step ``step``, as ``gas`` collated micro-batches of ``micro`` examples."""
    picks = run.sampler.batch(step)  # this rank's (row, description) pairs of the global batch
    rows = run.rows
    return [collator([{**rows[r], "description": d} for r, d in picks[i * micro:(i + 1) * micro]])
            for i in range(gas)]


def contrast_pairs(descriptions: dict[str, list[str]], step: int, seed: int, rank: int) -> tuple[list[str], list[str]]:
    """Two different training descriptions of every context (one if it has only one), drawn from (seed, step, rank)."""
    import random

    rng = random.Random(f"{seed}:{step}:{rank}:contrast")
    a, b = [], []
    for context in sorted(descriptions):
        pool = descriptions[context]
        first, second = rng.sample(range(len(pool)), 2) if len(pool) > 1 else (0, 0)
        a.append(pool[first])
        b.append(pool[second])
    return a, b


def step_tokens(batches: list[dict], train_cfg) -> float:
    """This rank's (weighted) response tokens in ``batches``: the step's loss divides by their sum over ranks."""
    from zhyper.training.objective import response_weights

    return sum(float(response_weights(b["labels"], train_cfg.first_tokens, train_cfg.first_tokens_weight).sum())
               for b in batches)


def micro_batch_loss(model, hypernet, batch: dict, embed, train_cfg, model_cfg, norm: float, n_micro: int,
                     contrast: tuple[list[str], list[str]] | None = None, device=None):
    """The objective of one micro-batch, shared by ``train_step`` and ``zhyper.hf.ZhyperTrainer``.

    ``model``: what runs the forward (the DeepSpeed engine, a DDP wrapper or the ZhyperModel); ``hypernet``: the
    model's hypernetwork (for the contrastive term; None for the LoRA baseline); ``embed``: descriptions ->
    (b, d_c) embeddings; ``norm``: the step's response tokens over all ranks divided by the world size;
    ``n_micro``: micro-batches in the step;
    ``contrast``: two wordings of every context (``contrast_pairs``) on the step's first micro-batch, else None;
    ``device``: where the batch's tensors go (default: where they are).
    Returns (loss to backpropagate, summed response cross-entropy (detached, fp64), the model's output).
    """
    from zhyper.training.objective import (description_contrast, embedding_noise, modulation_penalty,
                                           response_loss_sum, response_weights)

    device = device if device is not None else batch["input_ids"].device
    labels = batch["labels"].to(device)
    weights = response_weights(labels, train_cfg.first_tokens, train_cfg.first_tokens_weight)
    emb = embedding_noise(embed(batch["descriptions"]), train_cfg.embedding_noise)
    emitted = []  # the hypernetwork's output, caught on the way: a DDP wrapper rebuilds `out` without .modulation
    hook = hypernet.register_forward_hook(lambda _m, _i, o: emitted.append(o)) if hypernet is not None else None
    try:
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                    context_embeddings=emb)
    finally:
        if hook is not None:
            hook.remove()
    lsum, _ = response_loss_sum(out.logits, labels, train_cfg.label_smoothing, weights)
    loss = lsum / norm
    modulation = emitted[0] if emitted else getattr(out, "modulation", None)
    if train_cfg.modulation_l2 > 0 and modulation is not None:
        loss = loss + train_cfg.modulation_l2 * modulation_penalty(modulation, model_cfg.mode,
                                                                   model_cfg.z_init) / n_micro
    if train_cfg.contrast_weight > 0 and contrast is not None:
        first, second = contrast
        loss = loss + train_cfg.contrast_weight * description_contrast(
            hypernet.head_inputs(embedding_noise(embed(first), train_cfg.embedding_noise)),
            hypernet.head_inputs(embedding_noise(embed(second), train_cfg.embedding_noise)),
            train_cfg.contrast_temperature)
    return loss, lsum.detach().double().cpu(), out


def check_finite(value: float, step: int, lr: float) -> None:
    """Raise ``NonFiniteLossError`` for a NaN or infinite step loss (before anything is checkpointed)."""
    if not math.isfinite(value):
        raise NonFiniteLossError(f"training loss is {value} at step {step + 1} (learning rate {lr:.3g}); stopping "
                                 "before any checkpoint or export is written. Lower train.lr, or check the data and "
                                 "the DeepSpeed dtype")


def train_step(engine, batches: list[dict], embed, train_cfg, model_cfg, step: int,
               descriptions: dict[str, list[str]] | None = None) -> StepResult:
    """Forward, backward and step over ``batches``; returns the global token-mean loss.

    The objective of each micro-batch is ``micro_batch_loss``. With ``train_cfg.contrast_weight`` the first
    micro-batch also carries the description-contrastive loss over two wordings of every context in
    ``descriptions`` (the hypernetwork's head inputs).
    """
    import torch.distributed as dist

    world = dist.get_world_size()
    n_tok = torch.tensor(step_tokens(batches, train_cfg), dtype=torch.float64)  # the step's (weighted) tokens
    dist.all_reduce(n_tok)
    norm = float(n_tok) / world
    loss_sum = torch.zeros((), dtype=torch.float64)
    tokens = 0
    for i, b in enumerate(batches):
        contrast = (contrast_pairs(descriptions, step, train_cfg.seed, dist.get_rank())
                    if train_cfg.contrast_weight > 0 and i == 0 and descriptions else None)
        loss, lsum, _ = micro_batch_loss(engine, getattr(engine.module, "hypernet", None), b, embed, train_cfg,
                                         model_cfg, norm, len(batches), contrast, engine.device)
        engine.backward(loss, scale_wrt_gas=False)
        engine.step()  # updates only at the accumulation boundary
        loss_sum += lsum
        tokens += int(b["attention_mask"].sum())
    dist.all_reduce(loss_sum)
    value = float(loss_sum) / max(float(n_tok), 1.0)
    check_finite(value, step, engine.get_lr()[0])
    return StepResult(value, tokens)
