"""``zhyper params --base mistral-7b|smollm2``: trainable parameters of diag / square / full / LoRA.

Built from configs on the meta device: no weights are loaded or downloaded.
"""

from __future__ import annotations

import argparse

from zhyper.validate import OptionError, int_in_range, option, positive_int

# widths beyond any real network (2^20); the counts of wider layers would overflow torch's 64-bit sizes
MAX_WIDTH = 1 << 20


def configure(parser: argparse.ArgumentParser) -> None:
    from zhyper.bases import BASES, sized_names

    encoders = ", ".join(f"{BASES[n].default_encoder} for {n}" for n in sized_names())
    parser.add_argument("--base", choices=sized_names(), default="mistral-7b",
                        help="base model (config only; default mistral-7b)")
    parser.add_argument("--rank", type=option(positive_int, int), default=8, help="r (default 8)")
    parser.add_argument("--targets", default="q_proj,v_proj", help="comma-separated module names or all-linear")
    parser.add_argument("--encoder", help=f"context encoder (default: {encoders})")
    parser.add_argument("--context-dim", type=option(int_in_range, int, low=1, high=MAX_WIDTH),
                        help="encoder output size, for encoders not known by name")
    parser.add_argument("--latent-dim", type=option(int_in_range, int, low=1, high=MAX_WIDTH), default=128)
    parser.add_argument("--head-in", type=option(int_in_range, int, low=1, high=MAX_WIDTH), default=512)


def format_table(rows, title: str) -> str:
    lines = [title, f"{'method':<8} {'hypernetwork':>14} {'shared A/B':>12} {'total':>14}"]
    for r in rows:
        lines.append(f"{r.method:<8} {r.hypernet:>14,} {r.shared:>12,} {r.total:>14,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from zhyper.config import ZhyperConfig
    from zhyper.bases import get
    from zhyper.sizing.params import parameter_table

    base = get(args.base, sized=True)
    hf_config = base.hf_config()
    hidden = hf_config.hidden_size
    if args.rank > hidden:  # a rank above the width adds nothing (and a huge one overflows torch's sizes)
        raise OptionError("--rank", args.rank, f"an integer in [1, {hidden}] (the hidden size of {args.base})")
    targets = args.targets if args.targets == "all-linear" else [t for t in args.targets.split(",") if t]
    encoder = args.encoder or base.default_encoder
    cfg = ZhyperConfig(rank=args.rank, target_modules=targets, encoder=encoder, context_dim=args.context_dim,
                       latent_dim=args.latent_dim, head_in=args.head_in)
    rows = parameter_table(cfg, hf_config)
    title = (f"{base.hub_id}: r={args.rank}, targets={targets}, encoder={encoder} "
             f"(d_c={cfg.resolved_context_dim()}), latent={args.latent_dim}, head_in={args.head_in}")
    print(format_table(rows, title))
    return 0
