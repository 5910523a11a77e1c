"""The ``zhyper`` console entry point.

Each subcommand lives in ``zhyper/commands/<name>.py`` with two functions,
``configure(parser)`` and ``run(args) -> int``. Only the module of the chosen subcommand
is imported, so ``zhyper --help`` never touches torch, transformers or deepspeed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> one-line help; the module zhyper.commands.<name with - as _> implements it
COMMANDS = {
    "params": "trainable-parameter table of diag / square / full / LoRA for a base model (no weights needed)",
    "generate": "generate a PEFT LoRA adapter (or a zhyper modulation) from a text description",
    "chat": "answer a prompt with a Zhyper checkpoint conditioned on a description",
    "theory": "empirical Rademacher complexity: verify the paper's bounds",
    "base-model": "convert the shipped SmolLM2-135M-Instruct GGUF into a cached HF folder and print its path",
    "plan": "per-rank memory and computed step time of a run before it starts: does it fit, what to change",
    "serve": "OpenAI-compatible HTTP server: each request brings its own description, batched together",
}


def build_parser() -> argparse.ArgumentParser:
    from zhyper import __version__

    parser = argparse.ArgumentParser(prog="zhyper", description="Zhyper: factorized hypernetworks for "
                                     "conditioned LLM fine-tuning. Train with `deepspeed launch/train.py`.")
    parser.add_argument("--version", action="version", version=f"zhyper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # handles --help / --version / unknown commands
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"zhyper.commands.{name.replace('-', '_')}")
    sub = argparse.ArgumentParser(prog=f"zhyper {name}", description=COMMANDS[name])
    sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.configure(sub)
    args = sub.parse_args(rest)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
