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
    "count_parameters": "zhyper.sizing.params",
}

__all__ = ["__version__", *_LAZY]

from zhyper._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
