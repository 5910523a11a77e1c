"""What a run reports: the gaps in words, the compliance and control tables, the confusion heatmap."""

from __future__ import annotations

import math
from pathlib import Path

GAPS = (("seen_gap", "seen rules, held-out descriptions"),
        ("seen_paraphrase_gap", "seen rules, held-out paraphrases"),
        ("unseen_gap", "unseen rules"))


def describe_gap(gap: float, se: float, what: str = "Conditioning gap") -> str:
    """One sentence on a paired gap and whether it is distinguishable from zero (2 s.e.)."""
    if not (math.isfinite(gap) and math.isfinite(se)):
        return f"{what}: not finite ({gap}, s.e. {se}): the run diverged; nothing can be concluded."
    verdict = ("clearly negative: the modulation carries the description" if gap + 2 * se < 0 else
               "clearly positive: the right description hurts" if gap - 2 * se > 0 else
               "not distinguishable from zero: no conditioning effect measured")
    return f"{what} {gap:+.4f} ± {2 * se:.4f} nats/token (2 s.e., paired over examples): {verdict}."


def interval(p: float, n: int) -> float:
    """Half-width of the ~95 % interval of a proportion: 2 s.e. of the Agresti-Coull estimate
    (x + 2) / (n + 4), which, unlike the plain binomial s.e., is not zero when p is 0 or 1."""
    q = (p * n + 2) / (n + 4)
    return 2 * math.sqrt(q * (1 - q) / (n + 4))


def _pct(p: float, n: int | None = None) -> str:
    if n == 0 or p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    if n is None:
        return f"{p:.2f}"
    return f"{p:.2f} ± {interval(p, n):.2f}"


def gap_lines(metrics: dict[str, float]) -> list[str]:
    """One sentence per gap present in ``metrics``, then one per context's own gap (``{split}_gap/<context>``)."""
    lines = [describe_gap(metrics[k], metrics[f"{k}_se"], f"Gap, {what}:") for k, what in GAPS
             if k in metrics and f"{k}_se" in metrics]
    for split in ("seen", "unseen"):
        if metrics.get(f"{split}_gap_unpaired"):
            lines.append(f"Gaps, {split}: {int(metrics[f'{split}_gap_unpaired'])} example(s) left out: the description "
                         "in the prompt left them fewer response tokens within max_length under one description "
                         "than under another.")
    for key in sorted(k for k in metrics if "_gap/" in k):
        split, context = key.split("_gap/", 1)
        se = metrics.get(f"{split}_gap_se/{context}")
        if se is not None:
            lines.append(describe_gap(metrics[key], se, f"Gap, {split} context {context} (its own examples):"))
    return lines


def compliance_markdown(result) -> str:
    """Per-rule compliance under each condition, with the controls beside it (Markdown)."""
    head = ("| rule | split | held-out descr. | paraphrases | random control | wrong descr. | adapters off "
            "| base+prompt |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for rule in result.rules:
        split = "seen" if rule in result.seen else "unseen"
        cells = [_pct(*result.compliance("heldout", rule)), _pct(*result.compliance("paraphrase", rule)),
                 _pct(*result.random_rate(rule)), _pct(*result.wrong_rate(rule)), _pct(*result.base_rate(rule)),
                 _pct(*result.compliance("base+prompt", rule))]
        lines.append(f"| {rule} | {split} | " + " | ".join(cells) + " |")
    for split, rules in (("seen", result.seen), ("unseen", result.unseen)):
        if not rules:
            continue
        cells = []
        for condition in ("heldout", "paraphrase"):
            p, _, n = result.mean(condition, rules)
            cells.append(f"**{p:.2f} ± {interval(p, n):.2f}**" if n else "-")
        rnd = [result.random_rate(r)[0] for r in rules]
        wrong = [result.wrong_rate(r)[0] for r in rules]
        base = [result.base_rate(r)[0] for r in rules]
        bp = result.mean("base+prompt", rules)
        cells += [_mean(rnd), _mean(wrong), _mean(base), f"{bp[0]:.2f} ± {interval(bp[0], bp[2]):.2f}" if bp[2] else "-"]
        lines.append(f"| **mean, {split}** | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    return f"{sum(values) / len(values):.2f}" if values else "-"


def confusion_png(result, path: str | Path, condition: str = "paraphrase", title: str | None = None) -> Path:
    """Heatmap of the confusion matrix (description of row → fraction passing column's checker) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhyper.io import atomic_write

    labels, matrix = result.confusion(condition)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(result.rules), 1.2 + 0.45 * len(labels)))
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(result.rules)), result.rules, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 else "white")
    ax.set_xlabel("answer passes this rule's checker")
    ax.set_ylabel("description given" + ("" if condition == "heldout" else f" ({condition})"))
    ax.set_title(title or "Confusion: description of rule X → fraction of answers passing rule Y", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def examples_markdown(result, per_condition: int = 1, max_chars: int = 100) -> str:
    """A few answers per (condition, rule), to see what the numbers count."""
    seen: dict[tuple[str, str], int] = {}
    lines = ["| condition | description of | description | answer |", "|---|---|---|---|"]
    for it, answer in result.answers:
        key = (it.condition, it.source)
        if seen.get(key, 0) >= per_condition or it.condition not in ("paraphrase", "random"):
            continue
        seen[key] = seen.get(key, 0) + 1
        clip = answer.strip().replace("\n", "⏎").replace("|", "\\|")
        lines.append(f"| {it.condition} | {it.source} | {it.description[:60].replace('|', '/')} | "
                     f"{clip[:max_chars]} |")
    return "\n".join(lines)
