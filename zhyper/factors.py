"""Shared LoRA factors taken from a trained PEFT adapter and frozen (``model.freeze_factors_from``).

The paper's ablation of how the shared A and B are obtained: learned jointly with the hypernetwork
(the default), or pre-trained as a multi-task LoRA and frozen, so that only the hypernetwork
trains. ``check_factor_source`` validates the adapter folder against a ``ZhyperConfig`` without
loading a tensor (a run config is checked before torch loads); ``load_frozen_factors`` copies the
adapter's ``lora_A`` / ``lora_B`` into every ZLinear of a ``ZhyperModel`` and freezes them.

The same rank, alpha, rsLoRA flag and module types are required: the adapter's update is
``s · B · A`` with its own scale, and Zhyper's at the centre context is ``s · B · diag(z) · A``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KEY = "model.freeze_factors_from"
WEIGHTS = "adapter_model.safetensors"


def check_factor_source(folder: str, config) -> dict[str, Any]:
    """The adapter_config.json of ``folder``, or a ValueError naming the key and what does not fit ``config``."""
    path = Path(folder).expanduser()
    record_file = path / "adapter_config.json"
    if not path.is_dir():
        raise ValueError(f"{KEY}: {folder} is not a folder; expected a PEFT LoRA adapter folder (a multi-task "
                         "LoRA run's final/, or any folder with adapter_config.json and adapter_model.safetensors)")
    if not record_file.is_file() or not (path / WEIGHTS).is_file():
        raise ValueError(f"{KEY}: {folder} has no adapter_config.json and {WEIGHTS}; expected a PEFT LoRA adapter "
                         "folder (a multi-task LoRA run's final/)")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{KEY}: {record_file} is not valid JSON ({err})") from None
    if config.mode == "full":
        raise ValueError(f"{KEY}: mode 'full' generates A and B per context and has no shared factors to freeze; "
                         "use mode diag or square")
    wanted = {"r": config.rank, "lora_alpha": config.alpha, "use_rslora": config.rslora}
    for key, value in wanted.items():
        if record.get(key, False if key == "use_rslora" else None) != value:
            raise ValueError(f"{KEY}: the adapter in {folder} has {key}={record.get(key)!r}, the model "
                             f"{key}={value!r}; the factors only fit a model of the same rank, alpha and rsLoRA flag")
    _check_targets(folder, record, config)
    return record


def _check_targets(folder: str, record: dict, config) -> None:
    targets = record.get("target_modules")
    if isinstance(config.target_modules, str) or isinstance(targets, str) or targets is None:
        if targets != config.target_modules:
            raise ValueError(f"{KEY}: the adapter in {folder} targets {targets!r}, the model "
                             f"{config.target_modules!r}; expected the same target modules")
        return
    missing = sorted(set(config.target_modules) - set(targets))
    if missing:
        raise ValueError(f"{KEY}: the adapter in {folder} has no factors for {missing} (it targets {sorted(targets)}); "
                         f"the model adapts {sorted(config.target_modules)}")


def load_frozen_factors(model, folder: str) -> int:
    """Copy ``folder``'s lora_A / lora_B into ``model``'s shared factors and freeze them; returns how many modules.

    Every adapted module of the model must have its pair in the adapter (same shapes); anything
    missing or misshapen is a ValueError naming the module. Works on partitioned (ZeRO-3) factors.
    """
    import torch
    from safetensors.torch import load_file

    check_factor_source(folder, model.config)
    tensors = load_file(str(Path(folder).expanduser() / WEIGHTS))
    for m in model.layout:
        layer = model.base.get_submodule(m.name)
        for part in ("A", "B"):
            key = f"base_model.model.{m.name}.lora_{part}.weight"
            param = getattr(layer, f"lora_{part}")
            if key not in tensors:
                raise ValueError(f"{KEY}: {folder} has no {key}; expected a LoRA adapter of this base model")
            _assign(param, tensors[key], key, folder)
            param.requires_grad_(False)
    return len(model.layout)


def _assign(param, value, key: str, folder: str) -> None:
    import torch

    shape = tuple(getattr(param, "ds_shape", param.shape))
    if tuple(value.shape) != shape:
        raise ValueError(f"{KEY}: {key} in {folder} has shape {tuple(value.shape)}, the model's factor {shape}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{KEY}: {key} in {folder} holds NaN or inf")
    if hasattr(param, "ds_id"):  # partitioned under ZeRO-3: gather, write (every rank read the same file), re-partition
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            with torch.no_grad():
                param.copy_(value.to(param.dtype))
        return
    with torch.no_grad():
        param.copy_(value.to(param.device, param.dtype))
