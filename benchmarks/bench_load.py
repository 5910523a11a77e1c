"""HTTP load test: the real server (uvicorn on a free loopback port) under increasing concurrency, with the
official ``openai`` async client, streaming (time to first token), optional chaos, and HTTP over the library.

    .venv/bin/python benchmarks/bench_load.py                                   # tiny checkpoint, 1..128 clients
    .venv/bin/python benchmarks/bench_load.py --levels 1 8 32 --requests 64 --max-tokens 8 --chaos 0.1
    .venv/bin/python benchmarks/bench_load.py --checkpoint runs/main/final        # a real checkpoint

1. Load: at each level c, c clients share --requests requests (at least one each; no new request after
   --time-limit s), each streamed with ``stream_options.include_usage``. Per level: TTFT and request
   latency p50 / p99 of the well-formed requests, tokens/s (completion tokens of 200 answers over the
   level's wall time), answers by HTTP status (5xx of well-formed and of chaos requests apart), and the
   server's own ``/metrics`` over the level (parsed with prometheus-client's parser): queue wait (mean,
   and the histogram bucket holding the p99) and decode batch size (mean).
2. Chaos (``--chaos 0.1``): that share of the requests is malformed or extreme (a bad type, a huge
   max_tokens, temperature 1e-45, an over-long description, an unknown context, empty messages, a
   boolean temperature). The well-formed ones are greedy over --distinct (prompt, description) pairs
   whose answers are first computed one at a time; the run reports every well-formed answer that is
   not 200 with the same text, and every 5xx.
3. HTTP over the library: c requests (distinct descriptions, short answers, end of turn ignored) over
   HTTP against the same c requests through ``Engine.generate`` on the same engine, in alternating
   order (ABBA), --reps times: the median of the paired ratios, a bootstrap 95 % interval of that
   median, and min / max.

Writes ``load.md`` (the tables) and ``load.png`` (the plot) to --out. Everything runs on 127.0.0.1 and
every loop is bounded. Only ratios and relative figures of one run mean something: nothing here is a
pass/fail on an absolute time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import PROMPTS  # noqa: E402  (also sets the offline hub variables)
CHAOS = ("bad_type", "huge_max_tokens", "tiny_temperature", "long_description", "unknown_context",
         "empty_messages", "bool_temperature")


# ----------------------------------------------------------------------------------------- requests
def well_formed(j: int, tokens: int, model: str = "zhyper") -> dict:
    """The j-th (prompt, description) pair as chat.completions.create kwargs: greedy, end of turn ignored."""
    return dict(model=model, messages=[{"role": "user", "content": PROMPTS[j % len(PROMPTS)]}], max_tokens=tokens,
                temperature=0, extra_body={"description": f"Answer in the style number {j}, with care.",
                                           "ignore_eos": True})


def chaotic(kind: str, tokens: int, model: str = "zhyper") -> dict:
    """A malformed or extreme request of ``kind`` (sent with the official client; ``extra_body`` overrides)."""
    body = well_formed(0, tokens, model)
    if kind == "bad_type":
        body["extra_body"] = {**body["extra_body"], "max_tokens": "many"}
    elif kind == "huge_max_tokens":
        body["max_tokens"] = 10 ** 9
    elif kind == "tiny_temperature":
        body["temperature"] = 1e-45
    elif kind == "long_description":
        body["extra_body"] = {**body["extra_body"], "description": "Answer at length. " * 400}
    elif kind == "unknown_context":
        body["model"], body["extra_body"] = f"{model}:no-such-context", {"ignore_eos": True}
    elif kind == "empty_messages":
        body["messages"] = []
    elif kind == "bool_temperature":
        body["extra_body"] = {**body["extra_body"], "temperature": True}
    else:
        raise ValueError(f"unknown chaos kind {kind!r}")
    return body


def plan(n: int, chaos: float, distinct: int, seed: int) -> list[tuple[str, int]]:
    """n requests: ("ok", pair index) or (chaos kind, 0); the share ``chaos`` chaotic, seeded."""
    rng = random.Random(seed)
    return [(rng.choice(CHAOS), 0) if rng.random() < chaos else ("ok", i % distinct) for i in range(n)]


async def streamed(client, body: dict) -> dict:
    """One streamed request: status (0: connection, -1: error event mid-stream), TTFT, latency, text, tokens."""
    import openai

    t0, first, parts, tokens, status = time.perf_counter(), None, [], None, 200
    try:
        stream = await client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **body)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except openai.APIStatusError as err:
        status = err.status_code
    except (openai.APIConnectionError, openai.APITimeoutError):
        status = 0
    except openai.APIError:
        status = -1
    end = time.perf_counter()
    return {"status": status, "ttft": None if first is None else first - t0, "latency": end - t0,
            "text": "".join(parts), "tokens": tokens if tokens is not None else len(parts)}


# ----------------------------------------------------------------------------------------- load levels
async def drive(client, bodies: list[dict], clients: int, time_limit: float) -> tuple[list, float]:
    """``clients`` workers take the next body until none is left or ``time_limit`` s have passed."""
    results, nxt = [None] * len(bodies), iter(range(len(bodies)))
    t0 = time.perf_counter()

    async def worker():
        for i in nxt:
            if time.perf_counter() - t0 > time_limit:
                return
            results[i] = await streamed(client, bodies[i])

    await asyncio.gather(*(worker() for _ in range(clients)))
    return results, time.perf_counter() - t0


def pct(xs: list, q: float) -> float:
    """The q-quantile (nearest rank) of xs, NaN when empty."""
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def summarise(c: int, kinds: list, results: list, wall: float, reference: dict | None) -> dict:
    """One level's row: latency quantiles, tokens/s, statuses, 5xx split, wrong answers."""
    done = [(k, r) for k, r in zip(kinds, results) if r is not None]
    ok = [r for (kind, _), r in done if kind == "ok"]
    good = [r for r in ok if r["status"] == 200]
    wrong = 0
    if reference is not None:
        wrong = sum(r["status"] != 200 or r["text"] != reference[j] for (kind, j), r in done if kind == "ok")
    return {"clients": c, "sent": len(done), "skipped": len(results) - len(done), "wall_s": wall,
            "ttft_p50": pct([r["ttft"] for r in good], 0.5), "ttft_p99": pct([r["ttft"] for r in good], 0.99),
            "lat_p50": pct([r["latency"] for r in good], 0.5), "lat_p99": pct([r["latency"] for r in good], 0.99),
            "tok_s": sum(r["tokens"] for _, r in done if r["status"] == 200) / wall,
            "statuses": dict(sorted(Counter(r["status"] for _, r in done).items())),
            "5xx_well_formed": sum(r["status"] >= 500 or r["status"] <= 0 for r in ok),
            "5xx_chaos": sum(r["status"] >= 500 or r["status"] <= 0 for (kind, _), r in done if kind != "ok"),
            "chaos_sent": len(done) - len(ok), "wrong_answers": wrong,
            "chaos_by_kind": Counter((kind, r["status"]) for (kind, _), r in done if kind != "ok")}


