"""The benchmark of record for the serving engine against the plain base model: paired, one process.

    .venv/bin/python benchmarks/bench_engine.py              # 1 x 64, 64 x 64, 1,024 x 16 (SmolLM2-135M-Instruct)
    .venv/bin/python benchmarks/bench_engine.py --quick      # 1 x 16, 8 x 16, 64 x 8: a few minutes
    .venv/bin/python benchmarks/bench_engine.py --cases 64x64 --reps 9

A case ``N x T`` is N distinct contexts (one description per row, so N modulation rows) each generating
exactly T new tokens, greedy:

    engine   ``Engine.generate`` (the library call: chat template, tokenising, queue, prefill, decode)
             on a perturbed diag Zhyper model (r 8 on q/v), ``ignore_eos``; every answer must hold T tokens
    plain    the plain base model's HF ``generate`` on the same chat prompts (left-padded, tokenised inside
             the timed call too), one batch, ``min_new_tokens = max_new_tokens = T``, ``do_sample=False``

Both run once untimed (the modulation cache fills, lazy loads happen), then ``--reps`` repetitions take
turns, the order alternating (ABBA), so load that comes and goes hits both alike. Each repetition gives
one ratio ``plain seconds / engine seconds`` (= engine tokens/s over plain tokens/s: above 1 the engine is
faster); the table gives the median, the range of the ratios and the load average before and after. Only
the ratios mean something: absolute times move with the machine. Target: >= 0.98x in every case.
``--cpu-time`` times the process's CPU seconds instead of wall seconds (for a machine other jobs share).
``--out DIR`` also writes engine.md and engine.json (with each repetition's seconds on both sides, in order).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _serving import descriptions, prompts  # noqa: E402  (also sets the offline hub variables)
from _timing import interleaved  # noqa: E402

FULL = ["1x64", "64x64", "1024x16"]
QUICK = ["1x16", "8x16", "64x8"]


def parse_case(text: str) -> tuple[int, int]:
    n, _, t = text.lower().partition("x")
    if not (n.isdigit() and t.isdigit()) or int(n) < 1 or int(t) < 1:
        raise argparse.ArgumentTypeError(f"expected CONTEXTSxTOKENS like 64x64, got {text!r}")
    return int(n), int(t)


def peers(engine, base, n: int, tokens: int) -> dict:
    """The two timed callables of one case: the engine's library call and the plain model's generate."""
    import torch

    from bench_contexts import left_padded

    ps, ds = prompts(n), descriptions(n)
    hf = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=engine.pad_id)

    def run_engine():
        out = engine.generate(ps, ds, max_tokens=tokens, ignore_eos=True)
        assert all(o["usage"]["completion_tokens"] == tokens for o in out), "the engine stopped early"

    def run_plain():
        batch = left_padded(engine.tokenizer, ps, ds)  # the same chat texts as engine.generate formats
        with torch.inference_mode():
            out = base.generate(**batch, **hf)
        assert out.shape[1] == batch["input_ids"].shape[1] + tokens, "generate stopped early"

    return {"engine": run_engine, "plain": run_plain}


def measure(model, base, n: int, tokens: int, reps: int, clock=time.perf_counter) -> dict:
    """One case: paired repetitions, the ratio of each, the load around them."""
    from zhyper.serving.engine import Engine

    engine = Engine(model, max_batch=n, max_queue=n, cache_size=2 * n).start()
    load0 = os.getloadavg()[0]
    try:
        times = interleaved(peers(engine, base, n, tokens), reps, clock)
    finally:
        engine.stop()
    ratios = [p / e for p, e in zip(times["plain"], times["engine"])]
    work = n * tokens
    return {"contexts": n, "tokens": tokens, "reps": reps, "ratios": ratios, "median": statistics.median(ratios),
            "low": min(ratios), "high": max(ratios),
            "engine_tok_s": work / statistics.median(times["engine"]),
            "plain_tok_s": work / statistics.median(times["plain"]),
            "load": (load0, os.getloadavg()[0]),
            "engine_s": times["engine"], "plain_s": times["plain"]}  # each repetition's seconds, in order


def row_line(r: dict) -> str:
    each = " ".join(f"{x:.3f}" for x in r["ratios"])
    return (f"| {r['contexts']} x {r['tokens']} | {r['engine_tok_s']:.1f} | {r['plain_tok_s']:.1f} "
            f"| **{r['median']:.3f}x** | {r['low']:.3f} - {r['high']:.3f} ({r['high'] - r['low']:.3f}) | {each} "
            f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")


def markdown(rows: list[dict], opts: dict) -> str:
    head = ("| contexts x new tokens | engine tok/s | plain tok/s | engine / plain, median | range (spread) "
            "| each repetition | load avg before / after |\n|---|---|---|---|---|---|---|")
    return "\n".join([f"Options: {opts}", "", head, *map(row_line, rows)]) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=parse_case, nargs="+", help=f"CONTEXTSxTOKENS (default {' '.join(FULL)})")
    p.add_argument("--quick", action="store_true", help=f"the cases {' '.join(QUICK)} and 3 repetitions")
    p.add_argument("--reps", type=int, help="paired repetitions per case (default 5; --quick 3)")
    p.add_argument("--cpu-time", action="store_true", help="time the process's CPU seconds, not wall seconds "
                   "(steadier on a machine other jobs share; with 1 thread the two agree on a quiet one)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny model instead of SmolLM2 (a smoke run)")
    p.add_argument("--out", type=Path, help="also write engine.md and engine.json to this folder")
    args = p.parse_args(argv)
    args.cases = args.cases or [parse_case(c) for c in (QUICK if args.quick else FULL)]
    args.reps = args.reps or (3 if args.quick else 5)
    if args.reps < 1:
        p.error("--reps: >= 1")
    return args


def main(argv=None) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from bench_contexts import build

    args = parse_args(argv)
    opts = {"cases": [f"{n}x{t}" for n, t in args.cases], "reps": args.reps, "tiny": args.tiny,
            "threads": torch.get_num_threads(), "clock": "cpu" if args.cpu_time else "wall"}
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"{opts}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, base_path = build(not args.tiny, Path(tmp))
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
        for n, tokens in args.cases:
            t0 = time.perf_counter()
            rows.append(measure(model, base, n, tokens, args.reps, clock))
            print(row_line(rows[-1]) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = markdown(rows, opts)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "engine.md").write_text(text)
        (args.out / "engine.json").write_text(json.dumps({"options": opts, "rows": rows}, indent=1))
    print("\n" + text)
    return rows


if __name__ == "__main__":
    main()
