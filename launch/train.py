"""Train a Zhyper hypernetwork (or the multi-task LoRA baseline) with DeepSpeed, at the ZeRO stage of --ds_config.

    deepspeed --num_gpus 2 launch/train.py --ds_config launch/configs/zero2.json \
        --config launch/configs/default.yaml [train.lr=5e-4 ...] [--resume]

The main job (``bash make.sh train``) uses ZeRO-2 (``launch/configs/zero2.json``); ZeRO-3
(``launch/configs/zero3.json``) partitions the base model too, for models that do not fit on one device.

The recipe reads top to bottom; each step lives in ``zhyper/training/``: set up the process
(``session``), embed every description once and build the sampler (``data``), load the frozen base
(partitioned while it loads under ZeRO-3), inject ZLinear and add the hypernetwork, wrap it in the
engine (``build``), then loop: sampler batch -> micro-batches -> forward -> backward -> step
(``step``), with validation losses every ``eval.every`` steps and crash-safe checkpoints
(``resume``). At the end the trained tensors are gathered and written as a zhyper checkpoint and a
PEFT example on rank 0 (``final``), greedy answers are scored under every condition and control
(``evaluate``), and eval.md, the confusion heatmap and MLflow get the results (``report``).
On CPU: gloo, OMP_NUM_THREADS=1, two processes via --num_gpus 2 (see docs/training.md).

Errors in what was given (a config key, a value, a path, a damaged checkpoint) end every rank with one
line and exit status 2 (the traceback with --verbose). Ctrl-C or SIGTERM ends the MLflow run as
KILLED, removes the run's record and keeps the last complete checkpoint: the same command with
--resume continues (docs/training.md, "Failure modes").
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ds_config", required=True, help="DeepSpeed JSON (ZeRO stage, bf16, optimizer)")
    p.add_argument("--config", default=None, help="run YAML (launch/configs/*.yaml); defaults if omitted")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="TAG",
                   help="continue from <output_dir>/checkpoints/latest (or the checkpoint TAG, e.g. step200)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output_dir that holds other files (files of the names a run writes are replaced)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error, not only its message")
    p.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                   help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=5e-4 data.k=2")
    args = p.parse_args(argv)
    if args.resume and "=" in args.resume:  # `--resume key=value ...`: an override, not a tag
        args.overrides.insert(0, args.resume)
        args.resume = "latest"
    return args


EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def main(argv=None) -> int:
    args = parse_args(argv)
    from zhyper.training import session

    session.handle_signals()
    try:
        return train(args)
    except BaseException as err:  # noqa: B036 - every way out ends the MLflow run and removes the run's record
        return ended_early(err, args)


def ended_early(err: BaseException, args) -> int:
    """Clean up after ``err``; a user error or an interrupt becomes one line and an exit status, others re-raise."""
    from zhyper.training import session
    from zhyper.training.resume import CheckpointError

    interrupted = isinstance(err, KeyboardInterrupt) or session.signalled() is not None
    session.abort("KILLED" if interrupted else "FAILED")
    rank = os.environ.get("RANK", "0")
    if isinstance(err, SystemExit):
        raise err
    if interrupted:
        if rank == "0":
            print(f"train.py: interrupted ({session.signalled() or 'KeyboardInterrupt'}): the last complete "
                  "checkpoint is kept; the same command with --resume continues it", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, (ValueError, OSError, CheckpointError, FloatingPointError)) and not args.verbose:
        print(f"train.py{'' if rank == '0' else f' (rank {rank})'}: error: {err}  (--verbose shows the traceback)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    raise err


def train(args) -> int:
    from zhyper.training.config import load_config

    cfg = load_config(args.config, args.overrides)  # config errors surface before anything heavy loads
    from zhyper.data import ChatCollator
    from zhyper.training import build, evaluate, final, resume, session
    from zhyper.training.data import prepare_data
    from zhyper.training.objective import add_neftune_noise
    from zhyper.training.progress import Progress, fresh_state
    from zhyper.training.step import micro_batches, train_step

    s = session.start(cfg, args.resume, args.local_rank, overwrite=args.overwrite)
    run = prepare_data(cfg, s.rank, s.world, s.device)  # before the base loads (ZeRO-3 would partition the encoder)
    ds = build.resolve_ds_config(args.ds_config, cfg, s.world)
    tokenizer = build.tokenizer_for(cfg)
    base, hf_ds = build.build_base(cfg, ds, tokenizer)
    model = build.build_model(cfg, base, tokenizer)
    build.freeze_factors(cfg, model)  # model.freeze_factors_from: A/B of a trained LoRA, frozen (else nothing)
    if run.center is not None:
        model.hypernet.set_context_center(run.center)
    if cfg.train.neftune_alpha > 0:
        add_neftune_noise(base.get_input_embeddings(), cfg.train.neftune_alpha)
    collator = ChatCollator(tokenizer, max_length=cfg.data.max_length,
                            description_in_prompt=cfg.data.description_in_prompt)
    engine = build.build_engine(cfg, model, ds)
    del hf_ds  # only needed while the base loaded and the engine partitioned it
    gas, micro = engine.gradient_accumulation_steps(), engine.train_micro_batch_size_per_gpu()
    state = resume.load(engine, s.ckpt_dir, s.rank, run.sampler, args.resume) if args.resume else fresh_state()
    progress = Progress(cfg, s, engine, state, build.param_count(model))

    def evaluate_losses(step: int) -> dict[str, float]:
        metrics = evaluate.loss_metrics(engine, collator, run, cfg, s.rank, s.world)
        progress.log_eval(step, metrics)
        return metrics

    engine.train()
    for step in progress.steps():
        batches = micro_batches(run, collator, step, gas, micro)
        result = train_step(engine, batches, run.table, cfg.train, cfg.model, step, run.descriptions)
        progress.log_step(step, result)
        done = step + 1
        if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.train.max_steps:
            evaluate_losses(done)
        stopping = cfg.train.stop_after == done < cfg.train.max_steps
        every = cfg.train.checkpoint_every
        if stopping or done == cfg.train.max_steps or every and done % every == 0:
            resume.save(engine, s.ckpt_dir, done, progress.client_state(run.sampler), s.rank)
        if stopping:
            progress.stopped(done)
            s.release()  # the run's record goes, as at every other end of a run
            return 0
    speed = progress.finish_training()
    s.record_memory("training")  # peak host memory of the loop, before the end-of-training phase
    metrics = evaluate_losses(cfg.train.max_steps)
    if cfg.debug_outputs:  # what the engine tests compare: each rank's share, the live engine's logits
        final.write_debug_outputs(engine, run, collator, s)
    finish(cfg, s, engine, run, tokenizer, progress, metrics, speed)
    return 0


def finish(cfg, s, engine, run, tokenizer, progress, metrics: dict, speed: dict) -> None:
    """The end of a run: gather and write the checkpoint (rank 0), score the answers, write the report."""
    from zhyper.training import evaluate, final, report

    tensors = final.gather_trained(engine)  # a collective: every rank takes part
    fingerprint = final.base_fingerprint(engine)  # a collective too (ZeRO-3 gathers three base tensors)
    paths = final.write_final(cfg, tokenizer, tensors, s.out_dir, run.data, fingerprint) if s.master else {}
    compliance = evaluate.compliance(engine, run, cfg, s.rank, s.world, progress=s.master)
    if s.master:
        found = evaluate.diagnostics(cfg, paths)  # collapse / context ignorance, from the checkpoint just written
        md = report.write_report(cfg, s.out_dir, metrics, compliance, speed, progress.tracker, paths, found)
        progress.tracker.finish()
        print(f"\n{md}\n" + "\n".join(f"{k}: {v.resolve()}" for k, v in paths.items())
              + f"\nMLflow: {progress.tracker.tracking_uri} (run {progress.tracker.run_id})"
              f"\nevaluation: {(s.out_dir / 'eval.md').resolve()}")
    s.close()


if __name__ == "__main__":
    sys.exit(main())
