"""The host memory a CPU training rank holds besides the model: measured, for ``zhyper plan --device cpu``.

On a CPU run the "device" is host RAM, and a rank's resident set holds, besides what the plan
computes (base, trained parameters, gradients, optimizer states, activations, the encoder), the
runtime itself: the Python interpreter, torch, transformers, DeepSpeed (its process group and
shared-memory communication op), datasets, sentence-transformers, MLflow, the tokenizer and the
training rows. ``probe`` measures exactly that: a fresh process runs what ``launch/train.py`` does
before the base model loads (imports, ``deepspeed.init_distributed`` with gloo, tokenizer, data),
without loading any model, and reports its peak RSS::

    .venv/bin/python -m zhyper.sizing.runtime [--config launch/configs/cpu-tiny.yaml]

``CPU_RUNTIME_BYTES`` in ``zhyper.sizing.memory`` is the figure measured here (docs/planning.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(config: str | None, ds_config: str | None) -> dict:
    """Run in the probe process: the recipe's set-up without any model; returns the peak RSS."""
    import deepspeed  # noqa: F401  (what every rank imports)
    import mlflow  # noqa: F401  (rank 0 logs to it; imported at module level by the tracker's client)
    import sentence_transformers  # noqa: F401  (the encoder's library; the weights are counted apart)
    import torch.distributed as dist

    from zhyper.data import ChatCollator
    from zhyper.training import build, evaluate, final, report, resume, session  # noqa: F401
    from zhyper.training.config import load_config
    from zhyper.training.data import load_data, training_rows
    from zhyper.training.session import init_distributed, peak_rss_bytes

    cfg = load_config(config)
    init_distributed("gloo")
    tokenizer = build.tokenizer_for(cfg)
    ChatCollator(tokenizer, max_length=cfg.data.max_length)
    data = load_data(cfg)
    training_rows(data, cfg.data.null_context, cfg.data.augment, cfg.data.seed)
    if ds_config:  # the engine's own machinery (optimizer wrapper, ZeRO coordinator, buffers) on a trivial module
        import torch

        ds = build.resolve_ds_config(ds_config, cfg, 1)
        module = torch.nn.Linear(16, 16)
        deepspeed.initialize(model=module, model_parameters=list(module.parameters()), config=ds)
    dist.barrier()
    peak = peak_rss_bytes()
    dist.destroy_process_group()
    return {"peak_rss_bytes": peak, "config": config, "ds_config": ds_config}


def probe(config: str | None = None, ds_config: str | None = None, timeout: float = 600) -> int:
    """Peak RSS (bytes) of a fresh one-rank process doing the recipe's set-up without a model."""
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    # On a fresh cache the first tokenizer load converts the GGUF base (the whole model in memory): do that
    # here, before the measured process, whose peak would otherwise be the conversion's.
    from zhyper.base_model import smollm2_path

    smollm2_path()
    cmd = [sys.executable, "-m", "zhyper.sizing.runtime", "--child"] + (["--config", config] if config else []) \
        + (["--ds_config", ds_config] if ds_config else [])
    peaks = []
    for _ in range(2):  # the first run may build DeepSpeed's CPU comm op and fill caches: the second is measured
        env["MASTER_PORT"] = str(_free_port())
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"runtime probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        peaks.append(int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_bytes"]))
    return peaks[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="peak RSS of a CPU rank's runtime without any model (bytes)")
    p.add_argument("--config", default=None, help="run YAML (its tokenizer and data are loaded)")
    p.add_argument("--ds_config", default=None, help="also build a DeepSpeed engine on a trivial module")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.config, args.ds_config)))
        return 0
    peak = probe(args.config, args.ds_config)
    print(json.dumps({"peak_rss_bytes": peak, "peak_rss_mib": round(peak / 2**20, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
