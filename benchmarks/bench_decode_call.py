"""One layer call at a decode step (one new token per row, no grad), as ratios against peers in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_decode_call.py            # rows 1, 64, 1024
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_decode_call.py --rows 1 --reps 21

SmolLM2-135M's adapted shapes (q_proj 576 -> 576, v_proj 576 -> 192), rank 8, fp32, inside
``torch.inference_mode``; x is (rows, 1, in) as in a decode step. Peers, all with the same W, A, B:

  linear  ``nn.Linear``: what the plain model runs (the limit)
  peft    PEFT's ``lora.Linear`` with one adapter (every row the same context)
  zl      ``ZLinear`` in diag mode with one modulation per row (every row its own context), installed
          as the serving engine installs it (``layer.modulation``)

Each repetition times ``--calls`` calls of every peer, the peers taking turns (ABBA); the table gives each
peer's median µs per call and the median of the paired ratios against ``linear`` and ``peft``. The layer
runs in a loop, so its tensors stay in cache: inside a model they are colder, and each call costs a few
µs more (``bench_engine.py`` measures the whole decode step). Only the ratios mean something.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved  # noqa: E402

SHAPES = {"q_proj": (576, 576), "v_proj": (576, 192)}
RANK = 8


def layers(d_in: int, d_out: int):
    """(nn.Linear, PEFT lora.Linear, ZLinear) over the same W, A, B."""
    from bench_zlinear import ALPHA, peft_linear

    from zhyper.layers.zlinear import ZLinear

    g = torch.Generator().manual_seed(0)
    base = nn.Linear(d_in, d_out, bias=False).requires_grad_(False)
    A = nn.Parameter(torch.randn(RANK, d_in, generator=g) / d_in**0.5)
    B = nn.Parameter(torch.randn(d_out, RANK, generator=g) / RANK**0.5)
    zl = ZLinear.from_linear(base, rank=RANK, alpha=ALPHA)  # shares base's weight
    zl.lora_A, zl.lora_B = A, B
    return base, peft_linear(base.weight, A, B, RANK, torch.float32).eval(), zl.eval()


def case(name: str, rows: int, calls: int, reps: int) -> dict:
    base, peft, zl = layers(*SHAPES[name])
    x = torch.randn(rows, 1, SHAPES[name][0])
    zl.modulation = 1 + 0.1 * torch.randn(rows, RANK)

    def repeat(layer):
        def run():
            for _ in range(calls):
                layer(x)
        return run

    with torch.inference_mode():
        times = interleaved({"linear": repeat(base), "peft": repeat(peft), "zl": repeat(zl)}, reps)
    us = {k: 1e6 * statistics.median(v) / calls for k, v in times.items()}
    ratio = {p: statistics.median(a / b for a, b in zip(times["zl"], times[p])) for p in ("linear", "peft")}
    return {"layer": name, "rows": rows, "us": us, "zl/linear": ratio["linear"], "zl/peft": ratio["peft"]}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--calls", type=int, default=200, help="calls per timed repetition (default 200)")
    p.add_argument("--reps", type=int, default=11, help="paired repetitions (default 11)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| layer | rows | linear µs | peft µs | zl µs | zl extra over linear, µs | zl / linear | zl / peft |\n"
          "|---|---|---|---|---|---|---|---|")
    out = []
    for rows in args.rows:
        for name in SHAPES:
            r = case(name, rows, max(1, args.calls // rows), args.reps)
            u = r["us"]
            print(f"| {name} | {rows} | {u['linear']:.1f} | {u['peft']:.1f} | {u['zl']:.1f} | "
                  f"{u['zl'] - u['linear']:.1f} | {r['zl/linear']:.3f}x | {r['zl/peft']:.3f}x |", flush=True)
            out.append(r)
    return out


if __name__ == "__main__":
    main()
