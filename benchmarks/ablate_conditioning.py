"""Which recipe makes conditioning hold? One real run of the main job's recipe per variant, one table.

    .venv/bin/python benchmarks/ablate_conditioning.py [--variants NAME ...] [--seeds 0 1] [--out runs/ablation]

Every variant is ``launch/train.py`` with ``launch/configs/default.yaml``, the levers switched off
(``COMMON``), plus the overrides listed in ``VARIANTS`` (two ZeRO-2 processes, as the main job), evaluated by the run's own evaluation: compliance of greedy answers with
held-out paraphrases (never trained on), the random-description control (how much more often a
random string or an unrelated sentence passes a rule's checker than the base model does), the
paired gaps on seen and unseen rules. Results go to ``<out>/ablation.md`` and ``ablation.json``;
finished variants are reused (``--force`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sweep import REPO, fmt, run_variant, summary  # noqa: E402

# Every variant starts from default.yaml with the three levers the main job now uses switched off and
# the main job's 400 steps, without periodic evaluation or checkpoints; then adds its own overrides.
COMMON = ["train.max_steps=400", "train.checkpoint_every=0", "eval.every=0", "eval.base_prompt=false",
          "data.null_context=false", "data.augment=0", "train.contrast_weight=0"]

VARIANTS: dict[str, list[str]] = {
    "levers_off": ["eval.base_prompt=true"],  # the previous main job (160 steps then; 400 here)
    "null": ["data.null_context=true"],
    "all_linear": ["model.target_modules=all-linear"],
    "all_linear+null": ["model.target_modules=all-linear", "data.null_context=true"],
    "all_linear+null+augment": ["model.target_modules=all-linear", "data.null_context=true", "data.augment=4"],
    "all_linear+null+augment+noise": ["model.target_modules=all-linear", "data.null_context=true", "data.augment=4",
                                      "train.embedding_noise=0.1"],
    "null+augment": ["data.null_context=true", "data.augment=4"],
    "null+augment+noise0.3": ["data.null_context=true", "data.augment=4", "train.embedding_noise=0.3"],
    "null+augment+contrast0.1": ["data.null_context=true", "data.augment=4", "train.contrast_weight=0.1"],
    "null+augment+contrast0.5": ["data.null_context=true", "data.augment=4", "train.contrast_weight=0.5"],
    "all_linear+null+augment+contrast0.1": ["model.target_modules=all-linear", "data.null_context=true",
                                            "data.augment=4", "train.contrast_weight=0.1"],
    "all_linear+null+augment+contrast0.5": ["model.target_modules=all-linear", "data.null_context=true",
                                            "data.augment=4", "train.contrast_weight=0.5"],
    "null+augment+contrast1.0": ["data.null_context=true", "data.augment=4", "train.contrast_weight=1.0"],
    "null+contrast0.5": ["data.null_context=true", "train.contrast_weight=0.5"],
    "augment+contrast0.5": ["data.augment=4", "train.contrast_weight=0.5"],
    "null+augment+contrast0.5+first3x": ["data.null_context=true", "data.augment=4", "train.contrast_weight=0.5",
                                          "train.first_tokens_weight=3"],
    "all24+null+augment+contrast0.5": ["data.contexts=[]", "data.null_context=true", "data.augment=4",
                                       "train.contrast_weight=0.5"],
    "siblings12+null+augment+contrast0.5": [
        "data.contexts=[upper_case,lower_case,json_answer,word_per_line,bullet_list,title_case,snake_case,hashtags,"
        "three_words,double_quoted,parentheses,exclaim,five_words,single_quoted,square_brackets,kebab_case,"
        "question_mark]", "data.null_context=true", "data.augment=4", "train.contrast_weight=0.5"],
    "lora_prompt_all_linear": ["method=lora", "data.description_in_prompt=true", "model.target_modules=all-linear"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"names from {list(VARIANTS)}")
    parser.add_argument("--extra", nargs="*", default=[], help="NAME=override,override ... ad-hoc variants")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--common", nargs="*", default=COMMON, help="overrides put before every variant's own")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    variants = {n: VARIANTS[n] for n in args.variants}
    for item in args.extra:
        name, _, flags = item.partition("=")
        variants[name] = [f for f in flags.split(",") if f]
    out = (REPO / args.out).resolve()
    rows = []
    for name, overrides in variants.items():
        for seed in args.seeds:
            tag = f"{name}.seed{seed}"
            flags = [*args.common, *overrides, f"train.seed={seed}", f"data.seed={seed}"]
            print(f"== {tag}: {' '.join(flags) or '(default.yaml)'}", flush=True)
            try:
                result = run_variant(tag, flags, out, threads=args.threads, force=args.force)
            except RuntimeError as err:
                print(f"   failed: {err}", flush=True)
                continue
            row = {"variant": name, "seed": seed, "flags": " ".join(overrides), **summary(result)}
            rows.append(row)
            print(f"   paraphrase {fmt(row['paraphrase_seen'], row['paraphrase_seen_se'])}, worst {row['worst_rule']} "
                  f"{fmt(row['worst'])}, random excess {fmt(row['random_excess_max'])} ({row['random_excess_rule']}), "
                  f"seen gap {fmt(row['seen_gap'], row['seen_gap_se'], 3)}, unseen gap "
                  f"{fmt(row['unseen_gap'], row['unseen_gap_se'], 3)}, {row['wall_s'] or 0:.0f} s", flush=True)
            write_table(out, rows, args.common)


def write_table(out: Path, rows: list[dict], common: list[str]) -> None:
    from zhyper.io import atomic_write

    lines = ["| variant | seed | paraphrase compliance, seen | worst seen rule | held-out compliance, seen "
             "| random excess (max rule) | seen gap | unseen gap | unseen compliance | step s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {fmt(r['paraphrase_seen'], r['paraphrase_seen_se'])} | "
                     f"{r['worst_rule']} {fmt(r['worst'])} | {fmt(r['heldout_seen'], r['heldout_seen_se'])} | "
                     f"{fmt(r['random_excess_max'])} ({r['random_excess_rule']}) | "
                     f"{fmt(r['seen_gap'], r['seen_gap_se'], 3)} | {fmt(r['unseen_gap'], r['unseen_gap_se'], 3)} | "
                     f"{fmt(r['heldout_unseen'], r['heldout_unseen_se'])} | {fmt(r['step_time_s'])} | "
                     f"{r['wall_s'] or 0:.0f} |")
    flags = [f"- {r['variant']}: `{r['flags'] or '(none)'}`" for r in rows if r["seed"] == rows[0]["seed"]]
    atomic_write(out / "ablation.md", "\n".join(lines) + f"\n\nFlags: `default.yaml {' '.join(common)}`, then "
                 "each variant's own:\n\n" + "\n".join(flags) + "\n")
    atomic_write(out / "ablation.json", json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
