"""``zhyper chat --checkpoint DIR --description "..." "prompt" [...]``: answer prompts conditioned on a description."""

from __future__ import annotations

import argparse

from zhyper.validate import option, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="zhyper checkpoint folder (save_pretrained)")
    parser.add_argument("--description", required=True, help="the context description")
    parser.add_argument("prompts", nargs="+", help="one or more user prompts (answered in one batch)")
    parser.add_argument("--system", default="", help="system message (default: the chat template's own)")
    parser.add_argument("--max-new-tokens", type=option(positive_int, int), default=128,
                        help="most tokens per answer (default 128)")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")


def run(args: argparse.Namespace) -> int:
    from zhyper.model import ZhyperModel

    model = ZhyperModel.from_pretrained(args.checkpoint, base_model=args.base).eval()
    model.modulation_for([args.description], check_finite=True)  # NaN/inf: a clear error, not an empty answer
    answers = model.generate(args.prompts, args.description, system=args.system,
                             max_new_tokens=args.max_new_tokens)
    for prompt, answer in zip(args.prompts, answers):
        if len(args.prompts) > 1:
            print(f"> {prompt}")
        print(answer.strip())
    return 0
