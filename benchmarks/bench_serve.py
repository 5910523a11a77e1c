"""Serving speed: many descriptions in one batch against its peers, in one process, on SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/bench_serve.py            # full: 1/8/32/64 descriptions, 1/8/32 clients
    .venv/bin/python benchmarks/bench_serve.py --quick    # a small check that everything runs

1. Throughput (library, no HTTP): n requests in flight, each generating --tokens tokens (end of turn
   ignored, so every run does the same work), with
     zhyper/n     n distinct descriptions through the engine (one modulation row each; the
                  description -> modulation cache warm, as in steady serving)
     zhyper/1     the same load with one description for all rows           ratio (a)
     peft/n       PEFT's mixed-adapter batch over the n exported adapters     ratio (c)  target >= 3 at n = 64
                  (``export_peft`` each, ``load_adapter``, ``generate(adapter_names=...)``)
   The engine against the plain base model (ratio (b)) is measured by bench_engine.py, the benchmark of
   record for it (paired repetitions, decode-dominated cases); docs/serving.md says why this file's
   earlier base figure and bench_contexts.py's disagreed.
2. Latency over HTTP (loopback, a live uvicorn server, the official ``openai`` async client): c
   concurrent clients, each sending --requests requests with distinct descriptions; p50 / p95.
3. HTTP overhead at the largest client count: wall time of those c concurrent HTTP requests against
   the same c requests through the library call (``Engine.generate``). Target <= 5 %.

Times are medians over interleaved repetitions (other jobs share the machine): only ratios mean
something. Nothing here is a pass/fail on an absolute time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_interleaved  # noqa: E402

from _serving import PROMPTS, descriptions, prompts  # noqa: E402  (also sets the offline hub variables)


def build(tmp: Path):
    import torch

    from zhyper import ZhyperConfig, ZhyperModel

    torch.manual_seed(0)
    model = ZhyperModel.from_base("smollm2", ZhyperConfig(mode="diag", rank=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-trivial adapter: every path runs, descriptions differ
        g = torch.Generator().manual_seed(1)
        for m in model.layout:
            layer = model.base.get_submodule(m.name)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.01)
        for head in model.hypernet.heads.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.05)
    return model.eval()


def throughput(model, sizes, tokens, reps, tmp: Path) -> list[dict]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from zhyper.base_model import smollm2_path
    from zhyper.generation import format_prompts
    from zhyper.serving.engine import Engine

    tok = model.tokenizer
    engine = Engine(model, max_batch=max(sizes), max_queue=4 * max(sizes), cache_size=4 * max(sizes)).start()
    n_max = max(sizes)
    all_desc = descriptions(n_max)
    t0 = time.perf_counter()
    adapter_dirs = [model.export_peft(d, tmp / f"adapter{i}") for i, d in enumerate(all_desc)]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32),
                                     str(adapter_dirs[0]), adapter_name="a0")
    for i, d in enumerate(adapter_dirs[1:], start=1):
        peft.load_adapter(str(d), adapter_name=f"a{i}")
    peft.eval()
    print(f"exported and loaded {n_max} PEFT adapters in {time.perf_counter() - t0:.1f} s")

    rows = []
    for n in sizes:
        ps, ds = prompts(n), all_desc[:n]
        side = tok.padding_side
        tok.padding_side = "left"
        batch = tok(format_prompts(tok, ps, ds), return_tensors="pt", padding=True, add_special_tokens=False)
        tok.padding_side = side
        hf = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)

        def run_zhyper(descs):
            out = engine.generate(ps, descs, max_tokens=tokens, ignore_eos=True)
            assert all(o["usage"]["completion_tokens"] == tokens for o in out)

        def run_peft():
            with torch.inference_mode():
                peft.generate(**batch, adapter_names=[f"a{i}" for i in range(n)], **hf)

        fns = {"zhyper_n": lambda: run_zhyper(ds), "zhyper_1": lambda: run_zhyper([ds[0]] * n),
               "peft_n": run_peft}
        t = median_interleaved(fns, reps)
        tps = {k: n * tokens / v for k, v in t.items()}
        row = {"n": n, **{f"{k}_tok_s": v for k, v in tps.items()},
               "vs_one_description": tps["zhyper_n"] / tps["zhyper_1"],
               "vs_peft": tps["zhyper_n"] / tps["peft_n"]}
        rows.append(row)
        print(f"n={n:3d}  zhyper/n {tps['zhyper_n']:8.1f} tok/s  zhyper/1 {tps['zhyper_1']:8.1f}  "
              f"peft/n {tps['peft_n']:8.1f}   ratios: vs one description "
              f"{row['vs_one_description']:.3f}  vs PEFT {row['vs_peft']:.2f}x",
              flush=True)
    engine.stop()
    return rows


def http_overhead(engine, loop, one, c: int, tokens: int, reps: int) -> dict:
    """The same ``c`` requests (prompts, descriptions, tokens) over HTTP from ``c`` concurrent clients against
    one library call, in turns; the ratio's median and range over the repetitions."""
    from _timing import interleaved, paired_ratio

    ps, ds = [PROMPTS[k % len(PROMPTS)] for k in range(c)], descriptions(c, offset=1000)

    def over_http():
        async def all_():
            await asyncio.gather(*(one(p, d) for p, d in zip(ps, ds)))
        loop.run_until_complete(all_())

    def library():
        engine.generate(ps, ds, max_tokens=tokens, ignore_eos=True)

    times = interleaved({"http": over_http, "library": library}, reps)
    ratio, low, high = paired_ratio(times, "http", "library")
    row = {"clients": c, "http_s": statistics.median(times["http"]), "library_s": statistics.median(times["library"]),
           "overhead": ratio - 1.0, "low": low - 1.0, "high": high - 1.0, "reps": reps}
    print(f"HTTP overhead at {c} clients ({tokens} tokens): HTTP {row['http_s']:.3f} s vs library "
          f"{row['library_s']:.3f} s -> {100 * row['overhead']:+.1f} % (paired, {reps} reps: "
          f"{100 * row['low']:+.1f} .. {100 * row['high']:+.1f} %; target <= +5 %)", flush=True)
    return row


