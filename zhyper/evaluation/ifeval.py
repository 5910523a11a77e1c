"""IFEval, the official 541 prompts scored by the official checkers (pip ``if-verifiable``).

Rows are loaded the way users get them (``datasets.load_dataset("google/IFEval")``) or from a
local JSONL of the same rows (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``). Each
condition answers every prompt greedily; ``if_verifiable.common.evaluate_instructions`` scores
each answer (strict, and loose: also without the first/last line or ``*``). Reported, as in the
IFEval paper: prompt-level accuracy (every instruction of the prompt followed) and
instruction-level accuracy (over all instructions), strict and loose, and a per-type table.

Conditions (``CONDITIONS``), each on the same prompt as IFEval gives it:

| condition | description(s) given to the hypernetwork |
|---|---|
| ``adapters_off`` | none: the base model, IFEval's standard setting |
| ``zhyper`` | the prompt's instruction texts (rebuilt from its ``kwargs`` with the official ``build_description``) joined into one (``combine="text"``) |
| ``zhyper_sum`` | each instruction text a description of its own, modulations combined (``combine="modulation"``, weights 1/n) |
| ``first_only`` | the first instruction's text alone: the single-description baseline for composition |

Subsets: ``all``; ``heldout``, prompts whose instructions are all types the IFEval data source
never trains on; ``multi``, prompts with two or more instructions.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

CONDITIONS = ("adapters_off", "zhyper", "zhyper_sum", "first_only")
SUBSETS = ("all", "heldout", "multi")
HUB_NAME = "google/IFEval"
ROW_KEYS = ("key", "prompt", "instruction_id_list", "kwargs")


def _check_row(row: dict, where: str) -> dict:
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; an IFEval row has {list(ROW_KEYS)}")
    if len(row["instruction_id_list"]) != len(row["kwargs"]):
        raise ValueError(f"{where}: instruction_id_list and kwargs have different lengths")
    return {k: row[k] for k in ROW_KEYS}


def load_prompts(data: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """IFEval's rows from a local JSONL (``data``) or the hub dataset ``google/IFEval``; first ``limit`` rows."""
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"--data {path}: no such file; expected IFEval's input_data.jsonl (the rows of "
                                    f"the hub dataset {HUB_NAME})")
        lines = [ln for ln in path.read_text("utf-8").splitlines() if ln.strip()]
        rows = []
        for i, line in enumerate(lines, 1):
            try:
                rows.append(_check_row(json.loads(line), f"{path}:{i}"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not JSON ({err.msg}); expected one IFEval row per line") from None
    else:
        rows = _load_hub()
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit: expected a positive number of prompts, got {limit}")
        rows = rows[:limit]
    return rows


def _load_hub() -> list[dict]:
    try:
        from datasets import load_dataset

        ds = load_dataset(HUB_NAME, split="train")
    except Exception as err:  # offline, no cache, or no datasets: say both ways to get the rows
        raise FileNotFoundError(
            f"IFEval's prompts could not be loaded from the hub dataset {HUB_NAME} ({type(err).__name__}: "
            f"{str(err)[:200]}). Either make the hub reachable (or its cache present), or pass --data PATH to a "
            "local JSONL of the same rows (IFEval's input_data.jsonl)") from None
    return [_check_row(dict(r), f"{HUB_NAME}[{i}]") for i, r in enumerate(ds)]


def instruction_texts(row: dict) -> list[str]:
    """The official texts of a row's instructions, rebuilt from its ``kwargs``."""
    from zhyper.data.ifeval_checkers import describe

    return [describe(i, kw, row["prompt"]) for i, kw in zip(row["instruction_id_list"], row["kwargs"])]


@dataclass
class Scores:
    """Counts for IFEval's four metrics, overall and per instruction type."""

    prompts: int = 0
    prompt_strict: int = 0
    prompt_loose: int = 0
    instructions: int = 0
    inst_strict: int = 0
    inst_loose: int = 0
    per_type: dict[str, list[int]] = field(default_factory=dict)  # id -> [n, strict, loose]

    def add(self, ids: Sequence[str], strict: Sequence[bool], loose: Sequence[bool]) -> None:
        self.prompts += 1
        self.prompt_strict += int(all(strict))
        self.prompt_loose += int(all(loose))
        self.instructions += len(ids)
        self.inst_strict += sum(strict)
        self.inst_loose += sum(loose)
        for i, s, lo in zip(ids, strict, loose):
            row = self.per_type.setdefault(i, [0, 0, 0])
            row[0] += 1
            row[1] += int(s)
            row[2] += int(lo)

    def metrics(self) -> dict[str, float]:
        def frac(a, n):
            return a / n if n else float("nan")

        return {"prompt_strict": frac(self.prompt_strict, self.prompts),
                "prompt_loose": frac(self.prompt_loose, self.prompts),
                "instruction_strict": frac(self.inst_strict, self.instructions),
                "instruction_loose": frac(self.inst_loose, self.instructions), "prompts": self.prompts}


def score_answer(row: dict, answer: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose) per instruction of ``row`` for ``answer``, by if-verifiable's official evaluation."""
    from if_verifiable.common import evaluate_instructions

    from zhyper.data.ifeval_checkers import clean_kwargs, registry

    ids, table = list(row["instruction_id_list"]), registry()
    state = random.getstate()  # a checker given an invalid parameter (a letter "#") draws one: the same draw each time
    random.seed(f"ifeval:{row['key']}")
    try:
        results, _ = evaluate_instructions(answer, ids, [clean_kwargs(k) for k in row["kwargs"]], row["prompt"],
                                           table)
    finally:
        random.setstate(state)
    by_id = {r.instruction_id: r for r in results}  # an empty answer gives no results: every instruction fails
    return ([bool(by_id[i].strict_pass) if i in by_id else False for i in ids],
            [bool(by_id[i].loose_pass) if i in by_id else False for i in ids])


def score(rows: Sequence[dict], answers: Sequence[str], keep=None) -> Scores:
    """Scores of ``answers`` (one per row); ``keep(row)`` selects a subset of the rows."""
    if len(rows) != len(answers):
        raise ValueError(f"answers: expected one per row ({len(rows)}), got {len(answers)}")
    out = Scores()
    for row, answer in zip(rows, answers):
        if keep is None or keep(row):
            out.add(row["instruction_id_list"], *score_answer(row, answer))
    return out


def interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Agresti-Coull 95 % interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    n_t = n + z * z
    p = (hits + z * z / 2) / n_t
    half = z * math.sqrt(p * (1 - p) / n_t)
    return max(0.0, p - half), min(1.0, p + half)


AnswerFn = Callable[[list[str], list[list[str]] | None], list[str]]


def paired_difference(rows: Sequence[dict], answers: Sequence[str], reference: Sequence[str],
                      keep=None) -> dict[str, tuple[float, float]]:
    """``answers`` minus ``reference`` on the same rows: {"prompt_loose", "instruction_loose"}: (mean, 2 s.e.).

    Per prompt: 1 if every instruction passes (prompt level), the fraction passing (instruction
    level, each prompt weighted once); the differences are paired over the prompts ``keep`` selects.
    """
    if not len(rows) == len(answers) == len(reference):
        raise ValueError(f"answers, reference: expected one per row ({len(rows)}), got {len(answers)} and "
                         f"{len(reference)}")
    diffs: dict[str, list[float]] = {"prompt_loose": [], "instruction_loose": []}
    for row, a, b in zip(rows, answers, reference):
        if keep is not None and not keep(row):
            continue
        (_, la), (_, lb) = score_answer(row, a), score_answer(row, b)
        diffs["prompt_loose"].append(float(all(la)) - float(all(lb)))
        diffs["instruction_loose"].append(sum(la) / len(la) - sum(lb) / len(lb))
    out = {}
    for name, d in diffs.items():
        n = len(d)
        mean = sum(d) / n if n else float("nan")
        var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else float("nan")
        out[name] = (mean, 2 * math.sqrt(var / n) if n > 1 else float("nan"))
    return out


def heldout_only(types: Sequence[str]) -> Callable[[dict], bool]:
    """Selects the rows whose instructions are all of ``types`` (the held-out types)."""
    keep = set(types)
    return lambda row: all(i in keep for i in row["instruction_id_list"])


def answer_all(answer: AnswerFn, rows: Sequence[dict], descriptions: list[str] | None, batch_size: int,
               desc: str, progress: bool = True, journal=None) -> list[str]:
    """``answer(prompts, descriptions)`` over batches of similar-length prompts; answers in row order.

    With an ``AnswerJournal``, the answers it already holds for this run and these rows (same key,
    prompt text and instruction arguments) are reused and each new batch is appended to it as soon as
    it is generated.
    """
    from tqdm import tqdm

    out: list[str | None] = journal.lookup(rows) if journal is not None else [None] * len(rows)
    todo = [i for i, a in enumerate(out) if a is None]
    if len(todo) < len(rows):
        log.info("%s: %d of %d answers reused from %s", desc, len(rows) - len(todo), len(rows), journal.path)
    order = sorted(todo, key=lambda i: len(rows[i]["prompt"]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
        idx = order[start:start + batch_size]
        got = answer([rows[i]["prompt"] for i in idx], None if descriptions is None else [descriptions[i] for i in idx])
        if journal is not None:
            journal.append([rows[i] for i in idx], got)
        for i, a in zip(idx, got):
            out[i] = a
    return out


def zhyper_answerer(model, max_new_tokens: int, condition: str) -> AnswerFn:
    """Greedy answers of a ZhyperModel under one of ``CONDITIONS`` (descriptions: one entry per prompt)."""
    from zhyper.generation import generate_texts

    def answer(prompts, descriptions):
        if condition == "adapters_off":
            with model.adapters_off():
                return generate_texts(model.base, model.tokenizer, prompts, ["none"] * len(prompts),
                                      max_new_tokens=max_new_tokens)
        combine = "modulation" if condition == "zhyper_sum" else "text"
        return model.generate(prompts, descriptions, combine=combine, max_new_tokens=max_new_tokens)

    return answer


def _descriptions(rows: Sequence[dict], condition: str) -> list | None:
    if condition == "adapters_off":
        return None
    texts = [instruction_texts(r) for r in rows]
    return [t[:1] if condition == "first_only" else t for t in texts]


def evaluate(model, rows: Sequence[dict], conditions: Sequence[str] = CONDITIONS[:2], max_new_tokens: int = 256,
             batch_size: int = 8, heldout_types: Sequence[str] | None = None, progress: bool = True,
             journal_dir: str | Path | None = None, run: dict | None = None, reuse: bool = True) -> dict:
    """{condition: {"answers": [...], "run": fingerprint, subset: Scores for each of SUBSETS}} on IFEval rows.

    ``journal_dir``: keep each condition's answers in ``answers_<condition>.jsonl`` there as they
    arrive and reuse those of the same run (``run``: what else fixes the answers, e.g. the
    checkpoint's digest; the condition and ``max_new_tokens`` are added); ``reuse=False`` generates
    every answer again (appended: the new lines win over the old ones later).
    """
    from zhyper.data.ifeval import HELDOUT_TYPES
    from zhyper.evaluation.journal import AnswerJournal, fingerprint
    from zhyper.pretrained import check_output_folder

    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        raise ValueError(f"conditions: expected some of {list(CONDITIONS)}, got {list(conditions)}")
    if journal_dir is not None:  # answers in the checkpoint's folder would change its files (and its fingerprint)
        check_output_folder(model, journal_dir, "ifeval")
    keep = {"all": None, "heldout": heldout_only(HELDOUT_TYPES if heldout_types is None else heldout_types),
            "multi": lambda row: len(row["instruction_id_list"]) >= 2}
    out = {}
    for cond in conditions:
        fp = fingerprint({**(run or {}), "condition": cond, "max_new_tokens": max_new_tokens})
        journal = None if journal_dir is None else AnswerJournal(Path(journal_dir) / f"answers_{cond}.jsonl", fp,
                                                                  reuse=reuse)
        fn = zhyper_answerer(model, max_new_tokens, cond)
        answers = answer_all(fn, rows, _descriptions(rows, cond), batch_size, cond, progress, journal)
        out[cond] = {"answers": answers, "run": fp, **{name: score(rows, answers, k) for name, k in keep.items()}}
    return out


def report(results: dict, rows: Sequence[dict]) -> tuple[str, dict]:
    """(markdown, JSON-able dict) of the official metrics with Agresti-Coull intervals and the per-type table."""
    summary, lines = {}, ["| condition | subset | prompts | prompt strict | prompt loose | instruction strict | "
                          "instruction loose |", "|---|---|---|---|---|---|---|"]
    for cond, res in results.items():
        for subset in SUBSETS:
            s: Scores = res[subset]
            m = s.metrics()
            summary[f"{cond}/{subset}"] = m

            def cell(hits, n):
                lo, hi = interval(hits, n)
                return f"{hits / n:.3f} [{lo:.2f}, {hi:.2f}]" if n else "–"

            lines.append(f"| {cond} | {subset} | {s.prompts} | {cell(s.prompt_strict, s.prompts)} | "
                         f"{cell(s.prompt_loose, s.prompts)} | {cell(s.inst_strict, s.instructions)} | "
                         f"{cell(s.inst_loose, s.instructions)} |")
    lines += ["", "Per instruction type, loose accuracy (n):", "",
              "| type | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    types = sorted({t for res in results.values() for t in res["all"].per_type})
    for t in types:
        cells = []
        for res in results.values():
            n, _, loose = res["all"].per_type.get(t, [0, 0, 0])
            cells.append(f"{loose / n:.2f} ({n})" if n else "–")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    per_type = {c: {t: v for t, v in res["all"].per_type.items()} for c, res in results.items()}
    runs = {c: res.get("run") for c, res in results.items()}
    return "\n".join(lines) + "\n", {"metrics": summary, "per_type": per_type, "runs": runs}


def per_type_png(results: dict, heldout_types: Sequence[str] = ()) -> bytes:
    """PNG bytes: loose accuracy per instruction type (one bar per condition; held-out types marked *)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({t for res in results.values() for t in res["all"].per_type})
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.24 * len(types) * max(1, len(results)) ** 0.5))
    height = 0.8 / max(1, len(results))
    for k, (cond, res) in enumerate(results.items()):
        values = [(lambda n, _s, lo: lo / n if n else 0.0)(*res["all"].per_type.get(t, [0, 0, 0])) for t in types]
        ax.barh([i + k * height for i in range(len(types))], values, height=height, label=cond)
    counts = [max(res["all"].per_type.get(t, [0])[0] for res in results.values()) for t in types]
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(types))],
                  [f"{t}{' *' if t in heldout_types else ''} ({n})" for t, n in zip(types, counts)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("loose accuracy (instructions of the type followed)")
    ax.set_title("IFEval per instruction type (n instructions; * never trained on)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write(results: dict, rows: Sequence[dict], out_dir: str | Path) -> Path:
    """``ifeval.md``, ``ifeval.json``, ``ifeval.png`` into ``out_dir`` (atomically), and each condition's answers
    into ``answers_<condition>.jsonl``: this run's in row order, after every answer of the file they do not
    supersede (other checkpoints' and settings', and this run's to rows beyond a shorter ``--limit``)."""
    from zhyper.data.ifeval import HELDOUT_TYPES
    from zhyper.evaluation.journal import AnswerJournal
    from zhyper.io import atomic_folder

    md, js = report(results, rows)
    with atomic_folder(out_dir) as tmp:
        (tmp / "ifeval.md").write_text(md, encoding="utf-8")
        (tmp / "ifeval.json").write_text(json.dumps(js, indent=2), encoding="utf-8")
        (tmp / "ifeval.png").write_bytes(per_type_png(results, HELDOUT_TYPES))
    for cond, res in results.items():
        AnswerJournal(Path(out_dir) / f"answers_{cond}.jsonl", res.get("run")).compact(list(rows), res["answers"])
    return Path(out_dir)
