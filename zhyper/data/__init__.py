"""Data for conditioned fine-tuning: loaders (tasks, AskX, built-in suite), chat formatting, sampler.

``import zhyper.data`` is cheap: every name is imported on first use, and ``datasets`` /
``transformers`` are only imported inside the functions that need them.

    from zhyper.data import builtin_suite, load_askx, load_tasks, ContextData
    from zhyper.data import MixedContextSampler, ChatCollator, format_prompt
"""

from __future__ import annotations

_LAZY = {
    "ContextData": "zhyper.data.base",
    "split_descriptions": "zhyper.data.base",
    "BuiltinSuite": "zhyper.data.builtin",
    "builtin_suite": "zhyper.data.builtin",
    "load_tasks": "zhyper.data.tasks",
    "TaskSpec": "zhyper.data.tasks",
    "TaskData": "zhyper.data.tasks",
    "load_askx": "zhyper.data.askx",
    "AskXData": "zhyper.data.askx",
    "AskXSetting": "zhyper.data.askx",
    "format_prompt": "zhyper.data.chat",
    "ChatCollator": "zhyper.data.chat",
    "MixedContextSampler": "zhyper.data.sampler",
}

__all__ = list(_LAZY)

from zhyper._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
