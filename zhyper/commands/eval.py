"""``zhyper eval ifeval|benchmarks --checkpoint DIR ... --out DIR``: official scores of a checkpoint.

``benchmarks``: the paper's benchmarks through lm-evaluation-harness under T2L's protocol (see
``zhyper.evaluation.benchmarks`` and ``configure_benchmarks``). ``ifeval``, below:

Answers IFEval's prompts with adapters off (the base model) and with Zhyper (the prompt's own
instruction texts as the description), scores them with if-verifiable's official checkers and
writes ``ifeval.md`` / ``ifeval.json`` / ``answers_<condition>.jsonl`` to ``--out``. Answers are
appended to ``answers_<condition>.jsonl`` as they are generated: the same command after a crash or
an interrupt resumes, and a longer ``--limit`` reuses the answers already given (same checkpoint
files, base, condition and ``--max-new-tokens``, same prompt text and instruction arguments);
``--fresh`` generates every answer again. Answers are never dropped unless superseded: a shorter
``--limit`` or another checkpoint in the same ``--out`` keeps the answers already there. ``--out``
inside the ``--checkpoint`` folder is refused (it would change the checkpoint's files).
"""

from __future__ import annotations

import argparse

from zhyper.validate import option, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    configure_ifeval(sub.add_parser("ifeval", help="IFEval's 541 prompts (google/IFEval), official checkers"))
    from zhyper.commands.eval_benchmarks import configure as configure_benchmarks

    configure_benchmarks(sub.add_parser("benchmarks", help="the paper's ten benchmarks through lm-evaluation-harness "
                                                          "(T2L's protocol: each under its own descriptions)"))


def configure_ifeval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="zhyper checkpoint folder (save_pretrained), or a PEFT adapter folder (a multi-task "
                             "LoRA run's final/: its 'zhyper' condition is the adapter on the prompt as given)")
    parser.add_argument("--data", help="a local JSONL of IFEval's rows (input_data.jsonl); default: the hub dataset "
                                       "google/IFEval")
    parser.add_argument("--limit", type=option(positive_int, int), help="only the first N prompts (quick runs)")
    parser.add_argument("--conditions", nargs="+", default=["adapters_off", "zhyper"],
                        choices=["adapters_off", "zhyper", "zhyper_sum", "first_only"],
                        help="what to answer with (default: adapters_off zhyper; zhyper_sum combines the "
                             "instructions' modulations, first_only gives the first instruction alone)")
    parser.add_argument("--max-new-tokens", type=option(positive_int, int), default=256,
                        help="most tokens per answer (default 256)")
    parser.add_argument("--batch-size", type=option(positive_int, int), default=8, help="prompts per batch (default 8)")
    parser.add_argument("--out", required=True, help="folder for ifeval.md, ifeval.json and the answers")
    parser.add_argument("--fresh", action="store_true",
                        help="generate every answer again (default: reuse the answers already in --out that the same "
                             "checkpoint, base, condition and --max-new-tokens gave)")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "benchmarks":
        from zhyper.commands.eval_benchmarks import run as run_benchmarks

        return run_benchmarks(args)
    return run_ifeval(args)


def run_ifeval(args: argparse.Namespace) -> int:
    from zhyper.evaluation import ifeval
    from zhyper.evaluation.journal import checkpoint_digest
    from zhyper.io import same_folder

    if same_folder(args.checkpoint, args.out):
        raise ValueError(f"--out {args.out} is inside the --checkpoint folder {args.checkpoint}: answers and reports "
                         "written there would change the checkpoint's files (and its fingerprint, so no answer "
                         "would ever be reused); choose an --out outside the checkpoint folder")
    rows = ifeval.load_prompts(args.data, limit=args.limit)
    model = load_model(args.checkpoint, args.base).eval()
    run = {"checkpoint": checkpoint_digest(args.checkpoint), "base": args.base}
    results = ifeval.evaluate(model, rows, args.conditions, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, journal_dir=args.out, run=run, reuse=not args.fresh)
    out = ifeval.write(results, rows, args.out)
    print((out / "ifeval.md").read_text(encoding="utf-8"))
    print(f"answers and ifeval.json in {out}")
    return 0


def load_model(folder: str, base: str | None):
    """A Zhyper checkpoint (zhyper_config.json), or a PEFT adapter folder (the multi-task LoRA baseline's)."""
    from pathlib import Path

    if (Path(folder) / "adapter_config.json").is_file() and not (Path(folder) / "zhyper_config.json").is_file():
        from zhyper.baselines import LoRABaseline

        return LoRABaseline.from_pretrained(folder, base_model=base)
    from zhyper.model import ZhyperModel

    return ZhyperModel.from_pretrained(folder, base_model=base)
