"""Run zhyper's own training step and the Trainer / SFTTrainer paths on the same data; write what they did.

    python tests/training/hf_parity.py OUT_DIR

One process (world size 1, gloo). The run config is cpu-tiny.yaml with gradient accumulation 2, the null
context, the contrastive term, the first-token weight and the modulation penalty on (every term of the
objective), and no hypernetwork dropout (dropout draws differ between loops that consume the RNG differently).
Each path starts from the same weights (``build`` seeds them) and sees the sampler's first steps in the same
order. Writes OUT_DIR/<path>.json (the step losses) and OUT_DIR/<path>.safetensors (the trained tensors) for
the paths ``zhyper`` (launch/train.py's ``train_step`` on a ZeRO-2 engine), ``trainer``, ``sft``,
``trainer_zero2`` (Trainer with ``deepspeed=``), ``resumed`` (the Trainer resumed from its checkpoint after
step 2: steps 3 and 4) and ``dropped`` (Trainer, every description replaced by
"none": the twin that must differ).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.max_steps=4", "train.warmup_ratio=0.5", "model.hyper_dropout=0", "data.null_context=true",
             "train.contrast_weight=0.5", "train.first_tokens_weight=2.0", "train.modulation_l2=0.01",
             "data.n_contexts=4", "data.k=1"]
GAS, MICRO = 2, 2
ZERO2 = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
         "gradient_accumulation_steps": "auto", "train_batch_size": "auto", "gradient_clipping": "auto"}


def setup():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    from zhyper.training.config import load_config
    from zhyper.training.session import init_distributed

    init_distributed("gloo")
    cfg = load_config(REPO / "launch" / "configs" / "cpu-tiny.yaml", OVERRIDES)
    return cfg, run_data(cfg)


def run_data(cfg):
    """``prepare_data``'s RunData with only the descriptions these steps meet embedded (seconds, not 25)."""
    from zhyper.data import MixedContextSampler
    from zhyper.hyper.encoder import ContextEncoder
    from zhyper.training.data import DescriptionTable, RunData, load_data, training_rows
    from zhyper.training.step import contrast_pairs

    data = load_data(cfg)
    rows, descriptions = training_rows(data, cfg.data.null_context, cfg.data.augment, cfg.data.seed)
    sampler = MixedContextSampler(rows, descriptions, n_contexts=cfg.data.n_contexts, k=cfg.data.k,
                                  seed=cfg.data.seed)
    seen = [d for c in sorted(data.descriptions) for d in data.descriptions[c]]
    texts = {"none", *seen}
    for step in range(cfg.train.max_steps):
        texts |= {d for _, d in sampler.batch(step)}
        texts |= {d for pair in contrast_pairs(descriptions, step, cfg.train.seed, 0) for d in pair}
    table = DescriptionTable.build(ContextEncoder(cfg.model.encoder), texts, "cpu")
    return RunData(data, rows, descriptions, sampler, table, table(seen).float().cpu())


def fresh_model(cfg, run, ds):
    from zhyper.testing import perturb
    from zhyper.training import build

    tokenizer = build.tokenizer_for(cfg)
    base, _ = build.build_base(cfg, ds, tokenizer)
    model = build.build_model(cfg, base, tokenizer)
    model.hypernet.set_context_center(run.center)
    perturb(model)  # B and the heads non-zero: every term (and the description) acts from the first step
    return model, tokenizer


