"""Gradient (activation) checkpointing that keeps each ZLinear's modulation through the recompute.

A Zhyper forward hands every ZLinear its modulation for the duration of the base model's forward
(``modulate``). A checkpointed block runs its forward a second time during backward, after that
block has been left, when the layers hold no modulation (plain HF checkpointing then fails with
"needs a modulation") or, worse, a later forward's one (the recompute then silently differs from
the forward and the gradients are wrong: torch's non-reentrant checkpoint compares only shapes
and dtypes of what it recomputes, not values). Here each checkpointed block's recompute function
is wrapped so it first puts back the modulations its layers had in the original forward, and
restores whatever was there afterwards: the recompute is then exactly the original forward, and
so are the gradients of A, B and the hypernetwork (tests/layers/test_checkpointing.py checks both
the equality and that plain HF checkpointing gets it wrong).

Works with Hugging Face models whose decoder layers are ``GradientCheckpointingLayer`` (every
causal LM in transformers 5; in older versions the model-level module that calls the checkpoint
function is wrapped instead), with non-reentrant ``torch.utils.checkpoint``.
"""

from __future__ import annotations

import functools
import logging

from torch import nn

from .zlinear import ZLinear

log = logging.getLogger(__name__)


def _keeping_modulation(checkpoint_func, layers: list[ZLinear]):
    """``checkpoint_func`` whose recompute sees the modulations ``layers`` had when the block first ran."""

    @functools.wraps(checkpoint_func)
    def run(function, *args, **kwargs):
        saved = [layer.modulation for layer in layers]  # the modulation of this forward

        def replay(*a, **k):
            previous = [layer.modulation for layer in layers]
            for layer, z in zip(layers, saved):
                layer.modulation = z
            try:
                return function(*a, **k)
            finally:  # also when the recompute stops early (non-reentrant checkpoint raises to stop it)
                for layer, z in zip(layers, previous):
                    layer.modulation = z

        return checkpoint_func(replay, *args, **kwargs)

    run.zhyper_keeps_modulation = True
    return run


def _checkpointed(module: nn.Module) -> bool:
    return getattr(module, "_gradient_checkpointing_func", None) is not None and \
        bool(getattr(module, "gradient_checkpointing", False))


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Turn on non-reentrant checkpointing of ``model``'s base (a ZhyperModel or LoRABaseline); returns
    the number of checkpointed blocks whose ZLinear modulations are kept through the recompute.

    The innermost checkpointed modules holding ZLinear layers are wrapped (the decoder layers; a
    model-level module that also carries the flag but holds checkpointed layers is left alone).
    ZLinear layers outside every checkpointed module (e.g. an adapted LM head) are never recomputed
    and need nothing. Raises if a checkpointed module holds a ZLinear that no wrapped module covers.
    """
    base = model.base
    hf = base.get_base_model() if hasattr(base, "get_base_model") else base  # a PEFT model wraps the HF one
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support gradient checkpointing; expected a Hugging Face "
                         "causal LM with supports_gradient_checkpointing = True")
    hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # HF adds a hook making the embedding output require grad: needed by reentrant checkpointing only.
    # Non-reentrant checkpointing does not need it, and it would make backward run down to the embeddings.
    if hasattr(hf, "disable_input_require_grads"):
        hf.disable_input_require_grads()
    checkpointed = [m for m in hf.modules() if _checkpointed(m) and m is not hf]
    wrapped, covered = 0, set()
    for module in checkpointed:
        if any(_checkpointed(m) for m in module.modules() if m is not module):
            continue  # an outer module (e.g. LlamaModel): its checkpointed layers are wrapped themselves
        layers = [m for m in module.modules() if isinstance(m, ZLinear)]
        covered |= {id(m) for m in layers}
        func = module._gradient_checkpointing_func
        if layers and not getattr(func, "zhyper_keeps_modulation", False):
            module._gradient_checkpointing_func = _keeping_modulation(func, layers)
            wrapped += 1
    for module in checkpointed:  # a ZLinear in a checkpointed module but in no wrapped one would lose its z
        lost = [n for n, m in module.named_modules() if isinstance(m, ZLinear) and id(m) not in covered]
        if lost:
            hf.activation_checkpointing_disable()  # leave the model as it was
            raise RuntimeError(f"{type(module).__name__} is checkpointed and holds ZLinear layers outside its "
                               f"checkpointed sub-blocks ({lost[:3]}); their recompute would run without a "
                               "modulation, so this model's checkpointing is not supported")
    log.info("gradient checkpointing on (non-reentrant); %d blocks keep their ZLinear modulation", wrapped)
    return wrapped
