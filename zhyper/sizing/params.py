"""Trainable-parameter counts of diag / square / full Zhyper and plain LoRA, from configs alone.

The base model is built on the meta device (no memory, no weights, no download), ZLinear is
injected into it and the hypernetwork is built on meta too, so the counts are those of the real
modules, e.g. for Mistral-7B-Instruct-v0.2 (q_proj, v_proj, r = 8, 1024-d gte-large, latent 128,
head input 512): diag 4,207,632, square 4,265,088, full 55,424,000.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParameterCount:
    """Trainable parameters of one configuration."""

    method: str  # "diag", "square", "full" or "lora"
    hypernet: int  # hypernetwork (0 for plain LoRA)
    shared: int  # shared lora_A / lora_B (0 for full mode)

    @property
    def total(self) -> int:
        return self.hypernet + self.shared


def _meta_injected(base_config, config):
    from zhyper.bases import meta_model
    from zhyper.layers.inject import inject_zlinear

    model = meta_model(base_config)
    layout = inject_zlinear(model, config.target_modules, rank=config.rank, mode=config.mode, alpha=config.alpha,
                            rslora=config.rslora)
    return model, layout


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_parameters(config, base_config, context_dim: int | None = None) -> ParameterCount:
    """Trainable parameters of ``config`` (a ZhyperConfig) on a base model given by its HF config.

    ``context_dim`` defaults to ``config.resolved_context_dim()`` (known encoders need no loading).
    """
    from zhyper.hyper.hypernet import HyperNetwork

    d_c = context_dim if context_dim is not None else config.resolved_context_dim()
    if d_c is None:
        raise ValueError(f"context_dim: encoder {config.encoder!r} is not a known one; pass context_dim=")
    model, layout = _meta_injected(base_config, config)
    shared = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B")))
    hcfg = config.hypernet_config(layout, d_c)
    with torch.device("meta"):
        hypernet = HyperNetwork(hcfg)
    return ParameterCount(config.mode, _numel(hypernet), shared)


def lora_parameters(config, base_config) -> ParameterCount:
    """Plain LoRA with the same rank and targets: r · (in + out) per adapted module."""
    _, layout = _meta_injected(base_config, dataclasses.replace(config, mode="diag"))
    return ParameterCount("lora", 0, sum(config.rank * (m.in_features + m.out_features) for m in layout))


def parameter_table(config, base_config, context_dim: int | None = None) -> list[ParameterCount]:
    """diag, square, full (every other field of ``config`` kept) and plain LoRA."""
    rows = [count_parameters(dataclasses.replace(config, mode=m), base_config, context_dim)
            for m in ("diag", "square", "full")]
    return rows + [lora_parameters(config, base_config)]
