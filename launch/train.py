"""Train a Zhyper hypernetwork with DeepSpeed (ZeRO-3 by default), top to bottom.

    deepspeed --num_gpus 2 launch/train.py --ds_config launch/configs/zero3.json \
        --config launch/configs/default.yaml [train.lr=5e-4 ...] [--resume]

What it does: build the frozen base LM (partitioned at load time under ZeRO-3), inject ZLinear,
add the hypernetwork (ZhyperModel: one nn.Module, so the engine partitions everything), embed
every description once, then loop: sample n contexts x k examples -> micro-batches -> engine
forward -> engine.backward -> engine.step. Rank 0 logs to MLflow and shows a progress bar.
At the end the ZeRO-3 shards are gathered into a zhyper checkpoint (save_pretrained format),
one description is exported as a PEFT adapter, and greedy answers are scored per context.
On CPU: gloo, OMP_NUM_THREADS=1, two processes via --num_gpus 2 (see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("zhyper.train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ds_config", required=True, help="DeepSpeed JSON (ZeRO stage, bf16, optimizer)")
    p.add_argument("--config", default=None, help="run YAML (launch/configs/*.yaml); defaults if omitted")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    p.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                   help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=5e-4 data.k=2")
    return p.parse_args(argv)


def resolve_ds_config(path: str, cfg, world: int) -> dict:
    """Read the DeepSpeed JSON and fill the batch, LR and clipping fields from the run config."""
    ds = json.loads(Path(path).read_text())
    gas = int(ds.get("gradient_accumulation_steps", 1) if ds.get("gradient_accumulation_steps") != "auto" else 1)
    global_batch = cfg.data.n_contexts * cfg.data.k
    if global_batch % (world * gas):
        raise ValueError(f"data.n_contexts x data.k = {global_batch} examples per step must be divisible by "
                         f"world size {world} x gradient_accumulation_steps {gas}")
    ds.update(train_batch_size=global_batch, gradient_accumulation_steps=gas,
              train_micro_batch_size_per_gpu=global_batch // (world * gas), gradient_clipping=cfg.train.grad_clip)
    opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True}})
    opt.setdefault("params", {}).update(lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ds.pop("scheduler", None)  # the schedule is ours (warm-up + linear decay), stepped by the engine
    return ds


def build_base(cfg, ds: dict, dtype):
    """The frozen base LM and its tokenizer. Under ZeRO-3 it is partitioned while it loads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zhyper.base_model import smollm2_path

    zero3 = ds.get("zero_optimization", {}).get("stage", 0) == 3
    if cfg.base_model == "tiny-llama":  # random weights, the real architecture; for tests
        tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
        conf = LlamaConfig(vocab_size=len(tokenizer), intermediate_size=2 * cfg.tiny["hidden_size"],
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, **cfg.tiny)
        # Built whole (HF's weight init indexes tensors that zero.Init has already emptied); the
        # engine partitions it in deepspeed.initialize. The same seed gives every rank the same weights.
        torch.manual_seed(cfg.train.seed)
        return LlamaForCausalLM(conf).to(dtype), tokenizer, None
    path = str(smollm2_path()) if cfg.base_model == "smollm2" else cfg.base_model
    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.base_revision)
    hf_ds = None
    if zero3:  # must stay alive while from_pretrained runs: it switches loading to zero.Init
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds)
    base = AutoModelForCausalLM.from_pretrained(path, revision=cfg.base_revision, dtype=dtype)
    return base, tokenizer, hf_ds


def load_data(cfg):
    from zhyper import data as zdata

    if cfg.data.source == "builtin":
        data = zdata.builtin_suite(seed=cfg.data.seed)
    elif cfg.data.source == "askx":
        data = zdata.load_askx(cfg.data.path, setting=cfg.data.setting, drop_system_message=cfg.data.drop_system_message)
    else:
        data = zdata.load_tasks(cfg.data.path, data_files=cfg.data.data_files)
    return data.restrict(cfg.data.contexts) if cfg.data.contexts else data


