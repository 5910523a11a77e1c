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


def tiny_chat_base(folder, n_layers: int = 2, hidden: int = 32, seed: int = 0):
    """A random tiny Llama with SmolLM2's tokenizer (and chat template), saved as an HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zhyper.base_model import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
