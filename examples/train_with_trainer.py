"""Train a Zhyper model with transformers.Trainer (or trl.SFTTrainer), DeepSpeed optional (docs/hf_trainer.md).

    python examples/train_with_trainer.py --out runs/hf-trainer                      # one process, SmolLM2
    python examples/train_with_trainer.py --out runs/hf-sft --trl                    # the same with SFTTrainer
    torchrun --nproc_per_node 2 examples/train_with_trainer.py --out runs/hf-zero2 \\
        --deepspeed examples/ds_zero2.json                                           # two ranks, ZeRO-2

The data is a datasets.Dataset with the columns prompt, response and description (system and context are
optional): --data FILE.jsonl reads your own; without it the built-in suite's training rows are used, each
with one of its context's training descriptions. At the end <out>/final is a zhyper checkpoint
(ZhyperModel.from_pretrained) and <out>/peft a PEFT LoRA folder for the first description.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (Trainer output_dir; final/ and peft/ inside)")
    p.add_argument("--base", default="smollm2", help="base causal LM: smollm2 (shipped), a local folder or a hub id")
    p.add_argument("--data", default=None, help="JSONL with prompt, response, description (default: built-in suite)")
    p.add_argument("--trl", action="store_true", help="train with trl.SFTTrainer instead of transformers.Trainer")
    p.add_argument("--deepspeed", default=None, help="DeepSpeed JSON with 'auto' fields (examples/ds_zero2.json)")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4, help="examples per rank per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r of the shared factors")
    p.add_argument("--contrast-weight", type=float, default=0.0, help="train.contrast_weight (0: off)")
    p.add_argument("--null-context", action="store_true", help="add the null pseudo-context (needs base_answer)")
    p.add_argument("--max-length", type=int, default=256)
    return p.parse_args(argv)


def builtin_rows(seed: int = 0):
    """The built-in suite's training rows, each with one of its context's training descriptions (cycled)."""
    from zhyper.data import builtin_suite

    data = builtin_suite(seed=seed)
    rows = data.split("train")
    pool = data.descriptions
    return rows.map(lambda r, i: {"description": pool[r["context"]][i % len(pool[r["context"]])]},
                    with_indices=True)


def load_rows(args):
    if args.data:
        from datasets import load_dataset

        return load_dataset("json", data_files=args.data, split="train")
    rows = builtin_rows()
    if args.null_context:
        from zhyper.hf import add_null_context

        rows = add_null_context(rows, seed=0)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from zhyper.training.session import init_distributed

        init_distributed()  # DeepSpeed's CPU all-reduce leaves no shared memory behind (optional on GPUs)
    from transformers import set_seed

    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.hf import training_arguments
    from zhyper.training.config import OptimConfig

    objective = OptimConfig(max_steps=args.max_steps, lr=args.lr, contrast_weight=args.contrast_weight,
                            warmup_ratio=0.1)
    set_seed(objective.seed)  # the same hypernetwork and factor initialisation on every rank
    model = ZhyperModel.from_base(args.base, ZhyperConfig(rank=args.rank, target_modules=["q_proj", "v_proj"]))
    rows = load_rows(args)
    model.center_contexts(sorted({d for d in rows["description"]}))  # centre the hypernetwork's input
    extra = {"deepspeed": args.deepspeed} if args.deepspeed else {}
    if args.trl:
        from trl import SFTConfig

        from zhyper.hf import ZhyperSFTTrainer as Trainer
        extra["cls"] = SFTConfig
    else:
        from zhyper.hf import ZhyperTrainer as Trainer
    targs = training_arguments(objective, args.out, per_device_train_batch_size=args.batch_size,
                               gradient_accumulation_steps=args.grad_accum, **extra)
    trainer = Trainer(model, targs, train_dataset=rows, objective=objective, max_length=args.max_length)
    trainer.train()
    final = Path(args.out) / "final"
    trainer.save_model(str(final))  # every rank: under DeepSpeed the trained tensors are gathered
    if trainer.is_world_process_zero():
        reloaded = ZhyperModel.from_pretrained(final)
        description = rows[0]["description"]
        reloaded.export_peft(description, Path(args.out) / "peft")
        print(f"trained on {trainer.args.world_size} rank(s), {args.max_steps} steps; response loss per step: "
              f"{[round(x, 4) for x in trainer.step_losses]}")
        print(f"checkpoint: {final}\nPEFT adapter for {description!r}: {Path(args.out) / 'peft'}")
        print("answer:", reloaded.generate([rows[0]["prompt"]], [description], max_new_tokens=24)[0])


if __name__ == "__main__":
    main()
