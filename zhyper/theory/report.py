"""Outputs of ``zhyper theory verify``: text tables, CSV files and a log-log plot, written atomically."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from zhyper.io import atomic_write

from .verify import SWEEPS, Row, Slope


def _csv_bytes(items) -> bytes:
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(items[0])]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow(dataclasses.asdict(item))
    return buf.getvalue().encode()


def write_csv(path: Path, items: list) -> Path:
    """One row per dataclass item (``Row`` or ``Slope``), header from the field names."""
    if not items:
        raise ValueError(f"nothing to write to {path}: no rows")
    atomic_write(Path(path), _csv_bytes(items))
    return Path(path)


def format_rows(rows: list[Row]) -> str:
    head = (f"{'sweep':<6} {'class':<12} {'N':>5} {'r':>3} {'d_in':>5} {'d_out':>5}  {'R̂':>9} "
            f"{'95% CI':>21}  {'bound':>9} {'R̂/bound':>8}  holds")
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]"
        ratio = r.estimate / r.bound if r.bound > 0 else float("nan")
        flag = ("yes" if r.holds else "NO") + ("" if r.exact_sup else " (sup searched: under-estimate)")
        lines.append(f"{r.sweep:<6} {r.cls:<12} {r.n:>5} {r.r:>3} {r.d_in:>5} {r.d_out:>5}  {r.estimate:>9.4g} "
                     f"{ci:>21}  {r.bound:>9.4g} {ratio:>8.3f}  {flag}")
    return "\n".join(lines)


def format_slopes(slopes: list[Slope]) -> str:
    head = f"{'class':<13}{'sweep':<7}{'slope':>8}{'expected':>10}  ok"
    lines = [head, "-" * len(head)]
    for s in slopes:
        if isinstance(s.expected, tuple):
            exp = "> 0" if s.expected[1] == float("inf") else f"[{s.expected[0]:g}, {s.expected[1]:g}]"
        else:
            exp = f"{s.expected:+.2f}"
        lines.append(f"{s.cls:<13}{s.sweep:<7}{s.measured:>+8.3f}{exp:>10}  {'yes' if s.ok else 'NO'}")
    return "\n".join(lines)


def plot(path: Path, rows: list[Row], title: str = "") -> Path:
    """One log-log panel per swept variable: R̂ (markers, CI bars) and its bound (dashed) per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sweeps = [s for s in SWEEPS if any(r.sweep == s for r in rows)]
    classes = list(dict.fromkeys(r.cls for r in rows))
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, sweep in zip(axes[0], sweeps):
        for k, name in enumerate(classes):
            sel = [r for r in rows if r.sweep == sweep and r.cls == name]
            if not sel:
                continue
            xs = [getattr(r, sweep) for r in sel]
            color = colors[k % len(colors)]
            ax.errorbar(xs, [r.estimate for r in sel], yerr=[[r.estimate - r.ci_low for r in sel],
                        [r.ci_high - r.estimate for r in sel]], marker="o", ms=3, color=color, label=name)
            ax.plot(xs, [max(r.bound, 1e-12) for r in sel], ls="--", color=color, lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({getattr(r, sweep) for r in rows if r.sweep == sweep})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(sweep)
        ax.set_ylabel("empirical Rademacher complexity")
        ax.grid(True, which="both", lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(classes), fontsize=8,
               title="markers with 95% CI: R̂;  dashed: its bound", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