def zhyper_path(cfg, run, out: Path):
    from zhyper.data import ChatCollator
    from zhyper.training import build
    from zhyper.training.final import gather_trained
    from zhyper.training.step import micro_batches, train_step

    ds_file = out / "zero2.json"
    ds = json.loads((REPO / "launch" / "configs" / "zero2.json").read_text())
    ds_file.write_text(json.dumps({**ds, "gradient_accumulation_steps": GAS}))
    ds = build.resolve_ds_config(ds_file, cfg, 1)
    model, tokenizer = fresh_model(cfg, run, ds)
    collator = ChatCollator(tokenizer, max_length=cfg.data.max_length)
    engine = build.build_engine(cfg, model, ds)
    engine.train()
    assert (engine.gradient_accumulation_steps(), engine.train_micro_batch_size_per_gpu()) == (GAS, MICRO)
    losses = [train_step(engine, micro_batches(run, collator, step, GAS, MICRO), run.table, cfg.train, cfg.model,
                         step, run.descriptions).loss for step in range(cfg.train.max_steps)]
    return losses, gather_trained(engine)


def trainer_path(cfg, run, out: Path, kind: str):
    from datasets import Dataset

    from zhyper import hf
    from zhyper.training.final import gather_trained

    rows = [{**run.rows[r], "description": "none" if kind == "dropped" else d}
            for step in range(cfg.train.max_steps) for r, d in run.sampler.batch(step)]
    model, tokenizer = fresh_model(cfg, run, {})
    cls = hf.ZhyperSFTTrainer if kind == "sft" else hf.ZhyperTrainer
    extra = {"deepspeed": ZERO2} if kind == "trainer_zero2" else {}
    if kind == "sft":  # with TRL's default activation checkpointing (zhyper's, through the Trainer)
        from trl import SFTConfig
        extra.update(cls=SFTConfig, activation_checkpointing=True)
    if kind == "trainer":  # Trainer checkpoints (zhyper files + optimizer state) after step 2, for "resumed"
        extra.update(save_strategy="steps", save_steps=2)
    args = hf.training_arguments(cfg.train, out / kind, per_device_train_batch_size=MICRO,
                                 gradient_accumulation_steps=GAS, **extra)
    trainer = cls(model, args, train_dataset=Dataset.from_list(rows), objective=cfg.train, tokenizer=tokenizer,
                  max_length=cfg.data.max_length, embed=run.table, descriptions=run.descriptions, shuffle=False)
    trainer.train(resume_from_checkpoint=str(out / "trainer" / "checkpoint-2") if kind == "resumed" else None)
    if kind == "sft":  # zhyper's checkpointing wraps each decoder layer's recompute
        assert any(getattr(getattr(m, "_gradient_checkpointing_func", None), "zhyper_keeps_modulation", False)
                   for m in model.modules()), "activation checkpointing is off"
    if kind == "trainer":  # a zhyper checkpoint, and the same base saved beside it, for the loading test
        trainer.save_model(str(out / "checkpoint"))
        save_base(cfg, out / "base")
    logged = [h["response_loss"] for h in trainer.state.log_history if "response_loss" in h]
    assert logged[-len(trainer.step_losses):] == trainer.step_losses, (logged, trainer.step_losses)  # resumed: the
    # restored log history comes first
    engine = trainer.model_wrapped if trainer.is_deepspeed_enabled else hf._Engine(model)
    return trainer.step_losses, gather_trained(engine)


def save_base(cfg, folder: Path) -> None:
    """The tiny base (the same seeded weights as every path's) as an HF folder with its tokenizer."""
    from zhyper.training import build

    tokenizer = build.tokenizer_for(cfg)
    base, _ = build.build_base(cfg, {}, tokenizer)
    base.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main(out: Path) -> None:
    from safetensors.torch import save_file

    start = time.perf_counter()
    cfg, run = setup()
    print(f"setup: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    paths = {"zhyper": lambda: zhyper_path(cfg, run, out)}
    for kind in ("trainer", "resumed", "sft", "dropped", "trainer_zero2"):  # DeepSpeed's Trainer last: its accelerate state stays
        paths[kind] = lambda kind=kind: trainer_path(cfg, run, out, kind)
    for name, fn in paths.items():
        start = time.perf_counter()
        losses, tensors = fn()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        (out / f"{name}.json").write_text(json.dumps(losses))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(Path(sys.argv[1]))
