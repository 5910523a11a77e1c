"""ZLinear and its injection into models. No Hugging Face, DeepSpeed or MLflow imports here."""

from .inject import AdaptedModule, AdapterLayout, adapters_disabled, inject_zlinear, modulate, zlinear_modules
from .zlinear import MODES, ZLinear, lora_scaling, modulation_shape

__all__ = ["MODES", "AdaptedModule", "AdapterLayout", "ZLinear", "adapters_disabled", "inject_zlinear",
           "lora_scaling", "modulate", "modulation_shape", "zlinear_modules"]
