"""Several IFEval answer files side by side: the official metrics and paired differences to a reference.

Reads ``answers_<condition>.jsonl`` files written by ``zhyper eval ifeval`` (any checkpoint, any
condition), re-scores them with the official checkers on the same rows, and prints a Markdown
table: prompt-level and instruction-level loose accuracy with Agresti-Coull intervals, and each
file minus the first (the reference) paired over the same prompts, ± 2 s.e. Rows are the first
``--limit`` prompts answered by every file (an answer to an older text of the prompt does not count).
A file holding several runs' answers (another checkpoint in the same ``--out``) is read for the run
its ``ifeval.json`` reports.

Run:  python tools/ifeval_compare.py --data input_data.jsonl [--limit 120] [--subset all|heldout|multi] \\
          "adapters off=runs/ifeval/ifeval541/answers_adapters_off.jsonl" \\
          "Zhyper=runs/ifeval/ifeval541/answers_zhyper.jsonl"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _one_run(path: Path, entries: list[dict]) -> list[dict]:
    """The lines of one run: all of them when the file holds one; else the run its ``ifeval.json`` reports."""
    runs = list(dict.fromkeys(e.get("run") for e in entries))
    if len(runs) <= 1:
        return entries
    cond = path.stem.removeprefix("answers_")
    report = path.with_name("ifeval.json")
    try:
        chosen = json.loads(report.read_text(encoding="utf-8"))["runs"][cond]
    except (OSError, ValueError, KeyError, TypeError):
        chosen = None
    if chosen not in runs:
        raise SystemExit(f"{path}: holds the answers of {len(runs)} runs ({', '.join(map(str, runs))}: other "
                         f"checkpoints or settings) and {report} does not say which one is reported; expected the "
                         "answers file of one zhyper eval ifeval --out")
    return [e for e in entries if e.get("run") == chosen]


def read_entries(path: str) -> dict[str, dict]:
    """{str(key): line} of an answers file, of the run its report names when it holds several (the last line of a
    key wins)."""
    entries = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise SystemExit(f"{path}:{n}: not JSON; expected an answers file of zhyper eval ifeval") from None
    return {str(e["key"]): e for e in _one_run(Path(path), entries)}


def read_answers(path: str) -> dict[str, str]:
    """{str(key): response} of an answers file (see ``read_entries``)."""
    return {k: e["response"] for k, e in read_entries(path).items()}


def answered(row: dict, entry: dict | None) -> bool:
    """Whether ``entry`` answers ``row`` as it is now (a line recording the row's fingerprint must match it)."""
    from zhyper.evaluation.journal import row_fingerprint

    return entry is not None and entry.get("row", row_fingerprint(row)) == row_fingerprint(row)


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
    entries = {label: read_entries(path) for label, path in pairs}
    rows = [r for r in ifeval.load_prompts(args.data, limit=args.limit)
            if all(answered(r, e.get(str(r["key"]))) for e in entries.values())]
    answers = {label: {k: e["response"] for k, e in by_key.items()} for label, by_key in entries.items()}
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
