"""Combining contexts costs nothing per token: a mixed batch with combined contexts against the same batch
with single contexts, through the serving engine, in one process.

    .venv/bin/python benchmarks/bench_compose.py                      # the tiny model of the tests
    .venv/bin/python benchmarks/bench_compose.py --smollm2            # SmolLM2-135M-Instruct (slower)

Both loads have --rows requests in flight, each generating --tokens tokens (end of turn ignored, so
both do the same decode work), the description -> modulation cache warm (steady serving):

    single     a mixed batch: a quarter of the rows plain (base model), the others one description each
    combined   the same rows, but the described ones carry two or three descriptions with weights
               (``description`` lists: their rows summed once at admission, ``compose.weighted``)

Prints the tokens/s of each (the two take turns in alternating order: other jobs share the machine),
by the wall clock and by the process's CPU time (less sensitive to other jobs on a shared machine),
the ratio combined / single (the median of the paired ratios; the target is >= 0.95, within 5 %), and
the time of forming one batch's modulation rows at admission (once per request, never per token).
Only the ratios mean something.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import PROMPTS  # noqa: E402  (also sets the offline hub variables)


def build(smollm2: bool, tmp: Path):
    """A perturbed diag ZhyperModel: over SmolLM2-135M-Instruct, or over the tests' tiny Llama."""
    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.testing import perturb, small_config, tiny_chat_base

    if smollm2:
        model = ZhyperModel.from_base("smollm2", ZhyperConfig(mode="diag", rank=8,
                                                               target_modules=["q_proj", "v_proj"]))
        return perturb(model, scale=0.05).eval()
    base = tiny_chat_base(tmp / "base")
    return perturb(ZhyperModel.from_base(str(base), small_config()), scale=0.3).eval()


def loads(rows: int) -> tuple[list, list, list]:
    """(prompts, single-context descriptions, combined descriptions + weights) of one mixed batch."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(rows)]
    single, combined = [], []
    for i in range(rows):
        if i % 4 == 3:  # plain rows, the same in both loads
            single.append(None)
            combined.append((None, None))
            continue
        d = [f"Answer in the style number {i + k}, with care." for k in range(3)]
        single.append(d[0])
        combined.append(([d[0], d[1]], [0.7, 0.6]) if i % 2 else (d, None))
    return prompts, single, combined


def paired(fns: dict, reps: int) -> dict:
    """Per clock (wall, and the process's CPU time: what the work costs, whatever else the machine runs):
    the median time of each callable and the median over repetitions of the second's speed over the
    first's; the two take turns in alternating order (ABBA...) after one warm-up call each."""
    import statistics

    (ka, fa), (kb, fb) = fns.items()
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {c: {ka: [], kb: []} for c in clocks}
    fa(), fb()
    for rep in range(reps):
        for k, fn in ((ka, fa), (kb, fb)) if rep % 2 == 0 else ((kb, fb), (ka, fa)):
            start = {c: clock() for c, clock in clocks.items()}
            fn()
            for c, clock in clocks.items():
                times[c][k].append(clock() - start[c])
    return {c: ({k: statistics.median(v) for k, v in t.items()},
                statistics.median(a / b for a, b in zip(t[ka], t[kb]))) for c, t in times.items()}


def admission_cost(engine, prompts, single, combined, reps: int = 50) -> dict:
    """Median seconds of forming the modulation rows of one admitted batch (warm cache), per load."""
    import statistics

    from zhyper.serving.engine import Request, SamplingParams

    sp = SamplingParams(max_tokens=1)
    batches = {"single": [Request([1], d, sp, lambda e: None) for d in single],
               "combined": [Request([1], None if d is None else tuple(d), sp, lambda e: None,
                                    weights=None if w is None else tuple(w)) for d, w in combined]}
    out = {}
    for name, requests in batches.items():
        engine._modulation_rows(requests)  # warm
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            engine._modulation_rows(requests)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct instead of the tiny test model")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning threads on a shared machine)")
    args = ap.parse_args()
    import torch

    from zhyper.serving.engine import Engine

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = build(args.smollm2, Path(tmp))
        engine = Engine(model, max_batch=args.rows, max_queue=4 * args.rows, cache_size=8 * args.rows).start()
        prompts, single, combined = loads(args.rows)

        def run(descriptions, weights=None):
            out = engine.generate(prompts, descriptions, weights=weights, max_tokens=args.tokens, ignore_eos=True)
            assert all(o["usage"]["completion_tokens"] == args.tokens for o in out)

        fns = {"single": lambda: run(single),
               "combined": lambda: run([d for d, _ in combined], [w for _, w in combined])}
        t0 = time.perf_counter()
        result = paired(fns, args.reps)
        admit = admission_cost(engine, prompts, single, combined)
        engine.stop()
    name = "SmolLM2-135M-Instruct" if args.smollm2 else "tiny test Llama (2 layers, hidden 32)"
    print(f"{name}: {args.rows} rows x {args.tokens} tokens, {args.reps} repetitions in alternating order "
          f"({time.perf_counter() - t0:.0f} s in all)")
    for clock, (t, ratio) in result.items():
        tps = {k: args.rows * args.tokens / v for k, v in t.items()}
        print(f"{clock:4s} clock: single contexts {tps['single']:8.1f} tok/s, combined contexts "
              f"{tps['combined']:8.1f} tok/s (medians); ratio combined / single {ratio:.3f} (median of the "
              "paired ratios; target >= 0.95)")
    print(f"modulation rows of one admitted batch: single {admit['single'] * 1e3:.2f} ms, combined "
          f"{admit['combined'] * 1e3:.2f} ms (once per request, never per token)")


if __name__ == "__main__":
    main()