def latency(model, clients_list, requests, tokens, reps, admit_window: float = 0.020) -> tuple[list[dict], list[dict]]:
    import openai

    from zhyper.serving.app import BackgroundServer, create_app
    from zhyper.serving.engine import Engine

    c_max = max(clients_list)
    # admit_window: `zhyper serve`'s default is 20 ms (--admit-window-ms): clients a few ms apart share a prefill
    engine = Engine(model, max_batch=c_max, max_queue=4 * c_max * requests, cache_size=4 * c_max * requests,
                    admit_window=admit_window)
    server = BackgroundServer(create_app(engine, {}))
    rows, overhead = [], []
    try:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600,
                                    http_client=None)

        async def one(prompt, description):
            t = time.perf_counter()
            out = await client.chat.completions.create(
                model="zhyper", messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0,
                extra_body={"description": description, "ignore_eos": True})
            assert out.usage.completion_tokens == tokens
            return time.perf_counter() - t

        async def clients(c, rounds):
            descs = descriptions(c * rounds, offset=1000)

            async def client_loop(k):
                return [await one(PROMPTS[k % len(PROMPTS)], descs[k * rounds + j]) for j in range(rounds)]

            return [x for xs in await asyncio.gather(*(client_loop(k) for k in range(c))) for x in xs]

        loop = asyncio.new_event_loop()
        loop.run_until_complete(clients(c_max, 1))  # warm-up: connections, descriptions' modulations
        for c in clients_list:
            lat = sorted(loop.run_until_complete(clients(c, requests)))
            p50 = statistics.median(lat)
            p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            rows.append({"clients": c, "requests": len(lat), "p50_s": p50, "p95_s": p95})
            print(f"clients={c:3d}  {len(lat):3d} requests  latency p50 {p50:.3f} s  p95 {p95:.3f} s", flush=True)

        overhead = [http_overhead(engine, loop, one, c, tokens, reps) for c in clients_list if c > 1]
        loop.run_until_complete(client.close())
        loop.close()
    finally:
        server.close()
    return rows, overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every part runs")
    parser.add_argument("--sizes", type=int, nargs="+", help="descriptions in flight (default 1 8 32 64)")
    parser.add_argument("--clients", type=int, nargs="+", help="concurrent HTTP clients (default 1 8 32 64)")
    parser.add_argument("--skip-throughput", action="store_true", help="the HTTP latency and overhead only")
    parser.add_argument("--admit-window-ms", type=float, default=20.0, help="the engine's admission window (serve's "
                        "default 20)")
    parser.add_argument("--tokens", type=int, help="tokens generated per request (default 32)")
    parser.add_argument("--requests", type=int, help="requests per client in the latency runs (default 3)")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 3)")
    args = parser.parse_args()
    quick = dict(sizes=[1, 4], clients=[1, 4], tokens=8, requests=1, reps=1)
    full = dict(sizes=[1, 8, 32, 64], clients=[1, 8, 32, 64], tokens=32, requests=3, reps=3)
    opts = {k: getattr(args, k) if getattr(args, k) is not None else (quick if args.quick else full)[k] for k in full}

    import torch

    print(f"torch threads {torch.get_num_threads()}; {opts}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(tmp))
        rows = [] if args.skip_throughput else throughput(model, opts["sizes"], opts["tokens"], opts["reps"],
                                                           Path(tmp))
    lat, overhead = latency(model, opts["clients"], opts["requests"], opts["tokens"], opts["reps"],
                            args.admit_window_ms / 1000)
    http = ", ".join(f"{o['clients']} clients {100 * o['overhead']:+.1f} %" for o in overhead)
    scale = "" if not rows else (
        f"at n={rows[-1]['n']}: {rows[-1]['vs_peft']:.2f}x PEFT's mixed-adapter batch (target >= 3 at n=64), "
        f"{rows[-1]['vs_one_description']:.3f}x one description; ")
    print(f"\nsummary: {scale}HTTP overhead {http} (target <= +5 % at 8, 32, 64)")


if __name__ == "__main__":
    main()
