"""Export one description's adapter: a standard PEFT LoRA folder, or a plain merged HF model.

The modulation is folded into the factors so the exported function is exactly the trained one::

    diag    lora_A' = diag(z) · A     lora_B' = B        (s · B · diag(z) · A)
    square  lora_A' = Z · A           lora_B' = B        (s · B · Z · A)
    full    lora_A' = A_c             lora_B' = B_c      (s · B_c · A_c)

with PEFT's own scaling s = lora_alpha / r (or / sqrt(r) with use_rslora), the same s ZLinear uses.
``merge`` hands that adapter to PEFT (``get_peft_model`` on a plain copy of the base, then PEFT's own
``merge_and_unload``): the merged model is what PEFT makes of the exported adapter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zhyper.io import atomic_folder

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@torch.no_grad()
def folded_factors(model, description, action: str = "export", weights=None,
                   combine: str = "modulation") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (lora_A' (r, in), lora_B' (out, r))} in fp32 on the CPU for one description entry.

    ``description`` is a string or a list combined with ``weights`` / ``combine`` (``zhyper.compose``).
    Raises ValueError naming the tensor when a trained tensor, the modulation or a folded factor
    holds a NaN or an inf (nothing would be worth writing).
    """
    from zhyper import compose
    from zhyper.pretrained import check_finite

    check_finite(model.trainable_state_dict(), f"{action}: the model")
    z = compose.modulation(model, [description], None if weights is None else [weights], combine)
    per_module = model.layout.module_modulations(z)
    check_finite({f"modulation[{name}]": z for name, z in per_module.items()},
                 f"{action}: the hypernetwork's modulation for {description!r}")
    out = {}
    for m in model.layout:
        a, b = model.base.get_submodule(m.name).folded_factors(per_module[m.name])
        out[m.name] = (a.cpu().contiguous(), b.cpu().contiguous())
    check_finite({f"{name}.lora_{ab}'": t for name, pair in out.items() for ab, t in zip("AB", pair)},
                 f"{action}: the folded factors for {description!r}")
    return out


def peft_adapter(model, description, action: str = "export", weights=None, combine: str = "modulation"):
    """(LoraConfig, {PEFT state-dict key: tensor}) of ``description``'s adapter, as an adapter folder stores them."""
    from peft import LoraConfig

    tensors = {}
    for name, (a, b) in folded_factors(model, description, action, weights, combine).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    cfg = model.config
    peft_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, use_rslora=cfg.rslora, lora_dropout=cfg.dropout,
                             target_modules=sorted(model.layout.module_types), bias="none", task_type="CAUSAL_LM",
                             base_model_name_or_path=model.base_model_id)
    return peft_config, tensors


def export_peft(model, description, out_dir: str | os.PathLike, weights=None, combine: str = "modulation") -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for ``description`` into ``out_dir``.

    Other files in ``out_dir`` are kept. Refused before anything is written: the checkpoint or base
    folder the model was read from (or a folder inside either), and non-finite tensors.
    """
    from safetensors.torch import save_file

    from zhyper.pretrained import check_output_folder

    out_dir = Path(out_dir)
    check_output_folder(model, out_dir, "export_peft")
    peft_config, tensors = peft_adapter(model, description, "export_peft", weights, combine)
    with atomic_folder(out_dir) as tmp:
        peft_config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / "zhyper_export.json").write_text(json.dumps(
            {"description": description, "mode": model.config.mode, "base_model": model.base_model_id,
             "base_revision": model.base_revision}, indent=2) + "\n")
    return out_dir


def plain_base(model):
    """A fresh plain HF model (no ZLinear) holding the frozen base weights of ``model``."""
    from transformers import AutoModelForCausalLM

    base = model.base
    state = {k: v for k, v in base.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    plain = AutoModelForCausalLM.from_config(base.config, dtype=next(iter(base.parameters())).dtype)
    plain.load_state_dict(state, strict=True)
    plain.tie_weights()
    return plain


@torch.no_grad()
def merge(model, description, out_dir: str | os.PathLike | None = None, weights=None, combine: str = "modulation"):
    """A fresh plain HF model (no ZLinear) with ΔW of ``description`` added to every adapted weight.

    The exported adapter is merged by PEFT itself (``merge_and_unload``). Checked before anything is
    built or written: ``out_dir`` is not the checkpoint or base folder the model was read from, the
    tensors are finite; and no merged weight may overflow its dtype.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    from zhyper.pretrained import check_output_folder

    if out_dir is not None:
        check_output_folder(model, Path(out_dir), "merge")
    peft_config, tensors = peft_adapter(model, description, "merge", weights, combine)
    peft_config.base_model_name_or_path = None  # the plain copy is this model's base, whatever its recorded name
    peft = get_peft_model(plain_base(model), peft_config)
    result = set_peft_model_state_dict(peft, tensors)
    if result.unexpected_keys:
        raise RuntimeError(f"merge: the adapter does not fit PEFT's model: unexpected {result.unexpected_keys[:4]}")
    merged = peft.merge_and_unload().eval()
    for name in model.layout.names:
        w = merged.get_submodule(name).weight
        bad = int((~torch.isfinite(w)).sum())
        if bad:
            raise ValueError(f"merge: the merged weight {name}.weight has {bad} non-finite values in {w.dtype} "
                             f"(W + ΔW overflows) for {description!r}")
    if out_dir is not None:
        with atomic_folder(out_dir) as tmp:
            merged.save_pretrained(str(tmp))
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(str(tmp))
    return merged
