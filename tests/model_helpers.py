"""Shared helpers for the model-level tests: small Zhyper configs, a non-trivial adapter, a tiny chat base.

They live in ``zhyper.testing`` (benchmarks and tools use them without the test tree); imported here so the
tests keep importing them from ``tests.model_helpers``.
"""

from __future__ import annotations

from zhyper.testing import perturb, small_config, tiny_chat_base

__all__ = ["perturb", "small_config", "tiny_chat_base"]
