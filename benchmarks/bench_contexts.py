"""Thousands of contexts in one batch: 64, 256 and 1,024 distinct descriptions in flight through the engine,
against the plain base model and PEFT's mixed-adapter batch, in one process.

    .venv/bin/python benchmarks/bench_contexts.py                        # the tiny model of the tests
    .venv/bin/python benchmarks/bench_contexts.py --smollm2              # SmolLM2-135M-Instruct (slow on a CPU)
    .venv/bin/python benchmarks/bench_contexts.py --sizes 64 256 --tokens 8 --reps 1

For each n (every request generating --tokens tokens, end of turn ignored, so every peer does the same
decode work; the engine's max_batch is the largest n, so all n rows decode together):

    zhyper/n   n requests, n distinct descriptions, through ``Engine.generate``; the first pass runs with a
               cold modulation cache (the sentence encoder and the hypernetwork run for every description,
               its time is reported apart), the timed passes with a warm one (steady serving)
    base       the plain base model, one HF ``generate`` batch of the same prompts        ratio vs base
               (the median of the paired per-repetition ratios, as bench_engine.py computes it; the
               benchmark of record for the engine against the plain model is bench_engine.py)
    peft/n     PEFT's mixed-adapter batch, as bench_serve.py measures it: ``export_peft`` per description,
               ``load_adapter`` each into one PeftModel, ``generate(adapter_names=[...])``   ratio vs PEFT

PEFT's adapters are loaded incrementally up to each n under a budget (--peft-budget-s of exporting and
loading in all, --peft-max-rss-gb of process memory): past it, the table says where PEFT stopped (how
many adapters it held, after how long, at what memory) and PEFT is not run at that n or beyond. A
failure of PEFT's generate (out of memory, ...) is reported the same way.

Also reported: the z-cache hit rate of the cold pass and of the timed passes, and the process's peak
resident memory (psutil, sampled every 10 ms) during the zhyper runs and during PEFT's loading. Times are
medians of interleaved repetitions (other jobs share the machine): only the ratios of one run mean
something, nothing is a pass/fail on an absolute time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

GIB = 1024 ** 3


class PeakRSS:
    """The process's peak resident memory (bytes) while the block runs, sampled by a thread (psutil)."""

    def __init__(self, every: float = 0.01):
        import psutil

        self.proc, self.every, self.peak, self.start = psutil.Process(), every, 0, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def build(smollm2: bool, tmp: Path, targets: tuple[str, ...] = ("q_proj", "v_proj")):
    """(perturbed diag ZhyperModel, the base model's HF folder or name); ``targets``: SmolLM2's adapted modules."""
    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.base_model import smollm2_path
    from zhyper.testing import perturb, small_config, tiny_chat_base

    if smollm2:
        model = ZhyperModel.from_base("smollm2", ZhyperConfig(mode="diag", rank=8, target_modules=list(targets)))
        return perturb(model, scale=0.05).eval(), smollm2_path()
    base = tiny_chat_base(tmp / "base")
    return perturb(ZhyperModel.from_base(str(base), small_config()), scale=0.3).eval(), str(base)


