"""T2L's benchmark protocol on lm-evaluation-harness: each benchmark under its own descriptions.

For every task the same rows are scored by lm-eval (its task definition, its metrics) under a
list of *cells*, one evaluation each:

| condition | cells | what conditions the model |
|---|---|---|
| ``adapters_off`` | 1 | nothing: the base model (ZLinear skips its update) |
| ``descriptions`` | K | one of the benchmark's own descriptions (``<tasks_dir>/<task>/metadata.yaml``, K drawn, seeded) |
| ``random`` | R | a random string (seeded): the null control; it should change nothing |
| ``description_in_prompt`` | K | the base model, the same K descriptions as lm-eval's system instruction |
| ``contexts`` | 1 each | each trained context of the checkpoint (its ``contexts.json``) |
| ``custom`` | 1 each | a description the user gives |
| ``peft`` | 1 | a PEFT adapter folder on the base (the multi-task LoRA baseline), lm-eval's own ``hf`` + ``peft`` |

Each cell keeps lm-eval's per-document scores, so every cell is compared *paired* with adapters off
on the same documents (mean difference ± 2 s.e.), and the K descriptions (and R random strings) are
summarised by their mean, their spread across descriptions and the pooled paired difference.

Resumable: a finished cell is written to ``<out>/cells/<task>/<cell>-<fingerprint>.json`` (the
fingerprint covers the checkpoint's bytes, the base, the task's data, the cell and every setting), and
a cell interrupted midway resumes from lm-eval's own request cache (``<out>/cache/``), so the same
command after a crash redoes nothing finished. Files of other checkpoints or settings are never
deleted or reused.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

CONDITIONS = ("adapters_off", "descriptions", "random", "description_in_prompt", "contexts", "custom", "peft")
DEFAULT_CONDITIONS = ("adapters_off", "descriptions", "random", "description_in_prompt")
GROUPED = ("descriptions", "random", "description_in_prompt")  # K cells summarised together
REFERENCE = "adapters_off"


@dataclass(frozen=True)
class Cell:
    """One evaluation of one task: a condition and, for most, a description."""

    task: str
    condition: str
    index: int = 0
    text: str | None = None
    name: str | None = None  # a trained context's or a PEFT folder's name

    @property
    def id(self) -> str:
        if self.condition in GROUPED:
            return f"{self.condition}_{self.index}"
        if self.condition in ("contexts", "custom"):
            return f"{self.condition}:{self.name}"
        return self.condition


@dataclass(frozen=True)
class Settings:
    """What changes a score besides the cell: fingerprinted with it."""

    limit: int | None = None
    num_fewshot: int | None = None
    chat_template: bool = False
    batch_size: int = 8
    max_gen_toks: int | None = None
    allow_code_execution: bool = False
    bootstrap_iters: int = 1000


def benchmark_descriptions(tasks_dir: str | Path, task: str, k: int, seed: int) -> list[str]:
    """K of the benchmark's own descriptions (``<tasks_dir>/<task>/metadata.yaml``), drawn with ``seed``."""
    import yaml

    path = Path(tasks_dir) / task / "metadata.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--tasks-dir {tasks_dir}: no {task}/metadata.yaml (T2L's tasks/ layout: "
                                "<task>/metadata.yaml with a 'descriptions' list)")
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    texts = [d for d in meta.get("descriptions") or [] if isinstance(d, str) and d.strip()]
    if len(texts) < k:
        raise ValueError(f"{path}: {len(texts)} description(s), fewer than --descriptions {k}")
    return random.Random(f"{seed}:{task}").sample(texts, k)


def random_descriptions(n: int, seed: int) -> list[str]:
    """``n`` random strings of pseudo-words (the null control of ``zhyper.data.controls``, eval pool), seeded."""
    from zhyper.data.controls import random_strings

    return random_strings(n, "eval", seed=seed)


def plan(task: str, conditions: Sequence[str], descriptions: Sequence[str] = (), randoms: Sequence[str] = (),
         contexts: Mapping[str, str] | None = None, custom: Sequence[str] = (), peft: str | None = None) -> list[Cell]:
    """The cells of ``task`` in report order (adapters off first: every other cell is compared with it)."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"--conditions: unknown {unknown}; expected some of {list(CONDITIONS)}")
    cells = [Cell(task, REFERENCE)]
    for cond in conditions:
        if cond in ("descriptions", "description_in_prompt"):
            cells += [Cell(task, cond, i, t) for i, t in enumerate(descriptions)]
        elif cond == "random":
            cells += [Cell(task, cond, i, t) for i, t in enumerate(randoms)]
        elif cond == "contexts":
            cells += [Cell(task, cond, 0, t, name) for name, t in (contexts or {}).items()]
        elif cond == "custom":
            cells += [Cell(task, cond, i, t, f"{i}") for i, t in enumerate(custom)]
        elif cond == "peft":
            if peft is None:
                raise ValueError("--conditions peft: needs --peft DIR (a PEFT adapter folder)")
            cells.append(Cell(task, cond, 0, None, Path(peft).name))
    return cells


def cell_fingerprint(run: Mapping, cell: Cell, data: str, settings: Settings) -> str:
    """A short hash of everything a cell's scores depend on."""
    from zhyper.evaluation.journal import fingerprint

    return fingerprint({"run": dict(run), "task": cell.task, "condition": cell.condition, "text": cell.text,
                        "name": cell.name, "data": data, "settings": asdict(settings)})


