"""Held-out AskX questions answered under each culture's held-out description, side by side (Markdown).

The questions come from the validation split (the last 10 % of each culture's rows, never trained on);
each is asked under every seen culture's first held-out description (never trained on either) and
with adapters off, greedy. Writes ``<out>/askx_side_by_side.md`` and prints it.

Run:  python tools/askx_side_by_side.py --checkpoint runs/askx-china-africa/final \\
          --setting launch/configs/askx_china_africa_setting.yaml [--questions 10] [--out runs/askx-china-africa]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def pick_questions(data, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (culture, question) pairs from the validation split, alternating cultures, seeded."""
    val = data.split("validation")
    by_culture: dict[str, list[str]] = {}
    for culture, question in zip(val["context"], val["question"]):
        by_culture.setdefault(culture, []).append(question)
    rng = random.Random(seed)
    for questions in by_culture.values():
        rng.shuffle(questions)
    order = sorted(by_culture)
    return [(order[i % len(order)], by_culture[order[i % len(order)]][i // len(order)]) for i in range(n)]


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " …"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default="../shared/data/askx", help="the AskX folder (cultures/, csv/)")
    parser.add_argument("--setting", default="launch/configs/askx_china_africa_setting.yaml")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", default=None, help="folder for askx_side_by_side.md (default: the checkpoint's)")
    args = parser.parse_args()

    from zhyper import ZhyperModel
    from zhyper.data.askx import load_askx
    from zhyper.io import atomic_write

    model = ZhyperModel.from_pretrained(args.checkpoint).eval()
    data = load_askx(args.data, args.setting, drop_system_message=True)
    pairs = pick_questions(data, args.questions)
    questions = [q for _, q in pairs]
    cultures = list(data.seen_contexts)
    answers = {c: model.generate(questions, data.heldout_descriptions[c][0], max_new_tokens=args.max_new_tokens,
                                 do_sample=False) for c in cultures}
    with model.adapters_off():
        answers["adapters off"] = model.generate(questions, "none", max_new_tokens=args.max_new_tokens,
                                                 do_sample=False)
    head = ["question (its culture)", *(f"under {c}" for c in cultures), "adapters off"]
    lines = ["Descriptions (held out, never trained on): "
             + "; ".join(f"{c}: \"{data.heldout_descriptions[c][0]}\"" for c in cultures) + "\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (culture, q) in enumerate(pairs):
        cells = [f"{_cell(q, 160)} ({culture})", *(_cell(answers[c][i]) for c in [*cultures, "adapters off"])]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out or Path(args.checkpoint).parent)
    atomic_write(out / "askx_side_by_side.md", text)
    print(text)


if __name__ == "__main__":
    main()
