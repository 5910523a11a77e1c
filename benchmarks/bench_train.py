"""Train-step speed and memory of Zhyper against a PEFT LoRA on the same DeepSpeed engine config.

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--seq 128] [--micro 4]

SmolLM2-135M-Instruct, two CPU processes (gloo), diag r 8 on q_proj/v_proj vs PEFT LoRA r 8
on the same modules, same batch and sequence length. Launches (each a real
`deepspeed --num_gpus 2` run of this file in worker mode):
  1. both models in one process pair, ZeRO-3, steps interleaved -> step-time ratio;
  2. Zhyper alone, ZeRO-3 -> peak RSS per rank, tokens/s;
  3. PEFT alone, ZeRO-3 -> peak RSS per rank;
  4. Zhyper alone, ZeRO-0 -> the ZeRO-3 / ZeRO-0 step-time ratio (separate processes: noisier).
Targets: Zhyper/PEFT step time <= 1.15, peak memory per rank <= 1.10.

On a GPU (benchmarks/gpu_check.sh): ``--gpus 1 --zero3-config launch/configs/zero3_bf16.json`` runs
the same launches with NCCL on one device and reports the peak device memory
(``torch.cuda.max_memory_allocated``) instead of the peak RSS; ``--checkpointing`` turns on gradient
checkpointing in both models (zhyper.layers.checkpointing for Zhyper, HF's for PEFT).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def _build(variant: str, ds: dict, tokenizer_path: str, checkpointing: bool = False):
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    zero3 = ds["zero_optimization"]["stage"] == 3
    keep = None
    if zero3:
        from transformers.integrations import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(ds)
    dtype = torch.bfloat16 if ds.get("bf16", {}).get("enabled") else torch.float32
    base = AutoModelForCausalLM.from_pretrained(tokenizer_path, dtype=dtype)
    if variant == "zhyper":
        from zhyper import ZhyperConfig, ZhyperModel

        model = ZhyperModel.from_base(base, ZhyperConfig(mode="diag", rank=8, alpha=16.0,
                                                         target_modules=["q_proj", "v_proj"]))
        if checkpointing:
            from zhyper.layers.checkpointing import enable_gradient_checkpointing

            enable_gradient_checkpointing(model)
    else:
        from peft import LoraConfig, get_peft_model

        base.requires_grad_(False)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                lora_dropout=0.0))
        if checkpointing:
            model.get_base_model().activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=ds)
    del keep
    return engine


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from zhyper.base_model import smollm2_path
    from zhyper.training.session import init_distributed, peak_rss_bytes

    cuda = torch.cuda.is_available()
    init_distributed()
    rank = dist.get_rank()
    ds = json.loads(Path(args.ds_config).read_text())
    ds.update(train_micro_batch_size_per_gpu=args.micro, gradient_accumulation_steps=1,
              train_batch_size=args.micro * dist.get_world_size())
    ds.pop("scheduler", None)
    rss0 = _rss_mb()
    path = str(smollm2_path())
    engines = {v: _build(v, ds, path, args.checkpointing) for v in args.variants.split(",")}
    device = next(iter(engines.values())).device
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(0, 49152, (args.micro, args.seq), generator=g).to(device)
    labels = ids.clone()
    emb = torch.randn(args.micro, 384, generator=g).to(device)
    times = {v: [] for v in engines}

    def step(v):
        eng = engines[v]
        kwargs = {"context_embeddings": emb} if v == "zhyper" else {}
        dist.barrier()
        t = time.perf_counter()
        out = eng(input_ids=ids, labels=labels, **kwargs)
        eng.backward(out.loss)
        eng.step()
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        return time.perf_counter() - t

    for v in engines:  # warm-up
        step(v)
    for _ in range(args.steps):
        for v in engines:  # interleaved rounds: machine noise hits every variant alike
            times[v].append(step(v))
    # the peak device memory on a GPU (what limits it there), the peak RSS on the CPU
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else peak_rss_bytes() / 2**20)
    result = {"rank": rank, "median_s": {v: sorted(t)[len(t) // 2] for v, t in times.items()}, "cuda": cuda,
              "peak_rss_mb": peak, "baseline_rss_mb": 0.0 if cuda else rss0,
              "tokens_per_step_per_rank": args.micro * args.seq}
    Path(args.out).with_suffix(f".rank{rank}.json").write_text(json.dumps(result))


def launch(variants: str, ds: str, args, tmp: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / f"{variants.replace(',', '_')}_{Path(ds).stem}"
    cmd = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", str(args.gpus), "--master_port", str(port),
           __file__, "--worker", "--variants", variants, "--ds_config", ds, "--out", str(out),
           "--steps", str(args.steps), "--seq", str(args.seq), "--micro", str(args.micro)] \
        + (["--checkpointing"] if args.checkpointing else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [json.loads(out.with_suffix(f".rank{r}.json").read_text()) for r in range(args.gpus)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variants", default="zhyper,peft", help=argparse.SUPPRESS)
    p.add_argument("--ds_config", default=str(REPO / "launch/configs/zero3.json"), help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    p.add_argument("--seq", type=int, default=128, help="sequence length")
    p.add_argument("--micro", type=int, default=4, help="micro-batch per rank")
    p.add_argument("--gpus", type=int, default=2, help="ranks (the launcher's --num_gpus; CPU processes without CUDA)")
    p.add_argument("--zero3-config", default=str(REPO / "launch/configs/zero3.json"), help="ZeRO-3 DeepSpeed JSON")
    p.add_argument("--zero0-config", default=str(REPO / "launch/configs/zero0.json"), help="ZeRO-0 DeepSpeed JSON")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in both models")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    z3, z0 = args.zero3_config, args.zero0_config
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        both = launch("zhyper,peft", z3, args, tmp)
        zh = launch("zhyper", z3, args, tmp)
        pf = launch("peft", z3, args, tmp)
        z0run = launch("zhyper", z0, args, tmp)
    ratio = max(r["median_s"]["zhyper"] / r["median_s"]["peft"] for r in both)
    t_zh = max(r["median_s"]["zhyper"] for r in zh)
    mem_ratio = max(r["peak_rss_mb"] for r in zh) / max(r["peak_rss_mb"] for r in pf)
    mem_delta = (max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in zh)
                 / max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in pf))
    tokens = sum(r["tokens_per_step_per_rank"] for r in zh)
    cuda = zh[0].get("cuda", False)
    mem = "peak device memory" if cuda else "peak RSS"
    print(f"SmolLM2-135M, {args.gpus} rank(s) on {'CUDA' if cuda else 'CPU'}, micro-batch {args.micro}/rank, seq "
          f"{args.seq}, {Path(z3).name}, checkpointing {'on' if args.checkpointing else 'off'}, "
          f"{args.steps} timed steps")
    print(f"{'metric':<44}{'value':>10}  target")
    print(f"{'step time Zhyper / PEFT (ZeRO-3, interleaved)':<44}{ratio:>10.3f}  <= 1.15")
    print(f"{mem + ' per rank Zhyper / PEFT (ZeRO-3)':<44}{mem_ratio:>10.3f}  <= 1.10")
    print(f"{'  same, above the post-import baseline':<44}{mem_delta:>10.3f}")
    print(f"{mem + ' per rank Zhyper (MB)':<44}{max(r['peak_rss_mb'] for r in zh):>10.0f}")
    print(f"{'tokens/s Zhyper (ZeRO-3, all ranks)':<44}{tokens / t_zh:>10.0f}")
    print(f"{'step time ZeRO-3 / ZeRO-0 (Zhyper)':<44}{t_zh / max(r['median_s']['zhyper'] for r in z0run):>10.3f}")


if __name__ == "__main__":
    main()
