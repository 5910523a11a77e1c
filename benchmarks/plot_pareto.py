"""The Pareto plot of an ablation table: trainable parameters (log) against description-only compliance.

    .venv/bin/python benchmarks/plot_pareto.py docs/results_ablations.json docs/results_pareto.png

Reads the rows ``compare_methods.py --section NAME`` writes beside its document
(``<doc>_<NAME>.json``: method -> one row per seed), plots each method's mean over its seeds with
± 2 standard errors (held-out answers, averaged over seeds) and joins the non-dominated methods
(no other method has at most as many parameters and a higher compliance). Methods without
trainable parameters or without a compliance figure (the prompted base model, a run that asked
no answers) are left out of the points and named in the caption. Prints the frontier.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE = "Base model, description in prompt"  # compare_methods.py's row of the prompted base model: a line, not a point


def points(rows: dict[str, list[dict]]) -> tuple[list[tuple[str, float, float, float]], list[str]]:
    """[(method, params, compliance, 2 s.e.)] of the methods that have both, and the names left out."""
    out, left = [], []
    for name, runs in rows.items():
        params = [r["n_trainable"] for r in runs if r.get("n_trainable")]
        comp = [r["heldout_seen"] for r in runs if r.get("heldout_seen") is not None]
        ses = [r["heldout_seen_se"] for r in runs if r.get("heldout_seen_se") is not None]
        if not params or not comp:
            left.append(name)
            continue
        out.append((name, sum(params) / len(params), sum(comp) / len(comp), 2 * sum(ses) / max(len(ses), 1)))
    return out, left


def frontier(pts: list[tuple[str, float, float, float]]) -> list[tuple[str, float, float, float]]:
    """The non-dominated points, by parameters ascending: each one is better than every cheaper one."""
    best, out = -1.0, []
    for p in sorted(pts, key=lambda p: (p[1], -p[2])):
        if p[2] > best:
            out.append(p)
            best = p[2]
    return out


# each family: (marker, colour); its rank points are joined by a thin line, so a mode's rank trend reads at a glance
FAMILIES = {"diag": ("o", "tab:blue"), "square": ("s", "tab:green"), "full": ("^", "tab:red"),
            "LoRA": ("D", "tab:orange")}


def family(name: str) -> tuple[str, bool]:
    """(mode family of a method row, whether it is an ablation rather than a rank point of that family)."""
    head, _, rest = name.partition(",")
    kind = "LoRA" if head.startswith("LoRA") else next((f for f in ("square", "full") if f in head), "diag")
    rest = rest.replace("description in prompt", "").strip(" ,")  # the LoRA rows' prompt is not an ablation
    return kind, bool(rest) and not rest.startswith("rank ")


def label(name: str) -> str:
    return name.replace("Zhyper ", "").replace("description in prompt", "prompted").replace(" (T2L-style)", "")


def _draw_points(ax, pts) -> None:
    lines: dict[str, list[tuple[float, float]]] = {}
    for name, x, y, e in pts:
        kind, ablation = family(name)
        marker, colour = FAMILIES[kind]
        ax.errorbar([x], [y], yerr=[e], fmt=marker, color=colour, capsize=3,
                    mfc="white" if ablation else colour, ms=6)
        ax.annotate(label(name), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        if not ablation:
            lines.setdefault(kind, []).append((x, y))
    for kind, xy in lines.items():
        if len(xy) > 1:
            xy.sort()
            ax.plot([p[0] for p in xy], [p[1] for p in xy], "-", lw=0.8, alpha=0.5, color=FAMILIES[kind][1])


def plot(pts, front, left: list[str], path: Path, reference: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhyper.io import atomic_write

    fig, ax = plt.subplots(figsize=(8, 4.8))
    _draw_points(ax, pts)
    ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="grey", label="non-dominated")
    if reference is not None:
        ax.axhline(reference, ls=":", color="black", label="base model, description in prompt (no training)")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("description-only compliance, trained types")
    ax.set_title("Zhyper diag (circles), square (squares), full (triangles); prompted multi-task LoRA (diamonds)\n"
                 "ranks of one mode joined (unnamed rank: the recipe's); hollow: ablation; ± 2 s.e.", fontsize=7)
    if left:
        fig.text(0.01, 0.01, "not plotted (no parameters or no answers): " + ", ".join(left), fontsize=6)
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", help="the JSON of rows compare_methods.py wrote beside its document")
    parser.add_argument("out", help="the PNG to write")
    args = parser.parse_args()
    rows = json.loads(Path(args.rows).read_text(encoding="utf-8"))
    pts, left = points(rows)
    front = frontier(pts)
    base = [r["heldout_seen"] for r in rows.get(BASE, []) if r.get("heldout_seen") is not None]
    plot(pts, front, [n for n in left if n != BASE], Path(args.out), sum(base) / len(base) if base else None)
    print("non-dominated:", "; ".join(f"{n} ({int(x):,} params, {y:.2f} ± {e:.2f})" for n, x, y, e in front))


if __name__ == "__main__":
    main()