def main(argv=None) -> int:
    args = parse_args(argv)
    from zhyper.training.config import flatten, load_config

    cfg = load_config(args.config, args.overrides)  # config errors surface before anything heavy loads

    import deepspeed
    import torch
    import torch.distributed as dist

    from zhyper import ZhyperModel
    from zhyper.data import ChatCollator, MixedContextSampler
    from zhyper.hyper.encoder import ContextEncoder
    from zhyper.tracking import Tracker
    from zhyper.training import checkpoint
    from zhyper.training.evaluate import accuracy_table, describe_gap, format_table, validation_metrics
    from zhyper.training.objective import (IGNORE_INDEX, add_neftune_noise, modulation_penalty, param_groups,
                                           response_loss_sum, warmup_decay)

    if cfg.base_model in ("smollm2", "tiny-llama"):  # convert the shipped model (first run) before any process group
        from zhyper.base_model import smollm2_path

        smollm2_path()  # exists: under one, transformers writes weights on rank 0 only
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    master = rank == 0  # only rank 0 writes logs, MLflow, files
    logging.basicConfig(level=logging.INFO if master else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    device = torch.device(f"cuda:{args.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    out_dir, ckpt_dir = Path(cfg.output_dir), Path(cfg.output_dir) / "checkpoints"
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not args.resume and checkpoint.latest_tag(ckpt_dir) is not None:
        raise SystemExit(f"{ckpt_dir} already holds a checkpoint: pass --resume to continue it, "
                         "or choose another output_dir")

    # ---- data: contexts, descriptions, the mixed-context sampler
    data = load_data(cfg)
    train_rows = data.split("train")
    sampler = MixedContextSampler(train_rows, data.descriptions, n_contexts=cfg.data.n_contexts, k=cfg.data.k,
                                  seed=cfg.data.seed, rank=rank, world_size=world)

    # Embed every description once (train + held-out); training looks rows up, never re-encodes.
    # Before the base model loads: under ZeRO-3 anything loaded later is partitioned, the encoder too.
    zcfg = cfg.zhyper_config()
    all_desc = sorted({d for pool in (data.descriptions, data.heldout_descriptions) for ds_ in pool.values()
                       for d in ds_})
    table = ContextEncoder(zcfg.encoder, pooling=zcfg.encoder_pooling).encode(all_desc).to(device)  # (n, d_c)
    row_of = {d: i for i, d in enumerate(all_desc)}

    def embed(descriptions):
        return table[[row_of[d] for d in descriptions]]

    # ---- model: frozen base (partitioned at load under ZeRO-3) + ZLinear + hypernetwork
    ds = resolve_ds_config(args.ds_config, cfg, world)
    dtype = torch.bfloat16 if ds.get("bf16", {}).get("enabled") else torch.float32
    base, tokenizer, hf_ds = build_base(cfg, ds, dtype)
    torch.manual_seed(cfg.train.seed)  # the same adapter and hypernetwork initialisation on every rank and every run
    model = ZhyperModel.from_base(base, zcfg, tokenizer=tokenizer)
    center = None
    if cfg.train.center_contexts:  # the mean of the training descriptions (seen contexts only), fp32
        train_desc = [d for c in sorted(set(train_rows["context"])) for d in data.descriptions[c]]
        center = model.hypernet.set_context_center(embed(train_desc).float().cpu()).clone()
    collator = ChatCollator(tokenizer, max_length=cfg.data.max_length,
                            description_in_prompt=cfg.data.description_in_prompt)

    if cfg.train.neftune_alpha > 0:
        add_neftune_noise(model.base.get_input_embeddings(), cfg.train.neftune_alpha)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr_lambda = warmup_decay(cfg.train.max_steps, cfg.train.warmup_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.train.weight_decay, cfg.train.lr,
                                                   cfg.train.hypernet_lr_scale), config=ds,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda))
    gas, micro = engine.gradient_accumulation_steps(), engine.train_micro_batch_size_per_gpu()
    stage = engine.zero_optimization_stage()
    if stage == 3:  # record what this rank holds: proof that ZeRO-3 partitions
        held = sum(p.ds_tensor.numel() for p in engine.module.parameters())
        full = sum(p.ds_numel for p in engine.module.parameters())
        (out_dir / f"partition_rank{rank}.json").write_text(json.dumps({"held": held, "full": full, "world": world}))

    start_step, run_id = 0, None
    if args.resume:
        state = checkpoint.load(engine, ckpt_dir, rank)
        start_step, run_id = state["step"], state.get("mlflow_run_id")
        sampler.load_state_dict(state["sampler"])
    tracker = Tracker(master, out_dir, cfg.experiment, cfg.tracking_uri, cfg.run_name, run_id=run_id)
    tracker.log_params(flatten(cfg.to_dict()) | {"world_size": str(world), "zero_stage": str(stage),
                                                "dtype": str(dtype), "n_trainable": str(n_trainable)})

    def forward_logits(ids, mask, emb):
        return engine(input_ids=ids.to(device), attention_mask=mask.to(device), context_embeddings=emb).logits

    def evaluate(step):
        engine.eval()
        metrics = validation_metrics(forward_logits, collator, embed, data, rank, world,
                                     cfg.eval.max_examples, cfg.eval.batch_size)
        engine.train()
        tracker.log_metrics(metrics, step)
        if master:
            log.info("step %d: %s", step, "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    # ---- the loop: batch -> engine forward -> engine.backward -> engine.step
    from tqdm import tqdm

    engine.train()
    losses: list[float] = []
    bar = tqdm(range(start_step, cfg.train.max_steps), initial=start_step, total=cfg.train.max_steps,
               disable=not master, desc="train", dynamic_ncols=True)
    t_start, tokens_seen = time.perf_counter(), 0
    for step in bar:
        picks = sampler.batch(step)  # this rank's (row, description) pairs of the global batch
        batches = [collator([{**train_rows[r], "description": d} for r, d in picks[i * micro:(i + 1) * micro]])
                   for i in range(gas)]
        # Normalise by the response tokens of the whole step (all micro-batches, all ranks), so
        # accumulation is exact; DeepSpeed then averages gradients over ranks, hence * world.
        n_tok = torch.tensor(sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
                             dtype=torch.float64)
        dist.all_reduce(n_tok)
        norm = float(n_tok) / world
        loss_sum = torch.zeros((), dtype=torch.float64)
        for b in batches:
            out = engine(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                         context_embeddings=embed(b["descriptions"]))
            lsum, _ = response_loss_sum(out.logits, b["labels"].to(device), cfg.train.label_smoothing)
            loss = lsum / norm
            if cfg.train.modulation_l2 > 0:
                loss = loss + cfg.train.modulation_l2 * modulation_penalty(out.modulation, zcfg.mode, zcfg.z_init) / gas
            engine.backward(loss, scale_wrt_gas=False)
            engine.step()  # updates only at the accumulation boundary
            loss_sum += lsum.detach().double().cpu()
            tokens_seen += int(b["attention_mask"].sum())
        dist.all_reduce(loss_sum)
        train_loss = float(loss_sum) / float(n_tok)
        losses.append(train_loss)
        tracker.log_metrics({"train_loss": train_loss, "lr": engine.get_lr()[0]}, step + 1)
        bar.set_postfix(loss=f"{train_loss:.4f}")
        if (step + 1) % cfg.train.log_every == 0:
            tracker.flush()
        if cfg.eval.every and (step + 1) % cfg.eval.every == 0 and step + 1 < cfg.train.max_steps:
            evaluate(step + 1)
        stopping = cfg.train.stop_after == step + 1 < cfg.train.max_steps
        if stopping or cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0:
            checkpoint.save(engine, ckpt_dir, step + 1, {"step": step + 1, "sampler": sampler.state_dict(),
                                                        "mlflow_run_id": tracker.run_id}, rank)
        if stopping:
            tracker.flush()
            if master:
                (out_dir / "losses.json").write_text(json.dumps({"start_step": start_step, "losses": losses}))
                log.info("stopped after step %d as asked (train.stop_after); continue with --resume", step + 1)
            return 0
    elapsed = time.perf_counter() - t_start
    n_steps = cfg.train.max_steps - start_step
    speed = {"step_time_s": elapsed / max(1, n_steps), "tokens_per_s_per_rank": tokens_seen / max(elapsed, 1e-9)}
    if master:
        (out_dir / "losses.json").write_text(json.dumps({"start_step": start_step, "losses": losses, **speed}))
    final_metrics = evaluate(cfg.train.max_steps)
    if not cfg.train.checkpoint_every or cfg.train.max_steps % cfg.train.checkpoint_every:
        checkpoint.save(engine, ckpt_dir, cfg.train.max_steps, {"step": cfg.train.max_steps,
                                                                "sampler": sampler.state_dict(),
                                                                "mlflow_run_id": tracker.run_id}, rank)

    # ---- probe logits of the live engine (the test compares the gathered checkpoint with them)
    probe = collator([{**train_rows[r], "description": d} for r, d in sampler.batch(0)])
    engine.eval()
    with torch.no_grad():
        probe_logits = forward_logits(probe["input_ids"], probe["attention_mask"], embed(probe["descriptions"]))

    # ---- gather the ZeRO-3 shards (fp32 master weights) and leave DeepSpeed behind
    trainable = {}
    for name, p in engine.module.named_parameters():
        if p.requires_grad:
            full = deepspeed.utils.safe_get_full_fp32_param(p)  # collective under ZeRO-3
            if full is None:  # ZeRO stage 0 in fp32: the module holds the master weights
                full = p.detach()
            trainable[name] = full.detach().float().cpu().clone()
    del hf_ds
    from transformers.integrations import deepspeed as hf_deepspeed

    hf_deepspeed.unset_hf_deepspeed_config()
    final_dir = out_dir / "final"
    plain_base, _, _ = build_base(cfg, {}, torch.float32)
    plain = ZhyperModel.from_base(plain_base, zcfg, tokenizer=tokenizer).to(device).eval()
    missing = set(trainable) - set(dict(plain.named_parameters()))
    if missing:
        raise RuntimeError(f"gathered parameters not in the plain model: {sorted(missing)[:5]}")
    plain.load_state_dict(trainable, strict=False)
    if center is not None:  # a buffer, not a parameter: taken from where it was computed, in fp32
        plain.hypernet.context_center.copy_(center)
    plain.base_model_id = cfg.base_model  # recorded in zhyper_config.json
    if master:
        from safetensors.torch import save_file

        plain.save_pretrained(final_dir)
        save_file({"logits": probe_logits.float().cpu().contiguous(), "input_ids": probe["input_ids"],
                   "attention_mask": probe["attention_mask"],
                   "context_embeddings": embed(probe["descriptions"]).float().cpu().contiguous()},
                  str(out_dir / "probe.safetensors"))
        context = data.seen_contexts[0]
        example_desc = (data.heldout_descriptions.get(context) or data.descriptions[context])[0]
        plain.export_peft(example_desc, out_dir / "peft_example")
        (out_dir / "peft_example" / "DESCRIPTION.txt").write_text(example_desc + "\n")
    dist.barrier()

    # ---- rule-compliance accuracy of generated answers (each rank generates its share)
    acc = {}
    if cfg.eval.generate and hasattr(data, "score"):
        acc = accuracy_table(plain, data, rank, world, cfg.eval.generate_examples, cfg.eval.max_new_tokens)
    if master:
        report = {"final": final_metrics, "accuracy": acc, **speed, "wall_time_s": elapsed}
        (out_dir / "eval.json").write_text(json.dumps(report, indent=1))
        md = "# Evaluation\n\n" + "\n".join(f"- {k}: {v:.4f}" for k, v in final_metrics.items())
        if "conditioning_gap" in final_metrics:
            md += "\n\n" + describe_gap(final_metrics["conditioning_gap"], final_metrics["conditioning_gap_se"])
        if acc:
            md += "\n\nRule-compliance accuracy of greedy answers:\n\n" + format_table(acc)
        (out_dir / "eval.md").write_text(md + "\n")
        tracker.log_metrics({f"acc_{c.replace('+', '_')}_{s}": v for c, row in acc.items() for s, v in row.items()},
                            cfg.train.max_steps)
        tracker.log_artifacts(final_dir, "zhyper_checkpoint")
        tracker.log_artifacts(out_dir / "peft_example", "peft_example")
        tracker.log_artifacts(out_dir / "eval.md")
        tracker.finish()
        print(f"\n{md}\n\ncheckpoint: {final_dir.resolve()}\nPEFT adapter: {(out_dir / 'peft_example').resolve()}"
              f"\nMLflow: {tracker.tracking_uri} (run {tracker.run_id})\nevaluation: {(out_dir / 'eval.md').resolve()}")
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
