"""Same-budget comparison: Zhyper diag / square / full, multi-task LoRA with and without the description
in the prompt, and the base model with the description in its prompt. One command, two seeds.

    .venv/bin/python benchmarks/compare_methods.py [--seeds 0 1] [--out runs/compare] [--doc docs/results.md]
    .venv/bin/python benchmarks/compare_methods.py --config launch/configs/ifeval.yaml --section ifeval \
        --methods "Zhyper diag" "Zhyper square" "LoRA, description in prompt" --common train.max_steps=200

Every method is a real run of ``launch/train.py`` with ``launch/configs/default.yaml`` (the main job:
same data, contexts, steps, batch, schedule, tokens, evaluation) plus only the overrides in
``METHODS``; the base model's figures come from the adapters-off answers of the same runs. Writes a
Markdown table (``--doc``) and a bar chart next to it, and reuses finished runs (``--force`` reruns). With ``--section NAME`` the table goes between the
``<!-- compare:NAME -->`` markers of the document (appended when absent) and the rest is kept, so one
document holds the comparison of several recipes (the main job's and ``launch/configs/ifeval.yaml``'s).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sweep import REPO, fmt, run_variant, summary  # noqa: E402

METHODS: dict[str, list[str]] = {
    "Zhyper diag": [],
    "Zhyper square": ["model.mode=square"],
    "Zhyper full (T2L-style)": ["model.mode=full"],
    # IFEval only: 600 extra rows under two types at once (the composition ablation, docs/results.md)
    "Zhyper diag, pair rows": ["data.pairs=600"],
    # the description-contrastive loss acts on the hypernetwork: LoRA has none (same data, steps, tokens)
    "LoRA, description in prompt": ["method=lora", "data.description_in_prompt=true", "train.contrast_weight=0"],
    "LoRA, no description": ["method=lora", "data.description_in_prompt=false", "train.contrast_weight=0"],
}
# the paper's ablations (issue: rank x mode Pareto, shared factors frozen or joint, position embeddings):
# the recipe's rank is 8; these rows change one thing each
for _rank in (4, 16):
    METHODS[f"Zhyper diag, rank {_rank}"] = [f"model.rank={_rank}"]
    METHODS[f"Zhyper square, rank {_rank}"] = ["model.mode=square", f"model.rank={_rank}"]
    METHODS[f"LoRA, description in prompt, rank {_rank}"] = [*METHODS["LoRA, description in prompt"],
                                                               f"model.rank={_rank}"]
# {out} is the sweep's folder and {seed} the seed: the frozen factors are those of the same seed's prompted LoRA
METHODS["Zhyper diag, A/B frozen from the prompted LoRA"] = [
    "model.freeze_factors_from={out}/lora_description_in_prompt.seed{seed}/final"]
METHODS["Zhyper diag, no position embeddings"] = ["model.position_embeddings=false"]
# deliberately collapsed (the diagnostics' negative control): z pinned to 1, every context alike; no answers asked
METHODS["Zhyper diag, collapsed on purpose"] = ["train.modulation_l2=1000", "eval.generate=false"]
# an attempt at a context-ignorant run (the other negative control): noise 20x the embedding's norm drowns the
# description in training, no contrastive term or null context to undo it (measured: weakened, not ignorant)
METHODS["Zhyper diag, descriptions drowned in noise"] = ["train.embedding_noise=1.0", "train.contrast_weight=0",
                                                      "data.null_context=false", "eval.generate=false"]
ABLATIONS = [m for m in METHODS if "rank " in m or m.startswith("Zhyper diag, ") and "pair" not in m]
BASE = "Base model, description in prompt"


def _mean(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    spread = (max(vals) - min(vals)) / 2 if len(vals) > 1 else None
    return m, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if "pair" not in m and m not in ABLATIONS])
    parser.add_argument("--common", nargs="*", default=[], help="overrides added to every method")
    parser.add_argument("--config", default="launch/configs/default.yaml", help="the recipe every method starts from")
    parser.add_argument("--section", default=None,
                        help="write the table as this named section of --doc (keeping the rest), not its head")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--timeout-h", type=float, default=4.0,
                        help="hours one run may take before it is stopped (default 4: a run on a busy machine took over 1)")
    parser.add_argument("--no-base-prompt", action="store_true",
                        help="do not ask the base model with the description in its prompt (a sweep run method by "
                             "method asks it once, in its first run)")
    parser.add_argument("--tabulate", action="store_true",
                        help="run nothing: write the table from the finished runs (a method/seed not run is left out)")
    parser.add_argument("--earlier", default=None,
                        help="with --tabulate: a table's JSON written earlier (e.g. docs/results_ifeval.json) whose "
                             "rows fill in a method/seed not run in --out (same recipe and budget; marked in the table)")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    rows: dict[str, list[dict]] = {}
    args.earlier_rows = json.loads((REPO / args.earlier).read_text()) if args.earlier else {}
    for seed in args.seeds:  # seed-major: one seed of every method is finished before the next seed starts
        for m, name in enumerate(args.methods):
            _run_one(args, out, rows, m, name, seed)
        write_doc(REPO / args.doc, rows, args)  # after every seed: a long sweep cut short keeps its table


def run_name(method: str) -> str:
    """The run folder's name of a method (its seed is appended): lower case, no punctuation, no path separator."""
    return "".join(c for c in method.lower().replace(" ", "_") if c.isalnum() or c == "_")


