"""``zhyper base-model``: convert the shipped SmolLM2-135M-Instruct GGUF once and print the cached folder."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", help="cache folder (default: $ZHYPER_CACHE or ~/.cache/zhyper)")


def run(args: argparse.Namespace) -> int:
    from zhyper.base_model import smollm2_path

    print(smollm2_path(args.cache))
    return 0
