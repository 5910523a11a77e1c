"""``zhyper serve --checkpoint DIR``: an OpenAI-compatible HTTP server; every request brings its own description.

Requests with different descriptions are decoded together in one batch (one modulation row each).
See docs/serving.md.
"""

from __future__ import annotations

import argparse


def _positive(name: str, low: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name}: expected an integer >= {low}, got {value}")
        return value
    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="zhyper checkpoint folder (save_pretrained)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_positive("--port", 0), default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-batch", type=_positive("--max-batch"), default=32,
                        help="most requests decoded together in one batch (default 32)")
    parser.add_argument("--max-queue", type=_positive("--max-queue"), default=256,
                        help="most requests waiting for a batch slot; more are answered 429 (default 256)")
    parser.add_argument("--cache-size", type=_positive("--cache-size", 0), default=1024,
                        help="descriptions whose modulation is kept (LRU; 0 disables the cache; default 1024)")
    parser.add_argument("--default-max-tokens", type=_positive("--default-max-tokens"), default=256,
                        help="max_tokens of a request that sets none (default 256, capped by the context length)")
    parser.add_argument("--model-name", default="zhyper", help="the model id clients send (default 'zhyper'); "
                        "named contexts are always 'zhyper:<name>'")
    parser.add_argument("--base", help="base model path or hub id (default: the one recorded in the checkpoint)")
    parser.add_argument("--no-builtin-contexts", action="store_true",
                        help="do not offer the built-in suite's rule names as 'zhyper:<rule>' contexts")


def run(args: argparse.Namespace) -> int:
    from zhyper.serving.app import serve

    serve(args.checkpoint, host=args.host, port=args.port, log_level="debug" if args.verbose else "info",
          base=args.base, max_batch=args.max_batch, max_queue=args.max_queue, cache_size=args.cache_size,
          default_max_tokens=args.default_max_tokens, model_name=args.model_name,
          builtin_contexts=not args.no_builtin_contexts)
    return 0
