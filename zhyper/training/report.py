"""What rank 0 writes at the end of a run: eval.json, eval.md, the confusion heatmap, the answers, MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def eval_markdown(cfg, metrics: dict[str, float], result, speed: dict[str, float], confusion: str | None,
                  diagnostics=None) -> str:
    """The Markdown of eval.md: losses, the gaps in words, compliance with the controls, the confusion,
    the hypernetwork's failure signatures (``zhyper.evaluation.diagnostics``)."""
    from zhyper.evaluation.report import compliance_markdown, examples_markdown, gap_lines

    lines = [f"# Evaluation ({cfg.method}{'' if cfg.method == 'lora' else ' ' + cfg.model.mode}, "
             f"{'description in the prompt' if cfg.data.description_in_prompt else 'description not in the prompt'})",
             "", "## Losses (response tokens, nats/token)", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(metrics.items(), key=lambda kv: ("wrong" in kv[0], kv[0]))
              if not k.endswith("_se") and "gap" not in k]
    lines += ["", "## Conditioning gaps (loss with the right description minus with another context's)", ""]
    lines += [f"- {line}" for line in gap_lines(metrics)] or ["- (no gap: fewer than two contexts in a split)"]
    if result is not None:
        lines += ["", "## Rule compliance of greedy answers (fraction ± 95 % interval, Agresti-Coull)", "",
                  "Held-out descriptions: training-style wordings never trained on; paraphrases: another style "
                  "(longer, indirect, informal, a typo, a question; never trained on). Random control: random "
                  "strings and unrelated sentences as the description (a rule they trigger is a default mode, not "
                  "conditioning); wrong descr.: the other rules' paraphrases; adapters off: the base model with no "
                  "description; base+prompt: the base model with the held-out description in its prompt.", "",
                  compliance_markdown(result)]
        if confusion:
            lines += ["", f"Confusion matrix (paraphrase descriptions): ![confusion]({confusion})"]
        if result.retention is not None:
            lines += ["", "## Content retention (factual questions under each context; never trained on)", "",
                      "An answer keeps the fact when it still states the known answer (case and punctuation "
                      "ignored); relative = kept under the context / kept with adapters off.", "",
                      result.retention.markdown()]
        lines += ["", "Example answers (first of each condition and description source):", "",
                  examples_markdown(result)]
    if diagnostics is not None:
        lines += ["", "## Failure signatures of the hypernetwork (the checkpoint's context descriptions)", "",
                  diagnostics.markdown()]
    if speed:
        lines += ["", "## Speed", ""] + [f"- {k}: {v:.4g}" for k, v in speed.items()]
    return "\n".join(lines) + "\n"


def write_report(cfg, out_dir: Path, metrics: dict[str, float], result, speed: dict[str, float],
                 tracker, paths: dict[str, Path], diagnostics=None) -> str:
    """Write eval.json / eval.md / confusion.png / answers.jsonl, log them to MLflow; returns eval.md.

    ``diagnostics``: the checkpoint's ``Diagnostics`` (None for the LoRA baseline), under "diagnostics"."""
    from zhyper.io import atomic_write

    confusion = None
    report = {"method": cfg.method, "mode": cfg.model.mode, "final": metrics, **speed}
    if result is not None:
        from zhyper.evaluation.report import confusion_png

        confusion = "confusion.png"
        confusion_png(result, out_dir / confusion)
        report["compliance"] = result.metrics()
        if result.retention is not None:
            report["retention"] = result.retention.metrics()
        report["counts"] = result.to_dict()
        lines = [json.dumps({"condition": it.condition, "source": it.source, "prompt": it.prompt,
                             "description": it.description, "answer": answer}) for it, answer in result.answers]
        atomic_write(out_dir / "answers.jsonl", "\n".join(lines) + "\n")
    if diagnostics is not None:
        report["diagnostics"] = {**diagnostics.metrics(), "warnings": diagnostics.warnings()}
    atomic_write(out_dir / "eval.json", json.dumps(report, indent=1))
    if paths.get("checkpoint") is not None:  # final/'s model card gets the figures (before MLflow logs the folder)
        from zhyper.pretrained import card_after_evaluation

        card_after_evaluation(paths["checkpoint"], out_dir / "eval.json")
    md = eval_markdown(cfg, metrics, result, speed, confusion, diagnostics)
    atomic_write(out_dir / "eval.md", md)
    tracker.log_metrics(_finite({**report.get("compliance", {}), **report.get("retention", {}),
                                 **(diagnostics.metrics() if diagnostics is not None else {})}), cfg.train.max_steps)
    for name in ("eval.md", "eval.json", "confusion.png", "answers.jsonl"):
        if (out_dir / name).is_file():
            tracker.log_artifacts(out_dir / name)
    for key, path in paths.items():
        tracker.log_artifacts(path, "zhyper_checkpoint" if key == "checkpoint" else key)
    return md