class PeftPeer:
    """One PeftModel holding the adapters of descriptions[:k], grown on demand under a time and memory budget."""

    def __init__(self, model, base_path: str, all_desc: list[str], tmp: Path, budget_s: float, max_rss_gb: float):
        self.model, self.base_path, self.all_desc, self.tmp = model, base_path, all_desc, tmp
        self.budget_s, self.max_rss = budget_s, max_rss_gb * GIB
        self.peft, self.loaded, self.spent, self.failed, self.peak = None, 0, 0.0, None, 0

    def _add(self, i: int) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        folder = str(self.model.export_peft(self.all_desc[i], self.tmp / f"adapter{i}"))
        if self.peft is None:
            base = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=torch.float32)
            self.peft = PeftModel.from_pretrained(base, folder, adapter_name="a0").eval()
        else:
            self.peft.load_adapter(folder, adapter_name=f"a{i}")
        self.loaded = i + 1

    def grow(self, n: int) -> bool:
        """Hold n adapters (True), or stop at the budget and record where (False)."""
        with PeakRSS() as mem:
            while self.failed is None and self.loaded < n:
                t0 = time.perf_counter()
                try:
                    self._add(self.loaded)
                except (MemoryError, RuntimeError, OSError) as err:
                    self.failed = f"loading adapter {self.loaded + 1}: {type(err).__name__}: {err}"[:200]
                self.spent += time.perf_counter() - t0
                if self.failed is None and self.spent > self.budget_s and self.loaded < n:
                    self.failed = f"time budget {self.budget_s:g} s spent"
                if self.failed is None and mem.proc.memory_info().rss > self.max_rss and self.loaded < n:
                    self.failed = f"memory budget {self.max_rss / GIB:g} GiB reached"
        self.peak = max(self.peak, mem.peak)
        return self.failed is None

    def where(self) -> str:
        return (f"stopped at {self.loaded} adapters after {self.spent:.1f} s, peak RSS {self.peak / GIB:.2f} GiB "
                f"({self.failed})")


def left_padded(tok, ps: list[str], ds: list[str]):
    from zhyper.generation import format_prompts

    side, tok.padding_side = tok.padding_side, "left"
    try:
        return tok(format_prompts(tok, ps, ds), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side


def peers(engine, base, peft: PeftPeer, n: int, tokens: int) -> dict:
    """The callables timed at n: zhyper/n, base, and peft/n when PEFT holds n adapters."""
    import torch

    from _serving import descriptions, prompts

    ps, ds = prompts(n), descriptions(n)
    batch = left_padded(engine.tokenizer, ps, ds)
    hf = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=engine.pad_id)

    def run_zhyper():
        out = engine.generate(ps, ds, max_tokens=tokens, ignore_eos=True)
        assert all(o["usage"]["completion_tokens"] == tokens for o in out)

    def run_base():
        with torch.inference_mode():
            base.generate(**batch, **hf)

    def run_peft():
        with torch.inference_mode():
            peft.peft.generate(**batch, adapter_names=[f"a{i}" for i in range(n)], **hf)

    fns = {"zhyper_n": run_zhyper, "base": run_base}
    if peft.grow(n):
        fns["peft_n"] = run_peft
    return fns


def hit_rate(cache, before: tuple[int, int]) -> float:
    hits, misses = cache.hits - before[0], cache.misses - before[1]
    return hits / (hits + misses) if hits + misses else float("nan")


def measure(engine, base, peft: PeftPeer, n: int, tokens: int, reps: int) -> dict:
    """One size: the cold pass, then the interleaved timed passes (PEFT dropped if its generate fails)."""
    import statistics

    from _timing import interleaved, paired_ratio

    fns = peers(engine, base, peft, n, tokens)
    with engine.cache._lock:  # a cold modulation cache (the encoder's own embedding cache may stay warm)
        engine.cache._lru.clear()
    c0 = (engine.cache.hits, engine.cache.misses)
    t0 = time.perf_counter()
    with PeakRSS() as cold_mem:
        fns["zhyper_n"]()
    cold_s, cold_hits = time.perf_counter() - t0, hit_rate(engine.cache, c0)
    if "peft_n" in fns:
        try:
            with PeakRSS() as mem:
                fns["peft_n"]()  # a first call alone: a failure is reported, the other peers still timed
            peft.peak = max(peft.peak, mem.peak)
        except (MemoryError, RuntimeError) as err:
            peft.failed = f"generate with {n} adapters: {type(err).__name__}: {err}"[:200]
            del fns["peft_n"]
    c1 = (engine.cache.hits, engine.cache.misses)
    with PeakRSS() as mem:
        times = interleaved(fns, reps)
    tps = {k: n * tokens / statistics.median(v) for k, v in times.items()}
    return {"n": n, "zhyper_tok_s": tps["zhyper_n"], "base_tok_s": tps["base"], "peft_tok_s": tps.get("peft_n"),
            "vs_base": paired_ratio(times, "base", "zhyper_n")[0],
            "vs_peft": tps["zhyper_n"] / tps["peft_n"] if "peft_n" in tps else None,
            "peft": None if "peft_n" in tps else peft.where(), "cold_s": cold_s, "cold_hit_rate": cold_hits,
            "warm_hit_rate": hit_rate(engine.cache, c1), "peak_rss_gib": max(mem.peak, cold_mem.peak) / GIB,
            "peft_peak_rss_gib": peft.peak / GIB if peft.loaded else None}


