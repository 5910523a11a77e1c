"""Real layer inputs for the estimators: a tensor file, or what enters a SmolLM2 layer's q_proj.

Each token is one sample x_i (its hidden state entering the projection). Tokens of one prompt
are not independent, so with real inputs R̂ is the complexity on that fixed sample S, exactly
what the definition asks for; the bounds stay valid (they are data-dependent, no i.i.d. needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def load_tensor_file(path: str | Path, key: str | None = None) -> torch.Tensor:
    """One tensor (N, d) from a safetensors file: ``key``, or the file's only tensor.

    A tensor with more dims (..., d), e.g. (batch, tokens, d), is flattened to (N, d).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inputs file not found: {path}")
    tensors = load_file(str(path))
    if key is None:
        if len(tensors) != 1:
            raise ValueError(f"{path} holds {len(tensors)} tensors {sorted(tensors)}; choose one with key=")
        key = next(iter(tensors))
    if key not in tensors:
        raise ValueError(f"key {key!r} not in {path}; it holds {sorted(tensors)}")
    x = tensors[key]
    if x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"tensor {key!r} in {path} must have shape (N, d) (or (..., d)) and be non-empty, "
                         f"got {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1]).float()


def _find_module(model: torch.nn.Module, layer: int, module: str) -> torch.nn.Module:
    suffix = f"layers.{layer}.self_attn.{module}"
    for name, sub in model.named_modules():
        if name.endswith(suffix):
            return sub
    n_layers = getattr(model.config, "num_hidden_layers", "?")
    raise ValueError(f"layer must be in [0, {n_layers}) and module an attention projection; "
                     f"no module named '*{suffix}' in the model")


@torch.no_grad()
def smollm2_layer_inputs(layer: int, module: str = "q_proj", max_prompts: int | None = None) -> torch.Tensor:
    """Inputs (N_tokens, d) of ``model.layers[layer].self_attn.<module>`` of the shipped SmolLM2-135M-Instruct
    on the built-in suite's distinct prompts (chat template applied), one prompt per forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zhyper.base_model import smollm2_path
    from zhyper.data import builtin_suite, format_prompt

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    target = _find_module(model, layer, module)
    prompts = list(dict.fromkeys(builtin_suite().examples["prompt"]))[:max_prompts]
    captured: list[torch.Tensor] = []
    handle = target.register_forward_pre_hook(lambda _m, args: captured.append(args[0].reshape(-1, args[0].shape[-1])))
    try:
        for prompt in prompts:
            ids = tokenizer(format_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
            model(input_ids=ids["input_ids"])
    finally:
        handle.remove()
    x = torch.cat(captured).float()
    logger.info("captured %d token inputs of dim %d at layer %d %s from %d prompts", x.shape[0], x.shape[1], layer,
                module, len(prompts))
    return x