# ----------------------------------------------------------------------------------------- /metrics
def scrape(url: str) -> dict:
    """{(sample name, labels): value} of the server's /metrics, read with prometheus-client's parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def histogram_delta(before: dict, after: dict, name: str) -> tuple[float, float, float]:
    """(count, mean, upper bound of the bucket holding the p99) of histogram ``name`` between two scrapes."""
    def d(key):
        return after.get(key, 0.0) - before.get(key, 0.0)

    count, total = d((f"{name}_count", ())), d((f"{name}_sum", ()))
    buckets = sorted((float(dict(k[1])["le"]), d(k)) for k in after if k[0] == f"{name}_bucket")
    p99 = next((le for le, n in buckets if count and n >= 0.99 * count), float("nan"))
    return count, (total / count if count else float("nan")), p99


def server_side(before: dict, after: dict) -> dict:
    _, wait_mean, wait_p99 = histogram_delta(before, after, "zhyper_queue_wait_seconds")
    steps, batch_mean, _ = histogram_delta(before, after, "zhyper_batch_size")
    hits = after.get(("zhyper_zcache_hits_total", ()), 0) - before.get(("zhyper_zcache_hits_total", ()), 0)
    miss = after.get(("zhyper_zcache_misses_total", ()), 0) - before.get(("zhyper_zcache_misses_total", ()), 0)
    return {"queue_wait_mean": wait_mean, "queue_wait_p99_le": wait_p99, "batch_mean": batch_mean,
            "steps": int(steps), "zcache_hit_rate": hits / (hits + miss) if hits + miss else float("nan")}


# ----------------------------------------------------------------------------------------- HTTP / library
def bootstrap_median(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the median of xs."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def paired_ratios(over_http, library, reps: int) -> list[float]:
    """HTTP time over library time per repetition, in ABBA order, after one warm-up call each."""
    over_http(), library()
    ratios = []
    for rep in range(reps):
        order = (over_http, library) if rep % 2 == 0 else (library, over_http)
        t = {}
        for fn in order:
            t0 = time.perf_counter()
            fn()
            t[fn] = time.perf_counter() - t0
        ratios.append(t[over_http] / t[library])
    return ratios


def http_vs_library(client, loop, engine, clients: int, tokens: int, reps: int) -> dict:
    """The same ``clients`` requests (plain JSON, not streamed) over HTTP and through Engine.generate."""
    bodies = [well_formed(10_000 + k, tokens) for k in range(clients)]
    prompts = [b["messages"][0]["content"] for b in bodies]
    descs = [b["extra_body"]["description"] for b in bodies]

    async def all_http():
        outs = await asyncio.gather(*(client.chat.completions.create(**b) for b in bodies))
        assert all(o.usage.completion_tokens == tokens for o in outs)

    def library():
        outs = engine.generate(prompts, descs, max_tokens=tokens, ignore_eos=True)
        assert all(o["usage"]["completion_tokens"] == tokens for o in outs)

    ratios = paired_ratios(lambda: loop.run_until_complete(all_http()), library, reps)
    lo, hi = bootstrap_median(ratios)
    return {"clients": clients, "tokens": tokens, "reps": reps, "median": statistics.median(ratios),
            "ci_lo": lo, "ci_hi": hi, "min": min(ratios), "max": max(ratios)}


# ----------------------------------------------------------------------------------------- report
def fmt(x: float, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if x != x else f"{x * scale:.{digits}f}"


def markdown(rows: list[dict], ratios: list[dict], opts: dict) -> str:
    head = ("| clients | sent | TTFT p50 / p99 (ms) | latency p50 / p99 (ms) | tok/s | statuses | 5xx well-formed "
            "| 5xx chaos | wrong answers | queue wait mean / p99 ≤ (ms) | batch mean | z-cache hits |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"Options: {opts}", "", head]
    for r in rows:
        statuses = " ".join(f"{k}:{v}" for k, v in r["statuses"].items())
        lines.append(f"| {r['clients']} | {r['sent']} | {fmt(r['ttft_p50'], 1e3, 0)} / {fmt(r['ttft_p99'], 1e3, 0)} "
                     f"| {fmt(r['lat_p50'], 1e3, 0)} / {fmt(r['lat_p99'], 1e3, 0)} | {r['tok_s']:.1f} | {statuses} "
                     f"| {r['5xx_well_formed']} | {r['5xx_chaos']} | {r['wrong_answers']} "
                     f"| {fmt(r['queue_wait_mean'], 1e3, 1)} / {fmt(r['queue_wait_p99_le'], 1e3, 1)} "
                     f"| {fmt(r['batch_mean'], 1, 1)} | {fmt(r['zcache_hit_rate'], 100, 0)} % |")
    if ratios:
        lines += ["", "| clients | tokens | reps | HTTP / library, median | 95 % bootstrap interval | min – max |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['clients']} | {r['tokens']} | {r['reps']} | **{r['median']:.3f}x** | "
                  f"{r['ci_lo']:.3f} – {r['ci_hi']:.3f} | {r['min']:.3f} – {r['max']:.3f} |" for r in ratios]
    chaos = sum((r["chaos_by_kind"] for r in rows), Counter())
    if chaos:
        lines += ["", "| chaos request | answers by status (all levels) |", "|---|---|"]
        lines += [f"| {kind} | " + " ".join(f"{s}:{n}" for (k, s), n in sorted(chaos.items()) if k == kind) + " |"
                  for kind in sorted({k for k, _ in chaos})]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], ratios: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [r["clients"] for r in rows]
    fig, axes = plt.subplots(1, 3 if ratios else 2, figsize=(15 if ratios else 10, 4))
    for key, label, style in (("ttft_p50", "TTFT p50", "o-"), ("ttft_p99", "TTFT p99", "o--"),
                              ("lat_p50", "latency p50", "s-"), ("lat_p99", "latency p99", "s--")):
        axes[0].plot(c, [r[key] for r in rows], style, label=label)
    axes[0].set(xscale="log", xlabel="concurrent clients", ylabel="seconds", title="time to first token, latency")
    axes[0].legend()
    axes[1].plot(c, [r["tok_s"] for r in rows], "o-")
    axes[1].set(xscale="log", xlabel="concurrent clients", ylabel="tokens/s", title="throughput (200 answers)")
    if ratios:
        for tokens in sorted({r["tokens"] for r in ratios}):
            rs = [r for r in ratios if r["tokens"] == tokens]
            axes[2].errorbar([r["clients"] for r in rs], [r["median"] for r in rs],
                             yerr=[[r["median"] - r["ci_lo"] for r in rs], [r["ci_hi"] - r["median"] for r in rs]],
                             fmt="o-", capsize=4, label=f"{tokens} tokens")
        axes[2].axhline(1.05, color="grey", ls=":", label="1.05 (target)")
        axes[2].set(xscale="log", xlabel="concurrent clients", ylabel="HTTP / library", title="HTTP over library")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main
def start(args, tmp: Path):
    """(server, engine) over --checkpoint, or over a tiny checkpoint built as the serving tests build it."""
    from zhyper.serving.app import BackgroundServer, build_app

    checkpoint = args.checkpoint
    if checkpoint is None:
        from zhyper.testing import make_checkpoint

        checkpoint = make_checkpoint(tmp)
    app, engine = build_app(checkpoint, max_batch=args.max_batch, max_queue=args.max_queue,
                            cache_size=max(1024, 4 * args.distinct), admit_window=args.admit_window_ms / 1000,
                            prefill_tokens=args.prefill_tokens)
    return BackgroundServer(app), engine


def run_levels(args, server, client, loop) -> list[dict]:
    reference = None
    if args.chaos > 0:  # each well-formed pair alone, one at a time
        reference = {}
        for j in range(args.distinct):
            r = loop.run_until_complete(streamed(client, well_formed(j, args.max_tokens)))
            assert r["status"] == 200, f"pair {j} alone answered {r['status']}"
            reference[j] = r["text"]
        print(f"reference answers of {args.distinct} pairs computed one at a time", flush=True)
    rows = []
    for level, c in enumerate(args.levels):
        kinds = plan(max(args.requests, c), args.chaos, args.distinct, args.seed + level)
        bodies = [well_formed(j, args.max_tokens) if k == "ok" else chaotic(k, args.max_tokens) for k, j in kinds]
        before = scrape(server.url)
        results, wall = loop.run_until_complete(drive(client, bodies, c, args.time_limit))
        row = {**summarise(c, kinds, results, wall, reference), **server_side(before, scrape(server.url))}
        rows.append(row)
        print(f"clients {c:4d}: {row['sent']} sent in {wall:.1f} s, TTFT p50 {fmt(row['ttft_p50'], 1e3, 0)} ms "
              f"p99 {fmt(row['ttft_p99'], 1e3, 0)} ms, latency p50 {fmt(row['lat_p50'], 1e3, 0)} ms p99 "
              f"{fmt(row['lat_p99'], 1e3, 0)} ms, {row['tok_s']:.1f} tok/s, statuses {row['statuses']}, 5xx "
              f"well-formed {row['5xx_well_formed']} / chaos {row['5xx_chaos']}, wrong answers "
              f"{row['wrong_answers']}, batch mean {fmt(row['batch_mean'], 1, 1)}", flush=True)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a zhyper checkpoint folder (default: a tiny one built here)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64, 128], help="concurrent clients")
    p.add_argument("--requests", type=int, default=128, help="requests per level (at least one per client)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per well-formed answer")
    p.add_argument("--time-limit", type=float, default=120.0, help="s per level after which no request starts")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--admit-window-ms", type=float, default=5.0)
    p.add_argument("--prefill-tokens", type=int, default=None, help="the engine's prefill piece size (default: none)")
    p.add_argument("--chaos", type=float, default=0.0, help="share of malformed or extreme requests")
    p.add_argument("--distinct", type=int, default=16, help="distinct (prompt, description) pairs")
    p.add_argument("--ratio-clients", type=int, nargs="*", default=[8, 32, 64], help="empty: skip part 3")
    p.add_argument("--ratio-tokens", type=int, nargs="+", default=[8, 16])
    p.add_argument("--reps", type=int, default=5, help="repetitions of each HTTP / library pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_load")
    args = p.parse_args(argv)
    if not 0 <= args.chaos <= 1 or min(args.levels) < 1 or args.requests < 1 or args.distinct < 1:
        p.error("--chaos in [0, 1]; --levels, --requests, --distinct >= 1")
    return args


def main(argv=None) -> dict:
    import openai
    import torch

    args = parse_args(argv)
    opts = {k: v for k, v in vars(args).items() if k not in ("out", "checkpoint")}
    print(f"torch threads {torch.get_num_threads()}; {opts}", flush=True)
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        server, engine = start(args, Path(tmp))
        try:
            client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600)
            loop.run_until_complete(streamed(client, well_formed(0, args.max_tokens)))  # warm-up
            rows = run_levels(args, server, client, loop)
            ratios = []
            for tokens in args.ratio_tokens if args.ratio_clients else []:
                for c in args.ratio_clients:
                    ratios.append(http_vs_library(client, loop, engine, c, tokens, args.reps))
                    r = ratios[-1]
                    print(f"HTTP / library, {c} clients x {tokens} tokens: median {r['median']:.3f}x (95 % "
                          f"{r['ci_lo']:.3f}-{r['ci_hi']:.3f}, min {r['min']:.3f} max {r['max']:.3f})", flush=True)
            loop.run_until_complete(client.close())
        finally:
            server.close()
            loop.close()
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, ratios, opts)
    (args.out / "load.md").write_text(text)
    plot(rows, ratios, args.out / "load.png")
    if args.chaos > 0:
        ok = sum(r["sent"] - r["chaos_sent"] for r in rows)
        print(f"chaos: {ok} well-formed requests, {sum(r['wrong_answers'] for r in rows)} not 200 with the answer "
              f"they get alone, {sum(r['5xx_well_formed'] for r in rows)} 5xx; chaos requests "
              f"{sum(r['chaos_sent'] for r in rows)}, {sum(r['5xx_chaos'] for r in rows)} 5xx")
    print("\n" + text + f"\nwrote {args.out / 'load.md'} and {args.out / 'load.png'}")
    return {"levels": rows, "ratios": ratios}


if __name__ == "__main__":
    main()
