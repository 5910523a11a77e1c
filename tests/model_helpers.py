"""Shared helpers for the model-level tests: small Zhyper configs and a non-trivial adapter."""

from __future__ import annotations

import torch

from zhyper import ZhyperConfig


def small_config(**overrides) -> ZhyperConfig:
    """A ZhyperConfig with a small hypernetwork (fast), the shipped 384-d encoder."""
    kwargs = dict(mode="diag", rank=4, latent_dim=16, head_in=32, hyper_dropout=0.0)
    kwargs.update(overrides)
    return ZhyperConfig(**kwargs)


@torch.no_grad()
def perturb(model, scale: float = 0.3, seed: int = 1):
    """Random lora_B and random head weights/biases, so the adapter changes the output and
    different descriptions give different modulations (every equality test can then fail)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.layout:
        layer = model.base.get_submodule(m.name)
        if layer.lora_B is not None:
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * scale)
    for head in model.hypernet.heads.values():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * scale)
        head.bias.add_(torch.randn(head.bias.shape, generator=g) * scale)
    return model
