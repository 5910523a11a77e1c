"""Peak memory and step time of a Zhyper forward + backward with and without gradient checkpointing.

    .venv/bin/python benchmarks/bench_checkpointing.py [--seqs 256 512] [--micro 4] [--steps 2] [--threads 1]

SmolLM2-135M-Instruct (the shipped base, fp32, CPU), diag r 8 on q_proj/v_proj, train mode, a
mixed-context micro-batch (one random description embedding per row), random tokens as labels.
For every sequence length:
  1. a fresh process without checkpointing and one with it (``enable_gradient_checkpointing``):
     peak RSS (VmHWM) over ``--steps`` forward + backward passes, and the RSS after
     the model is built and has run one short no-grad forward (the weights, mapped lazily by
     ``from_pretrained``, are then resident): the baseline the passes add to;
  2. one process running both settings interleaved on the same model (checkpointing toggled between
     steps): the step-time ratio with / without, measured side by side.
Also printed: the activation + logits estimate of ``zhyper plan`` (zhyper.sizing.memory) for the
same micro-batch, next to the measured growth above the baseline.

On a GPU (benchmarks/gpu_check.sh): ``--device cuda --dtype bf16`` measures the peak device memory
(``torch.cuda.max_memory_allocated``) instead of the RSS, with the model in bf16 on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def _model(threads: int, device: str = "cpu", dtype: str = "fp32"):
    import torch
    from transformers import AutoModelForCausalLM

    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.base_model import smollm2_path

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_path()),
                                                dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    cfg = ZhyperConfig(mode="diag", rank=8, alpha=16.0, target_modules=["q_proj", "v_proj"], hyper_dropout=0.0)
    return ZhyperModel.from_base(base.to(device), cfg).train()


def _batch(micro: int, seq: int, device: str = "cpu"):
    import torch

    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, 49152, (micro, seq), generator=g).to(device),
            torch.randn(micro, 384, generator=g).to(device))


def _step(model, ids, emb) -> float:
    from zhyper.training.objective import response_loss_sum

    t = time.perf_counter()
    out = model(input_ids=ids, context_embeddings=emb)
    loss, n = response_loss_sum(out.logits, ids)  # the recipe's loss: summed response-token cross-entropy
    (loss / n).backward()
    model.zero_grad(set_to_none=True)
    if ids.is_cuda:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - t


def worker_memory(args) -> dict:
    import torch

    from zhyper.training.session import peak_rss_bytes

    model = _model(args.threads, args.device, args.dtype)
    if args.checkpointing:
        from zhyper.layers.checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    ids, emb = _batch(args.micro, args.seq, args.device)
    cuda = args.device == "cuda"
    with torch.no_grad():  # page the weights in (from_pretrained maps them lazily): not part of the growth
        model(input_ids=ids[:, :8], context_embeddings=emb)
    baseline = torch.cuda.memory_allocated() if cuda else _rss()
    for _ in range(args.steps):
        _step(model, ids, emb)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    return {"peak": peak, "baseline": baseline}


def worker_time(args) -> dict:
    from zhyper.layers.checkpointing import enable_gradient_checkpointing

    model = _model(args.threads, args.device, args.dtype)
    hf = model.base
    ids, emb = _batch(args.micro, args.seq, args.device)
    times = {"off": [], "on": []}

    def run(setting):
        if setting == "on":
            enable_gradient_checkpointing(model)
        else:
            hf.activation_checkpointing_disable()
        return _step(model, ids, emb)

    run("off"), run("on")  # warm-up
    for _ in range(args.steps):
        for setting in ("off", "on"):  # interleaved: machine noise hits both alike
            times[setting].append(run(setting))
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def _launch(kind: str, seq: int, args, checkpointing: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--seq", str(seq), "--micro", str(args.micro),
           "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype] \
        + (["--checkpointing"] if checkpointing else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _estimate(micro: int, seq: int, c: int = 4) -> tuple[float, float]:
    """zhyper plan's activations + logits for this micro-batch (c bytes per value), off and on."""
    from zhyper.sizing.memory import activation_bytes, logits_bytes, model_sizes
    from zhyper.training.config import load_config

    cfg = load_config(None, ["model.mode=diag", "model.rank=8"])  # base_model smollm2, q/v, MiniLM
    sizes = model_sizes(cfg)
    logits = logits_bytes(sizes, c, micro, seq)
    return (activation_bytes(sizes, c, micro, seq, False) + logits,
            activation_bytes(sizes, c, micro, seq, True) + logits)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=("memory", "time"), help=argparse.SUPPRESS)
    p.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seq", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--seqs", type=int, nargs="+", default=[256, 512], help="sequence lengths")
    p.add_argument("--micro", type=int, default=4, help="micro-batch (sequences)")
    p.add_argument("--steps", type=int, default=2, help="forward + backward passes per measurement")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="the base model's dtype")
    args = p.parse_args()
    if args.worker:
        result = worker_memory(args) if args.worker == "memory" else worker_time(args)
        print(json.dumps(result))
        return
    mib = 2**20
    what = "peak device memory" if args.device == "cuda" else "peak RSS"
    print(f"SmolLM2-135M, Zhyper diag r8 q/v, {args.dtype} {args.device}, micro-batch {args.micro}, {args.steps} "
          f"fwd+bwd per setting, {args.threads} thread(s); fresh process per memory figure ({what})")
    print(f"{'seq':>5} {'peak off MiB':>13} {'peak on MiB':>12} {'on/off':>7} {'growth off':>11} {'growth on':>10} "
          f"{'growth on/off':>14} {'est. off':>9} {'est. on':>8} {'growth/est off':>15} {'growth/est on':>14} "
          f"{'step on/off':>12}")
    for seq in args.seqs:
        off = _launch("memory", seq, args)
        on = _launch("memory", seq, args, checkpointing=True)
        t = _launch("time", seq, args)
        est_off, est_on = _estimate(args.micro, seq, 2 if args.dtype == "bf16" else 4)
        g_off, g_on = off["peak"] - off["baseline"], on["peak"] - on["baseline"]
        print(f"{seq:>5} {off['peak'] / mib:>13.0f} {on['peak'] / mib:>12.0f} {on['peak'] / off['peak']:>7.3f} "
              f"{g_off / mib:>11.0f} {g_on / mib:>10.0f} {g_on / g_off:>14.3f} {est_off / mib:>9.0f} "
              f"{est_on / mib:>8.0f} {g_off / est_off:>15.2f} {g_on / est_on:>14.2f} {t['on'] / t['off']:>12.3f}")
    print(f"growth = {what} minus the same after the model was built and its weights paged in (activations, "
          "logits, gradients, transients); est. = zhyper plan's activations + logits for the same micro-batch")


if __name__ == "__main__":
    main()