def _run_one(args, out: Path, rows: dict[str, list[dict]], m: int, name: str, seed: int) -> None:
    """Train and evaluate one method at one seed (or read its finished run), adding its row."""
    slug = run_name(name)
    # the base model's answers do not depend on what was trained: asked once per seed (first method)
    own = [f.replace("{out}", str(out)).replace("{seed}", str(seed)) for f in METHODS[name]]
    flags = [*args.common, *own, f"train.seed={seed}", f"data.seed={seed}",
             f"eval.base_prompt={'true' if m == 0 and not args.no_base_prompt else 'false'}"]
    print(f"== {name}, seed {seed}: {' '.join(flags)}", flush=True)
    if args.tabulate and not (out / f"{slug}.seed{seed}" / "eval.json").is_file():
        earlier = [r for r in args.earlier_rows.get(name, []) if r.get("seed") == seed]
        print(f"   not run: {'from ' + args.earlier if earlier else 'left out'}", flush=True)
        if earlier:
            rows.setdefault(name, []).extend({**r, "earlier": True} for r in earlier)
        if m == 0 and earlier:
            rows.setdefault(BASE, []).extend({**r, "earlier": True} for r in args.earlier_rows.get(BASE, [])
                                             if r.get("seed") == seed)
        return
    try:
        result = run_variant(f"{slug}.seed{seed}", flags, out, config=args.config, force=args.force,
                             timeout=args.timeout_h * 3600)
    except RuntimeError as err:  # one failed run leaves its row out (the log says why); the sweep goes on
        print(f"   failed: {err}", flush=True)
        return
    if "diagnostics" not in result and (out / f"{slug}.seed{seed}" / "final" / "zhyper_config.json").is_file():
        result["diagnostics"] = _diagnostics(out / f"{slug}.seed{seed}" / "final")  # a run older than the diagnostics
    rows.setdefault(name, []).append({**summary(result), "seed": seed})
    if m == 0:
        comp = result.get("compliance", {})
        rows.setdefault(BASE, []).append({
            "seed": seed, **{f"heldout_{split}{se}": comp.get(f"compliance_base_prompt_{split}{se}")
                             for split in ("seen", "unseen") for se in ("", "_se")}})


def _diagnostics(checkpoint: Path) -> dict:
    from zhyper.evaluation.diagnostics import inspect_checkpoint

    return inspect_checkpoint(checkpoint).metrics()


COLUMNS = [("seed", "seeds", 0), ("n_trainable", "trainable params", 0), ("step_time_s", "step s", 2),
           ("heldout_seen", "held-out compliance, seen", 2), ("paraphrase_seen", "paraphrase compliance, seen", 2),
           ("worst", "worst seen rule", 2), ("random_excess_max", "random control excess (max)", 2),
           ("seen_gap", "seen gap", 3), ("unseen_gap", "unseen gap", 3),
           ("heldout_unseen", "unseen compliance", 2), ("retention_mean", "content retention (mean)", 2),
           ("retention_worst", "content retention (worst context)", 2),
           ("spread", "z spread (collapse)", 4), ("description_share", "description share (ignorance)", 3),
           ("train_min", "training min", 1)]


