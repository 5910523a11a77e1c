"""Does the hypernetwork learn to condition? One single-process run on the built-in suite, one variant.

    .venv/bin/python benchmarks/ablate_conditioning.py [--steps 200] [--no-contrast] [--no-center]
        [--hypernet-lr-scale 1] [--seed 0] [--threads 2] [--contexts NAME ...] [--n-contexts 4]

SmolLM2-135M-Instruct (fp32) + all-MiniLM-L6-v2, diag r 8 on q/v, 4 examples of 4 different seen
contexts per step (as the main job's global batch; ``--contexts`` limits the suite as the main
job's ``data.contexts`` does; the default is the whole suite), AdamW lr 2e-3 with the main job's warm-up and
decay. Every ``--eval-every`` steps it prints the validation loss on seen contexts with held-out
descriptions, the conditioning gap (that loss minus the loss with another context's description
on the same examples) with its standard error, the unseen-context loss, and the mean and spread
across contexts of the generated z. No DeepSpeed (a quality ablation, not a speed benchmark): the main job's engine is tested to
give the same losses as a plain process.
"""

from __future__ import annotations

import argparse
import os
import random
import time

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--contrast", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--center", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--hypernet-lr-scale", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-examples", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contexts", nargs="*", default=[], help="restrict the suite to these contexts")
    parser.add_argument("--n-contexts", type=int, default=4, help="contexts per step (k = 1)")
    args = parser.parse_args()

    import torch

    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.base_model import smollm2_path
    from zhyper.data import ChatCollator, MixedContextSampler, builtin_suite
    from zhyper.training.evaluate import validation_metrics
    from zhyper.training.objective import param_groups, response_loss_sum, warmup_decay

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    data = builtin_suite()
    if args.contexts:
        data = data.restrict(args.contexts)
    rows = data.split("train")
    model = ZhyperModel.from_base(str(smollm2_path()), ZhyperConfig(contrast=args.contrast))
    if args.center:
        model.center_contexts([d for c in sorted(set(rows["context"])) for d in data.descriptions[c]])
    collator = ChatCollator(model.tokenizer, max_length=128)
    sampler = MixedContextSampler(rows, data.descriptions, n_contexts=args.n_contexts, k=1, seed=args.seed)
    opt = torch.optim.AdamW(param_groups(model, 0.01, args.lr, args.hypernet_lr_scale), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(args.steps, 0.1))

    def forward(ids, mask, emb):
        return model(input_ids=ids, attention_mask=mask, context_embeddings=emb).logits

    def report(step: int, t0: float) -> None:
        model.eval()
        m = validation_metrics(forward, collator, model.encode_descriptions, data, 0, 1, args.max_examples, 8)
        with torch.no_grad():
            z = model.modulation_for([data.heldout_descriptions[c][0] for c in sampler.contexts])
        model.train()
        print(f"{step:>5} | {m['val_seen_loss']:.3f} | {m['conditioning_gap']:+.4f} ± {2 * m['conditioning_gap_se']:.4f}"
              f" | {m.get('val_unseen_loss', float('nan')):.3f} | {float(z.mean()):.2f} | {float(z.std(0).mean()):.4f}"
              f" | {time.perf_counter() - t0:.0f}", flush=True)

    print(f"contrast={args.contrast} center={args.center} hypernet_lr_scale={args.hypernet_lr_scale} seed={args.seed}"
          f" contexts={data.seen_contexts} n_contexts={args.n_contexts}")
    print(" step | val_seen | gap ± 2 s.e. | val_unseen | z mean | z spread across contexts | s")
    t0 = time.perf_counter()
    report(0, t0)
    model.train()
    for step in range(args.steps):
        picked = sampler.batch(step)
        batch = collator([{**rows[i], "description": d} for i, d in picked])
        loss, n = response_loss_sum(forward(batch["input_ids"], batch["attention_mask"],
                                            model.encode_descriptions(batch["descriptions"])), batch["labels"])
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            report(step + 1, t0)


if __name__ == "__main__":
    main()
