"""zhyper: factorized hypernetworks for conditioned LLM fine-tuning (Zhyper, arXiv 2510.19733).

``import zhyper`` stays light: torch is imported for ZLinear, and everything heavy
(transformers, deepspeed, sentence-transformers, mlflow) is imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ZLinear": "zhyper.layers.zlinear",
    "inject_zlinear": "zhyper.layers.inject",
    "modulate": "zhyper.layers.inject",
    "adapters_disabled": "zhyper.layers.inject",
    "AdapterLayout": "zhyper.layers.inject",
    "ZhyperConfig": "zhyper.config",
    "ZhyperModel": "zhyper.model",
    "HyperNetwork": "zhyper.hyper.hypernet",
    "HyperNetConfig": "zhyper.hyper.hypernet",
    "count_parameters": "zhyper.hyper.params",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zhyper' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