# columns shown with ± 2 standard errors from held-out data (averaged over seeds)
SE = {"heldout_seen": "heldout_seen_se", "paraphrase_seen": "paraphrase_seen_se", "seen_gap": "seen_gap_se",
      "unseen_gap": "unseen_gap_se", "heldout_unseen": "heldout_unseen_se"}


def _table(rows: dict[str, list[dict]]) -> tuple[list[str], dict]:
    """The Markdown table of the rows (means over seeds, ± 2 s.e.) and the chart's values per method."""
    lines = ["| method | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    chart = {}
    for name, runs in rows.items():
        cells = [_cell(runs, key, digits) for key, _, digits in COLUMNS]
        if name != BASE:
            worst = {r.get("worst_rule") for r in runs}
            cells[5] += f" {'/'.join(sorted(w for w in worst if w))}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        chart[name] = (_mean([r.get("paraphrase_seen") or r.get("heldout_seen") for r in runs])[0],
                       _mean([r.get("heldout_unseen") for r in runs])[0])
    return lines, chart


def _cell(runs: list[dict], key: str, digits: int) -> str:
    m, spread = _mean([r.get(key) for r in runs])
    if key == "seed":  # * marks a seed whose row comes from --earlier
        return ",".join(f"{r['seed']}{'*' if r.get('earlier') else ''}" for r in runs)
    if m is None:
        return "-"
    if key == "n_trainable":
        return f"{int(m):,}"
    se = _mean([r.get(SE.get(key, ""), None) for r in runs])[0] if key in SE else None
    return fmt(m, se, digits) + (f" (seeds ± {spread:.{digits}f})" if spread else "")


def _command(args) -> str:
    seeds = " ".join(str(s) for s in args.seeds)
    extra = "".join(f" --{k} {getattr(args, k)}" for k in ("config", "section", "out")
                    if getattr(args, k) != {"config": "launch/configs/default.yaml", "section": None,
                                            "out": "runs/compare"}[k])
    methods = "" if args.methods == [m for m in METHODS if "pair" not in m and m not in ABLATIONS] else " --methods " + " ".join(f'"{m}"' for m in args.methods)
    common = f" --common {' '.join(args.common)}" if args.common else ""
    return f".venv/bin/python benchmarks/compare_methods.py --seeds {seeds}{extra}{methods}{common}"


def write_doc(path: Path, rows: dict[str, list[dict]], args) -> None:
    from zhyper.io import atomic_write

    lines, chart = _table(rows)
    png = path.with_name(f"{path.stem}_{args.section}.png") if args.section else path.with_suffix(".png")
    _bar_chart(png, chart)
    if args.section:
        atomic_write(path, _with_section(path, args.section, _section_text(rows, lines, png, args)))
        atomic_write(png.with_suffix(".json"), json.dumps(rows, indent=1, default=str))
        return
    text = _head_text(rows, lines, png, args)
    atomic_write(path, text + _kept_sections(path))
    atomic_write(path.with_suffix(".json"), json.dumps(rows, indent=1, default=str))


def _section_text(rows: dict[str, list[dict]], lines: list[str], png: Path, args) -> str:
    missing = [n for n in args.methods if n not in rows]
    return (f"Reproduce: `{_command(args)}` (runs in `{args.out}/`; each method is one run of "
            f"`{args.config}` with the overrides below and the common ones).\n\n"
            "Figures are means over the seeds, ± 2 standard errors from held-out data, with half the range "
            "between seeds in brackets where a method ran more than one seed. Compliance is description-only "
            "(neutral held-out prompts, the instruction's held-out text as the description; for LoRA in its prompt); "
            "content retention is the fraction of factual answers keeping their fact under each trained "
            "context, relative to adapters off.\n\n" + "\n".join(lines)
            + (f"\n\nNot run for this table: {', '.join(missing)}." if missing else "")
            + (f"\n\nA seed marked * is a row of `{args.earlier}` (the same recipe and budget, run earlier; its "
               "checkpoint was not kept, so it has no diagnostics)." if any(r.get("earlier") for v in rows.values()
                                                                          for r in v) else "")
            + f"\n\n![compliance]({png.name})\n\nOverrides per method:\n\n"
            + "\n".join(f"- {n}: `{' '.join(METHODS[n]) or '(the recipe as is)'}`" for n in rows if n in METHODS)
            + f"\n- {BASE}: the adapters-off answers of the first method's runs, description in the prompt.\n")


