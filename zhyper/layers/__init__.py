"""ZLinear and its injection into models. No Hugging Face, DeepSpeed or MLflow imports here.

The lowest floor: nothing under ``zhyper/layers`` imports the rest of zhyper (see docs/design.md).
Names resolve on first use, so ``zhyper.layers.shapes`` (the modes, plain Python) loads without torch.
"""

from __future__ import annotations

_LAZY = {
    "MODES": "zhyper.layers.shapes",
    "modulation_shape": "zhyper.layers.shapes",
    "ZLinear": "zhyper.layers.zlinear",
    "lora_scaling": "zhyper.layers.zlinear",
    "AdaptedModule": "zhyper.layers.inject",
    "AdapterLayout": "zhyper.layers.inject",
    "adapters_disabled": "zhyper.layers.inject",
    "inject_zlinear": "zhyper.layers.inject",
    "modulate": "zhyper.layers.inject",
    "zlinear_modules": "zhyper.layers.inject",
}

__all__ = ["MODES", "AdaptedModule", "AdapterLayout", "ZLinear", "adapters_disabled", "inject_zlinear",
           "lora_scaling", "modulate", "modulation_shape", "zlinear_modules"]

from zhyper._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
