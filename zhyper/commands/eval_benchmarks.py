"""``zhyper eval benchmarks --checkpoint DIR [--tasks piqa,...] [--data-dir DIR] [--tasks-dir DIR] --out DIR``.

T2L's protocol through lm-evaluation-harness (``zhyper.evaluation.benchmarks``): every task scored by
lm-eval's own task definition under adapters off, K of the benchmark's own descriptions, R random
strings, the base model with each description in its prompt, and optionally the checkpoint's trained
contexts, your own descriptions and a PEFT adapter (the multi-task LoRA baseline), all on the same
rows. Writes ``benchmarks.md`` / ``.json`` / ``.png`` and ``cells/`` to ``--out``, logs to MLflow, and
resumes after a crash (finished cells are kept; an interrupted one continues from lm-eval's cache).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from zhyper.validate import non_negative_int, option, positive_int

TASKS_DIR_ENV = "ZHYPER_TASKS_DIR"


def configure(parser: argparse.ArgumentParser) -> None:
    from zhyper.evaluation.benchmarks import CONDITIONS, DEFAULT_CONDITIONS

    parser.add_argument("--checkpoint", required=True, help="zhyper checkpoint folder (save_pretrained)")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")
    parser.add_argument("--tasks", help="lm-eval task names, comma-separated (default: the ten benchmarks, or those "
                                        "--data-dir holds; humaneval/mbpp only with --allow-code-execution)")
    parser.add_argument("--data-dir", help="local rows: <task>/<split>.jsonl in the hub dataset's row schema "
                                           "(default: lm-eval reads the hub datasets)")
    parser.add_argument("--tasks-dir", default=os.environ.get(TASKS_DIR_ENV),
                        help=f"T2L's tasks/ folder (<task>/metadata.yaml with the benchmark's descriptions), read in "
                             f"place (default: ${TASKS_DIR_ENV})")
    parser.add_argument("--descriptions", type=option(positive_int, int), default=3,
                        help="K: how many of each benchmark's descriptions (default 3)")
    parser.add_argument("--random", type=option(non_negative_int, int), default=2,
                        help="R: how many random-string descriptions, the null control (default 2)")
    parser.add_argument("--seed", type=option(non_negative_int, int), default=0, help="draw of the descriptions")
    parser.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS), choices=list(CONDITIONS),
                        help=f"default: {' '.join(DEFAULT_CONDITIONS)}; contexts = the checkpoint's trained "
                             "contexts (contexts.json), custom = each --description, peft = --peft DIR")
    parser.add_argument("--contexts", help="with 'contexts': names, comma-separated (default: every trained context)")
    parser.add_argument("--description", action="append", default=[], help="with 'custom': a description (repeat)")
    parser.add_argument("--peft", help="with 'peft': a PEFT adapter folder (e.g. a multi-task LoRA run's final/)")
    parser.add_argument("--limit", type=option(positive_int, int), help="only the first N documents of each task")
    parser.add_argument("--num-fewshot", type=option(non_negative_int, int), help="default: each task's own")
    parser.add_argument("--chat-template", action="store_true",
                        help="apply the model's chat template (descriptions in prompt become a system message)")
    parser.add_argument("--batch-size", type=option(positive_int, int), default=8, help="default 8")
    parser.add_argument("--max-gen-toks", type=option(positive_int, int),
                        help="cap on generated tokens in generation tasks (default: each task's own)")
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="needed for humaneval and mbpp: they run the model's code on this machine")
    parser.add_argument("--out", required=True, help="folder for benchmarks.md / .json / .png and the cells")
    parser.add_argument("--fresh", action="store_true", help="evaluate every cell again (default: reuse finished "
                                                             "cells of the same checkpoint and settings)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (<out>/mlflow.db)")


def _contexts(args: argparse.Namespace) -> dict[str, str]:
    from zhyper.serving.contexts import read_contexts_file

    own = {name: texts[0] for name, texts in read_contexts_file(args.checkpoint).items()}
    if not own:
        raise ValueError(f"--conditions contexts: {args.checkpoint} has no contexts.json naming its trained "
                         "contexts (a training run writes it); give descriptions with custom --description instead")
    if args.contexts is None:
        return own
    names = [n.strip() for n in args.contexts.split(",") if n.strip()]
    unknown = [n for n in names if n not in own]
    if unknown:
        raise ValueError(f"--contexts: {unknown} not trained by this checkpoint; it has {sorted(own)}")
    return {n: own[n] for n in names}


def check_args(args: argparse.Namespace) -> None:
    """Refuse what cannot run before any model loads (each message names the option to change)."""
    from zhyper.io import same_folder

    if not (Path(args.checkpoint) / "zhyper_config.json").is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no zhyper_config.json; expected a zhyper "
                                "checkpoint folder (save_pretrained)")
    out = Path(args.out).resolve()
    if same_folder(out, args.checkpoint) or Path(args.checkpoint).resolve() in out.parents:
        raise ValueError(f"--out {args.out}: inside the checkpoint folder; choose a folder outside it")
    needs_meta = {"descriptions", "description_in_prompt"} & set(args.conditions)
    if needs_meta and args.tasks_dir is None:
        raise ValueError(f"--conditions {sorted(needs_meta)} need the benchmarks' descriptions: pass --tasks-dir "
                         f"(T2L's tasks/ folder) or set ${TASKS_DIR_ENV}, or leave them out of --conditions")
    if "custom" in args.conditions and not args.description:
        raise ValueError("--conditions custom: give at least one --description")
    if "peft" in args.conditions and not args.peft:
        raise ValueError("--conditions peft: give --peft DIR (a PEFT adapter folder)")
    if args.peft and not (Path(args.peft) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--peft {args.peft}: no adapter_config.json; expected a PEFT adapter folder")


def _cells_of(args: argparse.Namespace, contexts: dict[str, str]):
    from zhyper.evaluation import benchmarks as bm

    randoms = bm.random_descriptions(args.random, args.seed)

    def cells_of(task: str):
        wants = {"descriptions", "description_in_prompt"} & set(args.conditions)
        descs = bm.benchmark_descriptions(args.tasks_dir, task, args.descriptions, args.seed) if wants else []
        return bm.plan(task, args.conditions, descs, randoms, contexts, args.description, args.peft)

    return cells_of


def _peft_lm(args: argparse.Namespace, model):
    def make():
        from lm_eval.models.huggingface import HFLM

        base = str(model.base_folder or model.base_model_id)
        return HFLM(pretrained=base, peft=str(Path(args.peft).resolve()), device="cpu", dtype="float32",
                    batch_size=args.batch_size)

    return make


def run(args: argparse.Namespace) -> int:
    from lm_eval.tasks import TaskManager

    from zhyper.evaluation import benchmark_report, benchmarks as bm, lm_tasks
    from zhyper.evaluation.harness import ZhyperLM
    from zhyper.evaluation.journal import checkpoint_digest

    check_args(args)
    tasks = lm_tasks.parse_tasks(args.tasks, args.data_dir, args.allow_code_execution)
    lm_tasks.check_code_execution(tasks, args.allow_code_execution)
    contexts = _contexts(args) if "contexts" in args.conditions else {}
    cells_of = _cells_of(args, contexts)
    plans = {task: cells_of(task) for task in tasks}  # a missing metadata file fails here, before the model loads
    settings = bm.Settings(limit=args.limit, num_fewshot=args.num_fewshot, chat_template=args.chat_template,
                           batch_size=args.batch_size, max_gen_toks=args.max_gen_toks,
                           allow_code_execution=args.allow_code_execution)
    manager = TaskManager()
    specs = {t: lm_tasks.task_spec(t, args.data_dir, manager) for t in tasks}
    lm = ZhyperLM(checkpoint=args.checkpoint, base=args.base, batch_size=args.batch_size)
    run_info = {"checkpoint": checkpoint_digest(args.checkpoint), "base": args.base or lm.zhyper.base_model_id,
                "peft": checkpoint_digest(args.peft) if args.peft else None}
    runner = bm.Runner(lm, Path(args.out), settings, run_info, manager, _peft_lm(args, lm.zhyper),
                       reuse=not args.fresh)
    results = bm.run_tasks(runner, plans, specs.__getitem__)
    summary = bm.summarize(results, settings, {**run_info, "checkpoint_folder": str(args.checkpoint)})
    out = benchmark_report.write(summary, args.out)
    if not args.no_mlflow:
        log_mlflow(summary, out)
    print((out / "benchmarks.md").read_text(encoding="utf-8"))
    print(f"benchmarks.json, benchmarks.png and the cells in {out}")
    return 0


def log_mlflow(summary: dict, out: Path) -> None:
    """One MLflow run (``<out>/mlflow.db``, experiment ``zhyper-benchmarks``): every cell's scores and the report."""
    from zhyper.training.tracking import Tracker

    tracker = Tracker(True, out, experiment="zhyper-benchmarks", run_name=Path(summary["run"]["checkpoint_folder"]).name)
    tracker.log_params({**{f"settings.{k}": v for k, v in summary["settings"].items()},
                        **{f"run.{k}": v for k, v in summary["run"].items()}})
    metrics = {}
    for task, t in summary["tasks"].items():
        for cid, entry in t["conditions"].items():
            for key, value in entry.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[_metric_name(f"{task}/{cid}/{key}")] = value
        for group, g in t["groups"].items():
            metrics[_metric_name(f"{task}/{group}/mean")] = g["mean"]
            metrics[_metric_name(f"{task}/{group}/paired_diff")] = g["paired_vs_adapters_off"]["diff"]
    tracker.log_metrics(metrics, step=0)
    for name in ("benchmarks.md", "benchmarks.json", "benchmarks.png"):
        tracker.log_artifacts(out / name)
    tracker.finish()


def _metric_name(text: str) -> str:
    """MLflow keys allow letters, digits, ``_-./`` and spaces: anything else becomes ``_``."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in text)
