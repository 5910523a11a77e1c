"""Several IFEval answer files side by side: the official metrics and paired differences to a reference.

Reads ``answers_<condition>.jsonl`` files written by ``zhyper eval ifeval`` (any checkpoint, any
condition), re-scores them with the official checkers on the same rows, and prints a Markdown
table: prompt-level and instruction-level loose accuracy with Agresti-Coull intervals, and each
file minus the first (the reference) paired over the same prompts, ± 2 s.e. Rows are the first
``--limit`` prompts answered by every file.

Run:  python tools/ifeval_compare.py --data input_data.jsonl [--limit 120] [--subset all|heldout|multi] \\
          "adapters off=runs/ifeval/ifeval541/answers_adapters_off.jsonl" \\
          "Zhyper=runs/ifeval/ifeval541/answers_zhyper.jsonl"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_answers(path: str) -> dict[str, str]:
    """{str(key): response} of an answers file (the last line of a key wins)."""
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise SystemExit(f"{path}:{n}: not JSON; expected an answers file of zhyper eval ifeval") from None
        out[str(entry["key"])] = entry["response"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="LABEL=answers_<condition>.jsonl; the first is the reference")
    parser.add_argument("--data", help="IFEval's input_data.jsonl (default: the hub dataset google/IFEval)")
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--subset", choices=["all", "heldout", "multi"], default="all")
    args = parser.parse_args()

    from zhyper.data.ifeval import HELDOUT_TYPES
    from zhyper.evaluation import ifeval

    pairs = [f.split("=", 1) for f in args.files]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("files: expected LABEL=PATH for each answers file")
    answers = {label: read_answers(path) for label, path in pairs}
    rows = [r for r in ifeval.load_prompts(args.data, limit=args.limit)
            if all(str(r["key"]) in a for a in answers.values())]
    keep = {"all": None, "heldout": ifeval.heldout_only(HELDOUT_TYPES),
            "multi": lambda row: len(row["instruction_id_list"]) >= 2}[args.subset]
    print(table(rows, answers, keep, args.subset))


def table(rows: list[dict], answers: dict[str, dict[str, str]], keep, subset: str) -> str:
    from zhyper.evaluation import ifeval

    def cell(hits, n):
        lo, hi = ifeval.interval(hits, n)
        return f"{hits / n:.3f} [{lo:.2f}, {hi:.2f}]" if n else "-"

    ref_label = next(iter(answers))
    ref = [answers[ref_label][str(r["key"])] for r in rows]
    lines = [f"| answers | prompts ({subset}) | prompt loose | instruction loose | prompt loose − {ref_label} | "
             f"instruction loose − {ref_label} (per prompt) |", "|---|---|---|---|---|---|"]
    for label, by_key in answers.items():
        got = [by_key[str(r["key"])] for r in rows]
        s = ifeval.score(rows, got, keep)
        d = ifeval.paired_difference(rows, got, ref, keep)
        diff = [f"{m:+.3f} ± {se:.3f}" for m, se in (d["prompt_loose"], d["instruction_loose"])]
        lines.append(f"| {label} | {s.prompts} | {cell(s.prompt_loose, s.prompts)} | "
                     f"{cell(s.inst_loose, s.instructions)} | {diff[0]} | {diff[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
