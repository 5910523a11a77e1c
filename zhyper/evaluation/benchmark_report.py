"""The benchmark protocol's report: ``benchmarks.md`` (table), ``benchmarks.json``, ``benchmarks.png`` (chart).

Rows are conditions, columns tasks. A cell of the table reads ``0.652 ± 0.022 (−0.004 ± 0.006)``:
lm-eval's score of the task's primary metric ± 2 s.e. (lm-eval's own standard error), and in
brackets the paired difference from adapters off on the same documents ± 2 s.e. and the share of
documents whose score changed at all (a difference near 0 can hide answers flipped both ways). The K descriptions
(and R random strings) have one row for their mean, with the spread across them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from zhyper.evaluation.benchmarks import GROUPED, REFERENCE

GROUP_LABEL = {"descriptions": "benchmark's descriptions (mean of {k})", "random": "random strings (mean of {k})",
               "description_in_prompt": "base, description in prompt (mean of {k})"}


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _score(entry: Mapping, metric: str) -> str:
    name, _, filt = metric.partition(",")
    se = entry.get(f"{name}_stderr,{filt}")
    value = _fmt(entry.get(metric))
    return value if not isinstance(se, (int, float)) else f"{value} ± {2 * se:.3f}"


def _diff(d: Mapping | None) -> str:
    if not d or not d.get("n"):
        return ""
    changed = d.get("changed")
    tail = f"; {changed:.0%} changed" if isinstance(changed, float) and not math.isnan(changed) else ""
    return f" ({_fmt(d['diff'], True)} ± {d['two_se']:.3f}{tail})"


def rows_of(task: Mapping) -> list[tuple[str, str]]:
    """(label, cell text) for one task: adapters off, the groups, then every single cell."""
    metric = task["metric"]
    out = []
    for cid, entry in task["conditions"].items():
        if entry["condition"] == REFERENCE:
            out.append(("adapters off (base model)", _score(entry, metric)))
    for group, g in task["groups"].items():
        text = f"{_fmt(g['mean'])} (sd {g['sd_across']:.3f}, {_fmt(g['min'])}–{_fmt(g['max'])})"
        out.append((GROUP_LABEL[group].format(k=g["k"]), text + _diff(g["paired_vs_adapters_off"])))
    for cid, entry in task["conditions"].items():
        if entry["condition"] != REFERENCE:
            label = cid if entry["condition"] in GROUPED else cid.replace("contexts:", "context ")
            out.append((label, _score(entry, metric) + _diff(entry["paired_vs_adapters_off"].get(metric))))
    return out


def markdown(summary: Mapping) -> str:
    tasks = summary["tasks"]
    table: dict[str, dict[str, str]] = {}
    for name, task in tasks.items():
        for label, text in rows_of(task):
            table.setdefault(label, {})[name] = text
    head = [f"{n} ({t['metric']}, n={t['n']})" for n, t in tasks.items()]
    lines = ["# Benchmarks (lm-evaluation-harness)", "",
             "Score ± 2 s.e.; in brackets the paired difference from adapters off on the same documents ± 2 s.e. "
             "and the share of documents whose score changed",
             "", "| condition | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for label, cells in table.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(n, "") for n in tasks) + " |")
    lines += ["", "## Descriptions", ""]
    for name, task in tasks.items():
        for cid, entry in task["conditions"].items():
            if entry.get("description") and entry["condition"] != "description_in_prompt":
                lines.append(f"- {name} `{cid}`: {entry['description']!r}")
    settings = summary["settings"]
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    return "\n".join(lines)


def chart_png(summary: Mapping) -> bytes:
    """PNG: per task, each condition's paired difference from adapters off (points with 2 s.e. bars)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 0.6 + 0.32 * _n_rows(tasks)), squeeze=False)
    for ax, (name, task) in zip(axes[0], tasks.items()):
        labels, diffs, errs = _chart_rows(task)
        ax.errorbar(diffs, range(len(labels)), xerr=errs, fmt="o", ms=4, capsize=2)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{name} ({task['metric']})", fontsize=9)
        ax.set_xlabel("paired difference from adapters off", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _n_rows(tasks: Mapping) -> int:
    return max(len(_chart_rows(t)[0]) for t in tasks.values())


def _chart_rows(task: Mapping) -> tuple[list[str], list[float], list[float]]:
    metric, labels, diffs, errs = task["metric"], [], [], []
    for group, g in task["groups"].items():
        labels.append(GROUP_LABEL[group].format(k=g["k"]))
        diffs.append(g["paired_vs_adapters_off"]["diff"])
        errs.append(g["paired_vs_adapters_off"]["two_se"])
    for cid, entry in task["conditions"].items():
        d = entry["paired_vs_adapters_off"].get(metric)
        if entry["condition"] not in (REFERENCE, *GROUPED) and d:
            labels.append(cid.replace("contexts:", "context "))
            diffs.append(d["diff"])
            errs.append(d["two_se"])
    return labels, diffs, errs


def write(summary: Mapping, out_dir: str | Path) -> Path:
    """``benchmarks.md``, ``benchmarks.json`` and ``benchmarks.png`` into ``out_dir`` (each atomically)."""
    from zhyper.io import atomic_write

    out = Path(out_dir)
    atomic_write(out / "benchmarks.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write(out / "benchmarks.md", markdown(summary))
    atomic_write(out / "benchmarks.png", chart_png(summary))
    return out
