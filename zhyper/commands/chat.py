"""``zhyper chat --checkpoint DIR --description "..." [--description "..." --weight W ...] "prompt" [...]``.

Answers prompts conditioned on one description, or several combined (``zhyper.compose``).
"""

from __future__ import annotations

import argparse

from zhyper.commands._common import add_description_arguments, add_model_arguments, description_entry
from zhyper.validate import option, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_description_arguments(parser)
    parser.add_argument("prompts", nargs="+", help="one or more user prompts (answered in one batch)")
    parser.add_argument("--system", default="", help="system message (default: the chat template's own)")
    parser.add_argument("--max-new-tokens", type=option(positive_int, int), default=None,
                        help="most tokens per answer (default 128, capped by what the model's context length leaves "
                             "beside the prompt; a larger value given here is refused, as the server does)")


def run(args: argparse.Namespace) -> int:
    from zhyper.generation import max_new_tokens_for
    from zhyper.model import ZhyperModel

    entry, weights = description_entry(args)
    model = ZhyperModel.from_pretrained(args.checkpoint, base_model=args.base).eval()
    n = len(args.prompts)
    max_new_tokens = max_new_tokens_for(model, args.prompts, args.max_new_tokens, system=args.system)
    # check_finite: a NaN/inf modulation, or one that overflows the model (a weight of 1e30), is a clear error
    # naming the description, not an empty answer
    answers = model.generate(args.prompts, [entry] * n, weights=None if weights is None else [weights] * n,
                             combine=args.combine, system=args.system, max_new_tokens=max_new_tokens,
                             check_finite=True)
    for prompt, answer in zip(args.prompts, answers):
        if len(args.prompts) > 1:
            print(f"> {prompt}")
        print(answer.strip())
    return 0
