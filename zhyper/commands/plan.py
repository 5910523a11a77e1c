"""``zhyper plan``: does a (multi-node) run fit, and how fast will it be, before it starts.

    zhyper plan --config RUN.yaml --ds_config DS.json --nodes N --gpus-per-node G [--gpu-memory GiB] [--device cuda|cpu]

Builds the run's model on the meta device (no weights, no download) and prints per rank the base
parameters, trained parameters, gradients, optimizer states, activations (with and without
gradient checkpointing), logits, the sentence encoder and the runtime against the device memory,
then "FITS" or "DOES NOT FIT" with what to change, and a computed (not measured) step time.
The formulas: docs/planning.md and ``zhyper.sizing.memory``.
"""

from __future__ import annotations

import argparse

from zhyper.validate import option, positive, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run YAML (launch/configs/*.yaml)")
    parser.add_argument("--ds_config", required=True, help="DeepSpeed JSON (ZeRO stage, bf16, offload)")
    parser.add_argument("--nodes", type=option(positive_int, int), default=1, help="nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=option(positive_int, int), default=1,
                        help="GPUs (ranks, on the CPU) per node (default 1)")
    parser.add_argument("--gpu-memory", type=option(positive), default=None,
                        help="GiB per GPU (default 80); with --device cpu, host RAM per rank (default: this "
                             "machine's RAM / ranks per node)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default) or cpu (device memory = host RAM, plus the measured runtime)")
    parser.add_argument("--tflops", type=option(positive), default=None,
                        help="assumed sustained TFLOP/s per rank for the step time (default: 125 on cuda, 0.03 on cpu)")
    parser.add_argument("--inter-node-gbps", type=option(positive), default=100.0,
                        help="assumed Gbit/s between nodes for ZeRO-3's all-gathers (default 100)")
    parser.add_argument("--encoder-params", type=option(positive_int, int), default=None,
                        help="parameters of the sentence encoder, when it is not a known one")
    parser.add_argument("overrides", nargs="*",
                        help="run-config overrides, e.g. data.max_length=1024 train.gradient_checkpointing=true")


def run(args: argparse.Namespace) -> int:
    from zhyper.sizing.memory import GIB
    from zhyper.sizing.plan import format_plan, plan
    from zhyper.training.build import resolve_ds_config
    from zhyper.training.config import load_config

    # a missing or malformed --config / --ds_config raises ValueError or OSError: one line, exit status 2 (cli.py)
    cfg = load_config(args.config, args.overrides)
    world = args.nodes * args.gpus_per_node
    ds = resolve_ds_config(args.ds_config, cfg, world)
    result = plan(cfg, ds, args.nodes, args.gpus_per_node, device=args.device,
                  device_memory=int(args.gpu_memory * GIB) if args.gpu_memory is not None else None,
                  flops=args.tflops * 1e12 if args.tflops is not None else None,
                  encoder_params=args.encoder_params, inter_node=args.inter_node_gbps * 1e9 / 8)
    print(format_plan(result))
    return 0