def _with_section(path: Path, name: str, body: str) -> str:
    """The document with the text between ``<!-- compare:name -->`` markers replaced (appended when absent)."""
    begin, end = f"<!-- compare:{name} -->", f"<!-- /compare:{name} -->"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if begin in old and end in old:
        return old[:old.index(begin) + len(begin)] + "\n" + body + old[old.index(end):]
    return old.rstrip("\n") + f"\n\n{begin}\n{body}{end}\n"


def _head_text(rows: dict[str, list[dict]], lines: list[str], png: Path, args) -> str:
    return (f"# Results: Zhyper against its baselines at the main job's budget\n\n"
            f"Reproduce: `{_command(args)}` "
            f"(each method is `bash make.sh train` with the overrides below; runs in `{args.out}/`; the "
            "seeds column says which seeds each row averages).\n\n"
            "Figures are means over the seeds, ± 2 standard errors from the held-out data (compliance: "
            "binomial, 0 when no answer passes: each run's eval.md has Agresti-Coull intervals; gaps: paired over "
            "validation examples), with half the range between seeds in brackets "
            "where a method ran more than one seed. Compliance: "
            "fraction of greedy answers passing the rule's checker (16 paraphrase answers and 8 held-out "
            "answers per rule and seed). Random control excess: for each seen rule, the rate at which random strings "
            "and unrelated sentences as the description produce answers passing that rule, minus the rate "
            "of the base model with no description; the largest over the seen rules. Gaps: loss with the "
            "right description minus with another context's, nats/token (negative: the description is used).\n\n"
            + "\n".join(lines) + "".join(f"\n\nNot run for this table: {', '.join(missing)}." for missing in
                                          [[n for n in args.methods if n not in rows]] if missing)
            + f"\n\n![compliance]({png.name})\n\nOverrides per method:\n\n"
            + "\n".join(f"- {n}: `{' '.join(METHODS[n]) or '(default.yaml)'}`" for n in rows if n in METHODS)
            + f"\n- {BASE}: the adapters-off answers of the runs above, description in the prompt.\n"
            + "\nEvery method trains on the main job's data (null context and augmented descriptions included) "
            "with q_proj/v_proj targets; only Zhyper has the description-contrastive term, which acts on the "
            "hypernetwork. The recipe's ablation (docs/training.md) also ran multi-task LoRA on all-linear "
            "targets with the description in the prompt, without the null context and augmentation: paraphrase "
            "compliance 0.76 ± 0.08, but every random description gave lower-case answers (random control excess 1.00).\n")


KEEP_MARKER = "<!-- the sections below are not written by compare_methods.py: it keeps them -->"


def _kept_sections(path: Path) -> str:
    """What follows ``KEEP_MARKER`` in the existing document (other results, e.g. IFEval), with the marker."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    return "\n" + old[old.index(KEEP_MARKER):] if KEEP_MARKER in old else ""
    print(text)


def _bar_chart(path: Path, chart: dict[str, tuple[float | None, float | None]]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhyper.io import atomic_write

    names = list(chart)
    seen = [chart[n][0] or 0.0 for n in names]
    unseen = [chart[n][1] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], seen, 0.4, label="seen rules, paraphrased descriptions")
    ax.bar([i + 0.2 for i in x], unseen, 0.4, label="unseen rules")
    ax.set_xticks(list(x), [n.replace(", ", ",\n") for n in names], fontsize=7)
    ax.set_ylabel("compliance")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


if __name__ == "__main__":
    main()
