"""The ``zhyper`` console entry point.

Each subcommand lives in ``zhyper/commands/<name>.py`` with two functions,
``configure(parser)`` and ``run(args) -> int``. Only the module of the chosen subcommand
is imported, so ``zhyper --help`` never touches torch, transformers or deepspeed.

Errors in what the user gave (a bad value, a missing or malformed checkpoint, a path that cannot be
read or written: ``USER_ERRORS``) end the command with one line, ``zhyper <command>: error: ...``,
and exit status 2, as argparse does for a bad option; ``-v`` shows the traceback as well. Ctrl-C
exits with 130 and one line. Anything else is a bug in zhyper and keeps its traceback.
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
    "train": "run the DeepSpeed recipe (launch/train.py) through the real deepspeed launcher, as `bash make.sh train`",
    "inspect": "is a trained hypernetwork collapsed or ignoring its descriptions? (failure signatures of a checkpoint)",
    "eval": "score a checkpoint on a benchmark with its official checkers (ifeval: IFEval's 541 prompts)",
}
EXIT_USER_ERROR = 2  # as argparse's usage errors
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types zhyper raises for the user's input (values, paths, checkpoints), not for its bugs."""
    errors: list[type[BaseException]] = [ValueError, OSError, FloatingPointError]  # OSError: missing/unwritable paths
    if "zhyper.training.resume" in sys.modules:  # imported only when a command used it
        errors.append(sys.modules["zhyper.training.resume"].CheckpointError)
    return tuple(errors)


def run_command(name: str, module, args: argparse.Namespace) -> int:
    """``module.run(args)``; a user error becomes one line on stderr and exit status 2 (traceback with -v)."""
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"zhyper {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as err:
        if args.verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        text = str(err) or type(err).__name__
        print(f"zhyper {name}: error: {text}" + ("" if args.verbose else "  (-v shows the traceback)"),
              file=sys.stderr)
        return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    from zhyper import __version__

    parser = argparse.ArgumentParser(prog="zhyper", description="Zhyper: factorized hypernetworks for "
                                     "conditioned LLM fine-tuning. Train with `zhyper train` (the deepspeed launcher on "
                                     "launch/train.py).")
    parser.add_argument("--version", action="version", version=f"zhyper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def undecodable(argv: list[str]) -> str | None:
    """A sentence naming the first argument that is not valid UTF-8 (Python keeps its raw bytes as lone
    surrogates, which no description, prompt or path zhyper writes can carry), or None."""
    import os

    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return (f"argument {i} ({os.fsencode(arg)!r}) is not valid UTF-8; expected UTF-8 text (a terminal or "
                    "script in another encoding: convert it, e.g. with iconv, or use a UTF-8 locale)")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = undecodable(argv)
    if bad is not None:
        print(f"zhyper{' ' + argv[0] if argv and argv[0] in COMMANDS else ''}: error: {bad}", file=sys.stderr)
        return EXIT_USER_ERROR
    if len(argv) > 1 and argv[0] in ("-v", "--verbose") and argv[1] in COMMANDS:  # `zhyper -v chat ...`
        argv = [argv[1], "-v", *argv[2:]]
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
    return run_command(name, module, args)


if __name__ == "__main__":
    sys.exit(main())