def row_line(r: dict) -> str:
    peft = (f"{r['peft_tok_s']:.1f} | **{r['vs_peft']:.2f}x**" if r["vs_peft"] is not None
            else f"not run: {r['peft']} | -")
    pm = "-" if r["peft_peak_rss_gib"] is None else f"{r['peft_peak_rss_gib']:.2f}"
    return (f"| {r['n']} | {r['zhyper_tok_s']:.1f} | {r['base_tok_s']:.1f} | **{r['vs_base']:.3f}x** | {peft} "
            f"| {r['cold_s']:.2f} | {100 * r['cold_hit_rate']:.0f} % / {100 * r['warm_hit_rate']:.0f} % "
            f"| {r['peak_rss_gib']:.2f} | {pm} |")


def markdown(rows: list[dict], opts: dict) -> str:
    head = ("| n descriptions | zhyper tok/s | base tok/s | vs base | PEFT mixed batch tok/s | vs PEFT "
            "| cold pass (s) | z-cache hits cold / warm | peak RSS (GiB) | PEFT peak RSS (GiB) |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([f"Options: {opts}", "", head, *map(row_line, rows)]) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct instead of the tiny model")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="distinct descriptions in flight")
    p.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    p.add_argument("--targets", default="q_proj,v_proj",
                   help="--smollm2: the adapted modules, comma-separated (the IFEval recipe: q_proj,k_proj,v_proj,o_proj)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions")
    p.add_argument("--peft-budget-s", type=float, default=300.0, help="most seconds exporting + loading adapters")
    p.add_argument("--peft-max-rss-gb", type=float, default=16.0, help="process memory at which PEFT stops")
    p.add_argument("--out", type=Path, help="also write the table to this folder (contexts.md)")
    args = p.parse_args(argv)
    if min(args.sizes) < 1 or args.tokens < 1 or args.reps < 1:
        p.error("--sizes, --tokens, --reps: >= 1")
    return args


def main(argv=None) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from _serving import descriptions
    from zhyper.serving.engine import Engine

    args = parse_args(argv)
    opts = {k: v for k, v in vars(args).items() if k != "out"}
    print(f"torch threads {torch.get_num_threads()}; {opts}", flush=True)
    sizes, rows = sorted(args.sizes), []
    with tempfile.TemporaryDirectory() as tmp:
        model, base_path = build(args.smollm2, Path(tmp), tuple(args.targets.split(",")))
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
        engine = Engine(model, max_batch=sizes[-1], max_queue=sizes[-1], cache_size=2 * sizes[-1]).start()
        peft = PeftPeer(model, base_path, descriptions(sizes[-1]), Path(tmp), args.peft_budget_s,
                        args.peft_max_rss_gb)
        try:
            for n in sizes:
                rows.append(measure(engine, base, peft, n, args.tokens, args.reps))
                print(row_line(rows[-1]), flush=True)
        finally:
            engine.stop()
    text = markdown(rows, opts)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "contexts.md").write_text(text)
    print("\n" + text)
    return rows


if __name__ == "__main__":
    main()
