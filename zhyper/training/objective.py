"""Loss, regularisers, parameter groups and the learning-rate schedule of a Zhyper run.

The loss is normalised by the number of response tokens in the whole optimizer step (all
micro-batches, all ranks), so gradient accumulation of k micro-batches of size b gives the
same update as one batch of size k·b — the token-mean over each micro-batch would not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zhyper.data.chat import IGNORE_INDEX
from zhyper.evaluation.losses import per_example_loss  # noqa: F401  (its home is evaluation, one floor down)


def response_weights(labels: torch.Tensor, first: int = 0, weight: float = 1.0) -> torch.Tensor:
    """(b, t-1) weights of the next-token targets ``labels[:, 1:]``: 0 off the response, ``weight`` on each
    row's first ``first`` response tokens (where an answer's format is decided), 1 on the rest."""
    mask = labels[:, 1:] != IGNORE_INDEX
    w = mask.float()
    if first > 0 and weight != 1.0:
        position = mask.long().cumsum(1)  # 1 for the first response token of the row, 2 for the next ...
        w = torch.where(mask & (position <= first), torch.full_like(w, weight), w)
    return w


def response_loss_sum(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                      weights: torch.Tensor | None = None):
    """Summed next-token cross-entropy over response tokens and their count (or their total weight).

    logits (b, t, V), labels (b, t) with IGNORE_INDEX outside the response; ``weights`` (b, t-1) from
    ``response_weights`` (default: 1 per response token). Returns (loss_sum: scalar tensor, n: float).
    """
    shift_logits = logits[:, :-1].float()  # (b, t-1, V)
    shift_labels = labels[:, 1:]  # (b, t-1)
    if weights is None:
        loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing)
        return loss, int((shift_labels != IGNORE_INDEX).sum())
    tok = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none",
                          label_smoothing=label_smoothing)  # (b, t-1)
    weights = weights.to(tok)
    return (tok * weights).sum(), float(weights.sum())


def modulation_penalty(modulation, mode: str, z_init: str) -> torch.Tensor:
    """Mean squared deviation of the generated modulation from its initial value.

    Identity init starts at z = 1 (diag) / Z = I (square): the penalty pulls towards plain
    LoRA, not towards switching the adapter off. The paper's raw parametrisation and full mode
    are penalised towards 0.
    """
    tensors = list(modulation.values()) if isinstance(modulation, dict) else [modulation]
    total = 0.0
    for m in tensors:
        m = m.float()
        if z_init == "identity" and mode == "diag":
            m = m - 1.0
        elif z_init == "identity" and mode == "square":
            m = m - torch.eye(m.shape[-1], device=m.device)
        total = total + m.pow(2).mean()
    return total / len(tensors)


def description_contrast(features_a: torch.Tensor, features_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two wordings of the same contexts, on the hypernetwork's head inputs.

    Row i of ``features_a`` and of ``features_b`` (each (n, ...), e.g. ``HyperNetwork.head_inputs``)
    come from two different descriptions of context i. Each row must be closer (cosine) to the other
    wording of its own context than to any other context's: one term asks for invariance to the
    wording, the other for separation of the contexts. The head inputs are used rather than the
    modulations because the zero-initialised heads make every modulation equal at the start, where
    a cosine has no direction. No parameters.
    """
    a = F.normalize(features_a.float().flatten(1), dim=1)
    b = F.normalize(features_b.float().flatten(1), dim=1)
    logits = a @ b.T / temperature  # (n, n)
    target = torch.arange(len(a), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def add_neftune_noise(embedding: nn.Module, alpha: float):
    """NEFTune (Jain et al., 2023) on the input embeddings, with transformers' own hook.

    Uniform noise of scale alpha/sqrt(t·d), in training mode only; registered once. Returns the handle.
    """
    from transformers.integrations.neftune import neftune_post_forward_hook

    embedding.neftune_noise_alpha = alpha
    return embedding.register_forward_hook(neftune_post_forward_hook)


def embedding_noise(embeddings: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Description embeddings plus Gaussian noise whose norm is about ``scale`` (per-dim std scale/sqrt(d))."""
    if scale <= 0:
        return embeddings
    noise = torch.randn(embeddings.shape, generator=generator, dtype=torch.float32).to(embeddings)
    return embeddings + noise * (scale / embeddings.shape[-1] ** 0.5)


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 hypernet_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters only; no weight decay on biases, norms and embeddings.

    With ``lr`` given, parameters under ``hypernet.`` get ``lr * hypernet_lr_scale`` (the
    shared A/B keep ``lr``); the LR schedule scales every group alike.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_vector = len(getattr(p, "ds_shape", p.shape)) < 2  # ds_shape: the full shape under ZeRO-3
        no_decay = is_vector or "emb" in name or "norm" in name
        groups.setdefault((name.startswith("hypernet."), no_decay), []).append(p)
    out = []
    for (is_hyper, no_decay), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay}
        if lr is not None:
            group["lr"] = lr * (hypernet_lr_scale if is_hyper else 1.0)
        out.append(group)
    return out


def lr_schedule(optimizer, max_steps: int, warmup_ratio: float):
    """transformers' linear warm-up (over warmup_ratio·max_steps) then linear decay to 0, as a LambdaLR."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(warmup_ratio * max_steps)), max_steps)
