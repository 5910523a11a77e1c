"""A Zhyper checkpoint through lm-evaluation-harness against lm-eval's own ``hf`` model, in one process.

    .venv/bin/python benchmarks/bench_harness.py [--checkpoint DIR] [--task piqa] [--limit 200] [--reps 3]

Both score the same documents of one task with ``simple_evaluate`` (lm-eval's batching, its request
building, its metrics) on the shipped SmolLM2-135M-Instruct (fp32): ``hf`` is the plain model loaded
by lm-eval, ``zhyper`` is ``ZhyperLM`` conditioned on a description (diag r 8 on q/v, or the given
checkpoint), ``zhyper_off`` the same with adapters off. Rows: ``--data-dir`` (``<task>/<split>.jsonl``,
default ``../shared/data/benchmarks`` when present) or the hub. The runs take turns; printed are the
medians and the per-repetition throughput ratio zhyper / hf (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, paired_ratio  # noqa: E402

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
DESCRIPTION = "Use your practical knowledge to choose the solution that makes the most sense."


def models(checkpoint: str | None, batch: int):
    """(lm-eval's hf model on SmolLM2, ZhyperLM on the same base)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.base_model import smollm2_path
    from zhyper.evaluation.harness import ZhyperLM

    path = str(smollm2_path())
    hf = HFLM(pretrained=path, device="cpu", dtype="float32", batch_size=batch)
    if checkpoint:
        zmodel = ZhyperModel.from_pretrained(checkpoint, base_model=path)
    else:
        cfg = ZhyperConfig(mode="diag", rank=8, alpha=16.0, target_modules=["q_proj", "v_proj"])
        zmodel = ZhyperModel.from_base(path, cfg, dtype=torch.float32)
        with torch.no_grad():  # non-zero B: the adapter's path is never skipped
            for name, p in zmodel.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
    return hf, ZhyperLM(model=zmodel, description=DESCRIPTION, batch_size=batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a zhyper checkpoint on SmolLM2 (default: a fresh diag r 8 q/v)")
    parser.add_argument("--task", default="piqa")
    parser.add_argument("--data-dir", default=str(SHARED) if SHARED.is_dir() else None)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from zhyper.evaluation.lm_tasks import task_spec

    manager = TaskManager()
    spec = task_spec(args.task, args.data_dir, manager)
    hf, zlm = models(args.checkpoint, args.batch)
    scores = {}

    def run(name, lm):
        def call():
            raw = simple_evaluate(model=lm, tasks=[spec], limit=args.limit, task_manager=manager, bootstrap_iters=0,
                                  verbosity="ERROR")
            scores[name] = {k: v for k, v in raw["results"][args.task].items() if k.endswith(",none")}
        return call

    def off():
        zlm.condition(None)
        run("zhyper_off", zlm)()
        zlm.condition(DESCRIPTION)

    times = interleaved({"hf": run("hf", hf), "zhyper": run("zhyper", zlm), "zhyper_off": off}, reps=args.reps)
    report(times, scores, args, torch.get_num_threads())


def report(times: dict, scores: dict, args, threads: int) -> None:
    import statistics

    print(f"{args.task}, first {args.limit} documents, batch {args.batch}, torch threads {threads}, "
          f"{args.reps} repetitions (after one warm-up each), rows from {args.data_dir or 'the hub'}")
    for name in ("hf", "zhyper", "zhyper_off"):
        print(f"  {name:<11} median {statistics.median(times[name]):7.2f} s   scores {scores[name]}")
    for num in ("zhyper", "zhyper_off"):
        med, lo, hi = paired_ratio(times, "hf", num)  # hf time / zhyper time = zhyper's throughput / hf's
        print(f"throughput {num} / hf: {med:.3f}x (per repetition {lo:.3f}-{hi:.3f}; target >= 0.9x)")


if __name__ == "__main__":
    main()
