"""Gradient (activation) checkpointing that keeps each ZLinear's modulation through the recompute.

A Zhyper forward hands every ZLinear its modulation for the duration of the base model's forward
(``modulate``). A checkpointed block runs its forward a second time during backward, after that
block has been left, when the layers hold no modulation (or the next forward's). Here each
checkpointed block's recompute function is wrapped so it first puts back the modulations its
layers had in the original forward, and restores whatever was there afterwards: the recompute
is then exactly the original forward, and so are the gradients of A, B and the hypernetwork.

Works with Hugging Face models whose decoder layers are ``GradientCheckpointingLayer`` (every
causal LM in transformers 5), with non-reentrant ``torch.utils.checkpoint``.
"""

from __future__ import annotations

import functools

from torch import nn

from .zlinear import ZLinear


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
            finally:
                for layer, z in zip(layers, previous):
                    layer.modulation = z

        return checkpoint_func(replay, *args, **kwargs)

    run.zhyper_keeps_modulation = True
    return run


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Turn on non-reentrant checkpointing of ``model``'s base (a ZhyperModel or LoRABaseline); returns
    the number of checkpointed blocks whose ZLinear modulations are kept through the recompute."""
    base = model.base
    hf = base.get_base_model() if hasattr(base, "get_base_model") else base  # a PEFT model wraps the HF one
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support gradient checkpointing")
    hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    wrapped = 0
    for module in hf.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if func is None or not getattr(module, "gradient_checkpointing", False) or module is hf:
            continue
        layers = [m for m in module.modules() if isinstance(m, ZLinear)]
        if layers and not getattr(func, "zhyper_keeps_modulation", False):
            module._gradient_checkpointing_func = _keeping_modulation(func, layers)
            wrapped += 1
    return wrapped
