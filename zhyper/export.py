"""Export one description's adapter: a standard PEFT LoRA folder, or a plain merged HF model.

The modulation is folded into the factors so the exported function is exactly the trained one::

    diag    lora_A' = diag(z) · A     lora_B' = B        (s · B · diag(z) · A)
    square  lora_A' = Z · A           lora_B' = B        (s · B · Z · A)
    full    lora_A' = A_c             lora_B' = B_c      (s · B_c · A_c)

with PEFT's own scaling s = lora_alpha / r (or / sqrt(r) with use_rslora), the same s ZLinear uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zhyper.io import atomic_folder

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@torch.no_grad()
def folded_factors(model, description: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (lora_A' (r, in), lora_B' (out, r))} in fp32 on the CPU for one description."""
    per_module = model.layout.module_modulations(model.modulation_for([description]))
    out = {}
    for m in model.layout:
        a, b = model.base.get_submodule(m.name).folded_factors(per_module[m.name])
        out[m.name] = (a.cpu().contiguous(), b.cpu().contiguous())
    return out


def export_peft(model, description: str, out_dir: str | os.PathLike) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for ``description`` into ``out_dir``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = model.config
    tensors = {}
    for name, (a, b) in folded_factors(model, description).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    peft_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, use_rslora=cfg.rslora, lora_dropout=cfg.dropout,
                             target_modules=sorted(model.layout.module_types), bias="none", task_type="CAUSAL_LM",
                             base_model_name_or_path=model.base_model_id)
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        peft_config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / "zhyper_export.json").write_text(json.dumps(
            {"description": description, "mode": cfg.mode, "base_model": model.base_model_id,
             "base_revision": model.base_revision}, indent=2) + "\n")
    return out_dir


@torch.no_grad()
def merge(model, description: str, out_dir: str | os.PathLike | None = None):
    """A fresh plain HF model (no ZLinear) with ΔW of ``description`` added to every adapted weight."""
    from transformers import AutoModelForCausalLM

    base = model.base
    merged = AutoModelForCausalLM.from_config(base.config, dtype=next(iter(base.parameters())).dtype)
    state = {k: v for k, v in base.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    for name, (a, b) in folded_factors(model, description).items():
        layer = base.get_submodule(name)
        w = state[f"{name}.weight"]
        state[f"{name}.weight"] = (w.float() + layer.scaling * (b @ a).to(w.device)).to(w.dtype)
    merged.load_state_dict(state, strict=True)
    merged.tie_weights()
    merged.eval()
    if out_dir is not None:
        with atomic_folder(out_dir) as tmp:
            merged.save_pretrained(str(tmp))
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(str(tmp))
    return merged
