"""``zhyper serve --checkpoint DIR``: an OpenAI-compatible HTTP server; every request brings its own description.

Requests with different descriptions are decoded together in one batch (one modulation row each).
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import os

from zhyper.commands._common import add_model_arguments
from zhyper.validate import in_range, int_in_range, non_negative_int, option, positive_int

API_KEY_ENV = "ZHYPER_API_KEY"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # --checkpoint, --base: the same as generate and chat
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=option(int_in_range, int, low=0, high=65535), default=8000,
                        help="TCP port, 0 to 65535 (default 8000)")
    parser.add_argument("--max-batch", type=option(positive_int, int), default=32,
                        help="most requests decoded together in one batch (default 32)")
    parser.add_argument("--max-queue", type=option(positive_int, int), default=256,
                        help="most requests waiting for a batch slot; more are answered 429 (default 256)")
    parser.add_argument("--admit-window-ms", type=option(in_range, float, low=0, high=10_000), default=20.0,
                        help="a waiting request waits up to this long for others to share its prefill (default 20; "
                        "0: none); running rows keep decoding meanwhile")
    parser.add_argument("--prefill-tokens", type=option(positive_int, int), default=None,
                        help="most prompt tokens (rows x longest prompt) in one prefill; requests admitted together "
                        "beyond it are prefilled in pieces, each piece's first tokens sent before the next "
                        "(lower time to first token under bursts; default: one prefill per admission)")
    parser.add_argument("--cache-size", type=option(non_negative_int, int), default=1024,
                        help="descriptions whose modulation is kept (LRU; 0 disables the cache; default 1024)")
    parser.add_argument("--default-max-tokens", type=option(positive_int, int), default=256,
                        help="max_tokens of a request that sets none (default 256, capped by the context length)")
    parser.add_argument("--model-name", default="zhyper", help="the model id clients send (default 'zhyper'); "
                        "named contexts are always 'zhyper:<name>'")
    parser.add_argument("--no-builtin-contexts", action="store_true",
                        help="do not offer the built-in suite's rule names as 'zhyper:<rule>' contexts")
    ops = parser.add_argument_group("operations")
    ops.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer <key>' on /v1 routes "
                     f"(default: ${API_KEY_ENV} if set, else open; visible ASCII only); /health, /ready, /metrics stay open")
    ops.add_argument("--max-prompt-tokens", type=option(positive_int, int), default=None,
                     help="refuse prompts longer than this many tokens (default: the context length only)")
    ops.add_argument("--max-tokens-limit", type=option(positive_int, int), default=None,
                     help="refuse a max_tokens above this (default: the context length only)")
    ops.add_argument("--max-description-chars", type=option(positive_int, int), default=2000,
                     help="refuse longer descriptions (default 2000 characters)")
    ops.add_argument("--max-description-tokens", type=option(positive_int, int), default=None,
                     help="refuse descriptions of more encoder tokens (default and maximum: the sentence "
                     "encoder's window, past which it would drop the rest)")
    ops.add_argument("--max-body-bytes", type=option(positive_int, int), default=4 * 1024 * 1024,
                     help="refuse larger request bodies with 413 (default 4 MiB)")
    ops.add_argument("--drain-timeout", type=option(in_range, float, low=0, high=3600), default=30.0,
                     help="on SIGTERM, seconds to let in-flight requests finish before exiting (default 30)")


def run(args: argparse.Namespace) -> int:
    from zhyper.serving.app import serve
    from zhyper.serving.limits import Limits
    from zhyper.serving.ops import check_api_key

    api_key = args.api_key if args.api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    if api_key is not None:  # refused before the model loads, naming where the key came from
        check_api_key(api_key, "--api-key" if args.api_key is not None else f"${API_KEY_ENV}")
    limits = Limits(max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens_limit,
                    max_description_chars=args.max_description_chars,
                    max_description_tokens=args.max_description_tokens, max_body_bytes=args.max_body_bytes)
    serve(args.checkpoint, host=args.host, port=args.port, log_level="debug" if args.verbose else "info",
          base=args.base, max_batch=args.max_batch, max_queue=args.max_queue, cache_size=args.cache_size,
          default_max_tokens=args.default_max_tokens, model_name=args.model_name,
          builtin_contexts=not args.no_builtin_contexts, admit_window=args.admit_window_ms / 1000,
          api_key=api_key, limits=limits, drain_timeout=args.drain_timeout, prefill_tokens=args.prefill_tokens)
    return 0