@dataclass
class CellResult:
    """lm-eval's aggregate results of one cell and its per-document scores ({metric key: {doc_id: value}})."""

    cell: Cell
    results: dict
    per_doc: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self, fp: str) -> dict:
        return {"fingerprint": fp, "cell": asdict(self.cell), "results": self.results, "per_doc": self.per_doc}

    @classmethod
    def from_json(cls, raw: dict) -> "CellResult":
        return cls(Cell(**raw["cell"]), raw["results"], raw["per_doc"])


def cell_path(out_dir: str | Path, cell: Cell, fp: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cell.id)
    return Path(out_dir) / "cells" / cell.task / f"{safe}-{fp}.json"


def load_cell(out_dir: str | Path, cell: Cell, fp: str) -> CellResult | None:
    """The finished cell of this fingerprint, if ``out_dir`` holds it (a torn file is ignored)."""
    path = cell_path(out_dir, cell, fp)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s: unreadable, evaluating the cell again", path)
        return None
    return CellResult.from_json(raw) if raw.get("fingerprint") == fp else None


def save_cell(out_dir: str | Path, result: CellResult, fp: str) -> Path:
    from zhyper.io import atomic_write

    return atomic_write(cell_path(out_dir, result.cell, fp), json.dumps(result.to_json(fp), indent=1))


def per_doc_scores(samples: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{``metric,filter``: {doc_id: value}} from lm-eval's logged samples (numeric metrics only)."""
    out: dict[str, dict[str, float]] = {}
    for s in samples:
        for metric in s.get("metrics", []):
            value = s.get(metric)
            if isinstance(value, bool) or isinstance(value, (int, float)):
                out.setdefault(f"{metric},{s.get('filter', 'none')}", {})[str(s["doc_id"])] = float(value)
    return out


def task_results(raw: dict, task: str) -> dict:
    """lm-eval's result entry of ``task`` without its labels (``acc,none``, ``acc_stderr,none``, ...)."""
    entry = dict(raw["results"][task])
    for key in ("alias", "name"):
        entry.pop(key, None)
    return {k: v for k, v in entry.items() if not isinstance(v, str) or v != "N/A"}


def evaluate_cell(lm, cell: Cell, spec, settings: Settings, cache: str | None, task_manager) -> CellResult:
    """One lm-eval run of ``cell`` with ``lm`` (already conditioned by the caller)."""
    from lm_eval import simple_evaluate

    gen_kwargs = {"max_gen_toks": settings.max_gen_toks} if settings.max_gen_toks else None
    raw = simple_evaluate(
        model=lm, tasks=[spec], limit=settings.limit, num_fewshot=settings.num_fewshot, log_samples=True,
        system_instruction=cell.text if cell.condition == "description_in_prompt" else None,
        apply_chat_template=settings.chat_template, fewshot_as_multiturn=settings.chat_template,
        gen_kwargs=gen_kwargs, use_cache=cache, task_manager=task_manager,
        bootstrap_iters=settings.bootstrap_iters, confirm_run_unsafe_code=settings.allow_code_execution)
    return CellResult(cell, task_results(raw, cell.task), per_doc_scores(raw["samples"][cell.task]))


# ---------------------------------------------------------------------------------------------- summary
def paired(values: Mapping[str, float], reference: Mapping[str, float]) -> dict:
    """Mean of ``values - reference`` over the shared documents, its 2 s.e., n, and ``changed``: the share
    of documents whose score differs at all (a difference of 0 can hide many answers flipped both ways)."""
    keys = [k for k in values if k in reference]
    diffs = [values[k] - reference[k] for k in keys]
    n = len(diffs)
    if n == 0:
        return {"diff": float("nan"), "two_se": float("nan"), "n": 0, "changed": float("nan")}
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else float("nan")
    return {"diff": mean, "two_se": 2 * math.sqrt(var / n) if n > 1 else float("nan"), "n": n,
            "changed": sum(d != 0 for d in diffs) / n}


def mean_per_doc(cells: Sequence[CellResult], metric: str) -> dict[str, float]:
    """Per document, the mean over ``cells`` of ``metric`` (documents every cell scored)."""
    maps = [c.per_doc.get(metric, {}) for c in cells]
    shared = set(maps[0]).intersection(*maps[1:]) if maps else set()
    return {k: sum(m[k] for m in maps) / len(maps) for k in shared}


def primary_metric(result: CellResult) -> str:
    """The task's first reported metric (``acc,none``; gsm8k ``exact_match,strict-match``)."""
    keys = [k for k in result.results if "_stderr" not in k and k in result.per_doc]
    if not keys:
        raise ValueError(f"{result.cell.task}: lm-eval reported no per-document numeric metric to compare")
    return keys[0]


def summarize_task(cells: Sequence[CellResult]) -> dict:
    """JSON of one task: every cell (lm-eval's metrics, paired vs adapters off) and the K-description groups."""
    ref = next(c for c in cells if c.cell.condition == REFERENCE)
    metric = primary_metric(ref)
    out = {"metric": metric, "n": len(ref.per_doc[metric]), "conditions": {}, "groups": {}}
    for c in cells:
        entry = {"condition": c.cell.condition, "description": c.cell.text, "name": c.cell.name, **c.results}
        entry["paired_vs_adapters_off"] = {m: paired(v, ref.per_doc[m]) for m, v in c.per_doc.items()
                                           if m in ref.per_doc and c is not ref}
        out["conditions"][c.cell.id] = entry
    for group in GROUPED:
        members = [c for c in cells if c.cell.condition == group]
        if members:
            out["groups"][group] = summarize_group(members, ref, metric)
    return out


def summarize_group(members: Sequence[CellResult], ref: CellResult, metric: str) -> dict:
    """Mean over the K cells, the spread across them (sd, min, max), and the pooled paired difference."""
    values = [float(c.results[metric]) for c in members]
    k = len(values)
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) if k > 1 else 0.0
    return {"k": k, "mean": mean, "sd_across": sd, "min": min(values), "max": max(values),
            "paired_vs_adapters_off": paired(mean_per_doc(members, metric), ref.per_doc[metric])}


