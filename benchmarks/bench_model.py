"""ZhyperModel speed against its peers, on the shipped SmolLM2-135M-Instruct, in one process.

    .venv/bin/python benchmarks/bench_model.py [--reps 5] [--batch 8] [--seq 128]

1. Hypernetwork generation of the modulation for all 30 layers x 2 module types (q_proj, v_proj)
   for a batch of 8 contexts (diag, r 8), vs one forward+backward of the plain base model on
   (8, 128) tokens. Target <= 2%. Also printed: the hypernetwork's own forward+backward.
2. ZhyperModel forward+backward (diag, r 8, q/v; the hypernetwork included) vs the same base with a
   PEFT LoRA (r 8, q/v) on the same batch. Target <= 1.10x.
Times are medians over interleaved repetitions (other jobs share the machine): only the ratios mean
something.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_interleaved  # noqa: E402

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


def build_models(path):
    """(ZhyperModel, the plain base, PEFT LoRA) on SmolLM2, training mode, every lora_B non-zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from zhyper import ZhyperConfig, ZhyperModel

    cfg = ZhyperConfig(mode="diag", rank=8, alpha=16.0, target_modules=["q_proj", "v_proj"])
    zhyper = ZhyperModel.from_base(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), cfg).train()
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    plain.requires_grad_(False)
    # backward through every layer (as the adapters need) without an embedding-weight gradient
    plain.get_input_embeddings().register_forward_hook(lambda module, inputs, out: out.requires_grad_(True))
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)).train()
    with torch.no_grad():  # non-zero B everywhere, so no path is skipped
        for name, p in list(zhyper.named_parameters()) + list(peft.named_parameters()):
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return zhyper, plain, peft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()

    import torch

    from zhyper.base_model import smollm2_path

    torch.manual_seed(0)
    b, t = args.batch, args.seq
    zhyper, plain, peft = build_models(smollm2_path())
    ids = torch.randint(0, 49152, (b, t))
    context = zhyper.embed([f"Answer in the style number {i}." for i in range(b)])
    hypernet = zhyper.hypernet
    print(f"torch threads {torch.get_num_threads()}, batch ({b}, {t}), hypernetwork "
          f"{sum(p.numel() for p in hypernet.parameters()):,} params, grid {zhyper.layout.n_layers} x "
          f"{list(zhyper.layout.module_types)}")

    def base_step():
        plain(input_ids=ids, labels=ids).loss.backward()
        plain.zero_grad(set_to_none=True)

    def generate():
        with torch.no_grad():
            hypernet(context)

    def generate_fwd_bwd():
        hypernet(context).sum().backward()
        hypernet.zero_grad(set_to_none=True)

    def zhyper_step():
        zhyper(input_ids=ids, labels=ids, context_embeddings=context).loss.backward()
        zhyper.zero_grad(set_to_none=True)

    def peft_step():
        peft(input_ids=ids, labels=ids).loss.backward()
        peft.zero_grad(set_to_none=True)

    fast = median_interleaved({"generate": generate, "generate_fwd_bwd": generate_fwd_bwd}, reps=50)
    slow = median_interleaved({"base": base_step, "zhyper": zhyper_step, "peft": peft_step}, reps=args.reps)
    report(fast, slow)


def report(fast: dict, slow: dict) -> None:
    print(f"base forward+backward          {slow['base'] * 1e3:9.1f} ms")
    print(f"hypernetwork generation        {fast['generate'] * 1e3:9.3f} ms  "
          f"ratio {fast['generate'] / slow['base']:.4%} of base fwd+bwd (target <= 2%)")
    print(f"hypernetwork forward+backward  {fast['generate_fwd_bwd'] * 1e3:9.3f} ms  "
          f"ratio {fast['generate_fwd_bwd'] / slow['base']:.4%} of base fwd+bwd")
    print(f"PEFT LoRA forward+backward     {slow['peft'] * 1e3:9.1f} ms")
    print(f"ZhyperModel forward+backward   {slow['zhyper'] * 1e3:9.1f} ms  "
          f"ratio {slow['zhyper'] / slow['peft']:.3f}x PEFT LoRA (target <= 1.10x)")

if __name__ == "__main__":
    main()
