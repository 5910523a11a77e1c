"""Composition table and strength-dial curve of an IFEval-trained checkpoint; writes docs/composition.md + dial.png.

Pairs of trained IFEval types whose checkers can both pass, on the IFEval source's held-out prompts
(never trained on), with held-out instruction texts: both descriptions together (combined as
modulations and as one text), each alone. The dial: one type's description at weights 0 .. 1.5,
compliance (official checker) and content retention at each weight.

Run:  OMP_NUM_THREADS=2 python tools/compose_experiments.py --checkpoint runs/ifeval/final [--prompts 6]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

DIAL_TYPES = ["change_case:english_lowercase", "detectable_format:json_format", "detectable_content:postscript",
              "punctuation:no_comma"]
WEIGHTS = [0.0, 0.25, 0.5, 1.0, 1.5]


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for c, points in curve.items():
        ws = sorted(points)
        ax1.plot(ws, [points[w][0] for w in ws], marker="o", label=c.split(":")[-1])
        ax2.plot(ws, [points[w][1] for w in ws], marker="o", label=c.split(":")[-1])
    ax1.set(xlabel="weight on the description", ylabel="compliance (official checker)", ylim=(-0.05, 1.05))
    ax2.set(xlabel="weight on the description", ylabel="content retention (vs adapters off)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--no-dial", action="store_true", help="the pairs only (no strength-dial curve)")
    parser.add_argument("--base-model", default="smollm2", help="the base the run trained on (its cached answers)")
    args = parser.parse_args()

    from zhyper import ZhyperModel
    from zhyper.data.ifeval import EVAL_PAIRS, load_ifeval, training_prompts
    from zhyper.evaluation.composition import dial, pair_compliance
    from zhyper.generation import plain_answers
    from zhyper.io import atomic_write

    model = ZhyperModel.from_pretrained(args.checkpoint).eval()
    data = load_ifeval(plain_answers(args.base_model, training_prompts()))
    prompts = list(dict.fromkeys(data.split("validation")["prompt"]))[:args.prompts]
    pairs = pair_compliance(model, data, EVAL_PAIRS, prompts)
    curve = {} if args.no_dial else dial(model, data, DIAL_TYPES, WEIGHTS, prompts, n_questions=args.questions)
    out = Path(args.out)
    md = f"Composition ({len(prompts)} held-out prompts per pair, held-out instruction texts):\n\n{pairs.markdown()}\n"
    if curve:
        plot(curve, out / "dial.png")
        md += _dial_markdown(curve, args.questions)
    atomic_write(out / "composition.md", md)
    atomic_write(out / "composition.json", json.dumps({"pairs": {" + ".join(k): v for k, v in pairs.counts.items()},
                                                        "dial": {c: {str(w): v for w, v in p.items()}
                                                                 for c, p in curve.items()}}, indent=1))
    print(md)


def _dial_markdown(curve: dict, questions: int) -> str:
    rows = ["| type | " + " | ".join(f"w={w}" for w in WEIGHTS) + " |", "|---|" + "---|" * len(WEIGHTS)]
    for c, points in curve.items():
        rows.append(f"| {c} | " + " | ".join(
            f"{points[w][0]:.2f} / {'–' if math.isnan(points[w][1]) else f'{points[w][1]:.2f}'}" for w in WEIGHTS) + " |")
    return ("\nStrength dial (compliance / content retention relative to adapters off, "
            f"{questions} factual questions):\n\n" + "\n".join(rows) + "\n")

if __name__ == "__main__":
    main()
