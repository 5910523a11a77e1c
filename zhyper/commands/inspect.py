"""``zhyper inspect CHECKPOINT [--descriptions FILE]``: is a trained hypernetwork collapsed or ignoring descriptions?

Reads only the hypernetwork of the checkpoint (no base model is loaded) and the encoder, runs it on
the checkpoint's own context descriptions (or one description per line of ``--descriptions``) and
prints the failure-signature figures of ``zhyper.evaluation.diagnostics`` with a verdict. Exit
status 0 when healthy, 1 when the checkpoint falls in a failure regime (scripts can gate on it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="zhyper checkpoint folder (save_pretrained, a run's final/)")
    parser.add_argument("--descriptions", help="a UTF-8 text file, one description per line (default: every "
                                               "description of the checkpoint's contexts.json)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")


def read_descriptions(path: str) -> list[str]:
    """The non-empty lines of ``path``; a clear error for a folder, a non-UTF-8 file or fewer than 2 lines."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"--descriptions: {path} is a directory; expected a text file, one description per line")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--descriptions: {path} is not UTF-8 text (byte {err.start})") from None
    found = [line.strip() for line in lines if line.strip()]
    if len(found) < 2:
        raise ValueError(f"--descriptions: {path} holds {len(found)} description(s); the diagnostics compare at "
                         "least 2 (one per line)")
    return found


def run(args: argparse.Namespace) -> int:
    from zhyper.evaluation.diagnostics import inspect_checkpoint

    if not Path(args.checkpoint).is_dir():
        raise ValueError(f"checkpoint: {args.checkpoint} is not a folder; expected a zhyper checkpoint folder")
    descriptions = read_descriptions(args.descriptions) if args.descriptions else None
    found = inspect_checkpoint(args.checkpoint, descriptions)
    if args.json:
        print(json.dumps({**found.metrics(), "warnings": found.warnings()}, indent=1))
    else:
        print(f"# {args.checkpoint}\n\n{found.markdown()}")
    return 1 if found.warnings() else 0