def summarize(results: Mapping[str, Sequence[CellResult]], settings: Settings, run: Mapping) -> dict:
    return {"settings": asdict(settings), "run": dict(run),
            "tasks": {task: summarize_task(cells) for task, cells in results.items()}}


# ---------------------------------------------------------------------------------------------- orchestration
@dataclass
class Runner:
    """Evaluates cells with the right model, reusing finished cells. ``zhyper_lm``: a ``ZhyperLM``;
    ``peft_lm``: a callable giving lm-eval's ``hf`` model with the PEFT adapter (made on first use)."""

    zhyper_lm: object
    out_dir: Path
    settings: Settings
    run: dict
    task_manager: object
    peft_lm: Callable[[], object] | None = None
    reuse: bool = True
    _peft: object = None

    def model_for(self, cell: Cell):
        if cell.condition == "peft":
            if self.peft_lm is None:
                raise ValueError("--conditions peft: needs --peft DIR")
            self._peft = self._peft or self.peft_lm()
            return self._peft
        lm = self.zhyper_lm
        uses_modulation = cell.condition in ("descriptions", "random", "contexts", "custom")
        lm.condition(cell.text if uses_modulation else None)
        return lm

    def cell(self, cell: Cell, spec, data: str) -> CellResult:
        fp = cell_fingerprint(self.run, cell, data, self.settings)
        done = load_cell(self.out_dir, cell, fp) if self.reuse else None
        if done is not None:
            log.info("%s %s: reused (%s)", cell.task, cell.id, cell_path(self.out_dir, cell, fp).name)
            return done
        cache = None
        if self.reuse:
            cache_dir = self.out_dir / "cache" / cell.task
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache = str(cache_dir / f"{cell_path(self.out_dir, cell, fp).stem}")
        result = evaluate_cell(self.model_for(cell), cell, spec, self.settings, cache, self.task_manager)
        save_cell(self.out_dir, result, fp)
        return result


def run_tasks(runner: Runner, plans: Mapping[str, list[Cell]],
              spec_of: Callable[[str], object]) -> dict[str, list[CellResult]]:
    """Every cell of every task (``plans``: task -> its cells), in order, with a progress bar over the cells."""
    from tqdm.auto import tqdm

    from zhyper.evaluation.lm_tasks import data_digest

    results: dict[str, list[CellResult]] = {}
    with tqdm(total=sum(len(c) for c in plans.values()), desc="benchmark cells", unit="cell") as bar:
        for task, cells in plans.items():
            spec = spec_of(task)
            data = data_digest(spec)
            results[task] = []
            for cell in cells:
                bar.set_postfix_str(f"{task} {cell.id}")
                results[task].append(runner.cell(cell, spec, data))
                bar.update(1)
    return results
