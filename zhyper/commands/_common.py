"""Arguments several subcommands share, declared once: the checkpoint, the base and the description(s)."""

from __future__ import annotations

import argparse

from zhyper.validate import finite, option


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="zhyper checkpoint folder (save_pretrained)")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")


def add_description_arguments(parser: argparse.ArgumentParser) -> None:
    """``--description`` (repeatable: several contexts at once), ``--weight`` (repeatable), ``--combine``."""
    parser.add_argument("--description", action="append", required=True,
                        help="the context description, e.g. 'Answer like a German.'; repeat it to combine several")
    parser.add_argument("--weight", action="append", type=option(finite),
                        help="a weight per --description, in the same order (default 1 for one description, 1/n "
                             "for n): 0 is the base model, 1 as trained, above 1 stronger")
    parser.add_argument("--combine", choices=("modulation", "text"), default="modulation",
                        help="several descriptions: a weighted sum of their modulations (default) or one joined text")


def description_entry(args: argparse.Namespace) -> tuple[str | list[str], list[float] | None]:
    """(the description entry, its weights) of the parsed arguments, checked for the same count."""
    descriptions, weights = args.description, args.weight
    if weights is not None and len(weights) != len(descriptions):
        raise ValueError(f"--weight: expected one per --description ({len(descriptions)}), got {len(weights)}")
    entry = descriptions[0] if len(descriptions) == 1 else list(descriptions)
    return entry, weights
