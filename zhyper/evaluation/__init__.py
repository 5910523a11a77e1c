"""Evaluating conditioning: paired loss gaps, rule compliance under descriptions and controls, reports.

``import zhyper.evaluation`` is cheap; names are imported on first use.

- ``losses``: per-example response losses over rank shares, the paired gap (right description
  minus another context's) with its standard error, for seen contexts (held-out descriptions and
  held-out paraphrases) and for unseen contexts;
- ``compliance``: greedy answers under every condition (held-out descriptions, paraphrases, random
  strings and unrelated sentences, another rule's description, adapters off, the description in the
  prompt), scored by every rule's checker: compliance with its error bar, the controls per rule and
  the confusion matrix;
- ``report``: the Markdown of ``eval.md`` and the confusion heatmap;
- ``harness``: ``ZhyperLM``, a checkpoint as an lm-evaluation-harness model (lm-eval's ``HFLM``,
  conditioned through ``ZhyperModel.conditioned``), registered as ``"zhyper"``;
- ``lm_tasks``: the paper's ten benchmarks as lm-eval's own tasks, from the hub or local rows;
- ``benchmarks`` / ``benchmark_report``: T2L's protocol (``zhyper eval benchmarks``): cells under the
  benchmark's descriptions, random strings and the baselines, paired differences, the report.
"""

from __future__ import annotations

_LAZY = {
    "EvalItem": "zhyper.evaluation.losses",
    "paired_gap": "zhyper.evaluation.losses",
    "validation_metrics": "zhyper.evaluation.losses",
    "ComplianceResult": "zhyper.evaluation.compliance",
    "compliance_eval": "zhyper.evaluation.compliance",
    "describe_gap": "zhyper.evaluation.report",
}

__all__ = list(_LAZY)

from zhyper._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
