"""Small random models and checkpoints for tests, benchmarks and tools.

One home for the builders that the test suite, ``benchmarks/`` and ``tools/`` share, so a benchmark or
a tool runs from an installed package without the test tree::

    tiny_llama, tiny_mistral   randomly initialised HF models with the real architectures (in memory)
    tiny_chat_base             a random tiny Llama saved with SmolLM2's tokenizer and chat template
    small_config               a ZhyperConfig with a small (fast) hypernetwork
    perturb                    random lora_B and head weights: the adapter changes the output
    make_checkpoint            a tiny perturbed checkpoint with a contexts.json (what the serving tests serve)

Nothing in the package imports this module (it sits on the top floor of docs/design.md's map), and it
imports nothing of ``tests/``. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zhyper.config import ZhyperConfig

CONTEXT_LENGTH = 1024  # make_checkpoint's base: max_position_embeddings (long enough for a long-running request)
OWN_CONTEXTS = {"pirate": ["Talk like a pirate.", "Arr, answer as a sea rover would."],
                "formal": ["Answer in a formal, courteous tone."]}


def tiny_llama(n_layers: int = 2, hidden: int = 32, vocab: int = 97, kv_heads: int = 2, seed: int = 0):
    """A randomly initialised Llama with the real architecture (GQA, MLP, tied head off)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def tiny_mistral(n_layers: int = 2, hidden: int = 32, vocab: int = 97, seed: int = 0):
    """A randomly initialised Mistral (sliding window 64)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, sliding_window=64)
    return MistralForCausalLM(cfg).eval()


def small_config(**overrides) -> ZhyperConfig:
    """A ZhyperConfig with a small hypernetwork (fast), the shipped 384-d encoder."""
    from zhyper.config import ZhyperConfig

    kwargs = dict(mode="diag", rank=4, latent_dim=16, head_in=32, hyper_dropout=0.0)
    kwargs.update(overrides)
    return ZhyperConfig(**kwargs)


def perturb(model, scale: float = 0.3, seed: int = 1):
    """Random lora_B and random head weights/biases, so the adapter changes the output and
    different descriptions give different modulations (every equality test can then fail)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
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
    import torch
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


def make_checkpoint(folder: Path, mode: str = "diag") -> Path:
    """A tiny Llama (SmolLM2 tokenizer, 1024-token context) + perturbed Zhyper, saved with a contexts.json."""
    from zhyper.model import ZhyperModel
    from zhyper.serving.contexts import save_contexts

    folder = Path(folder)
    base = tiny_chat_base(folder / "base")
    cfg_path = base / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["max_position_embeddings"] = CONTEXT_LENGTH
    cfg_path.write_text(json.dumps(cfg))
    model = perturb(ZhyperModel.from_base(str(base), small_config(mode=mode)), scale=2.0).eval()
    model.save_pretrained(folder / "ckpt")
    save_contexts(folder / "ckpt", OWN_CONTEXTS)
    return folder / "ckpt"
