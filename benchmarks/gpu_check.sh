#!/usr/bin/env bash
# One command for the day a GPU is lent: what the CPU machines cannot measure.
#
#   bash benchmarks/gpu_check.sh            (from the repository root or anywhere)
#
# On one CUDA device, SmolLM2-135M-Instruct (the shipped base), every figure a ratio against a peer
# measured the same way:
#   1. bf16 ZeRO-3 train steps, Zhyper (diag r 8, q/v) vs PEFT LoRA (r 8, q/v): step-time ratio and
#      peak device memory (benchmarks/bench_train.py --gpus 1), ZeRO-3 vs ZeRO-0 step time;
#   2. the same with gradient checkpointing in both models;
#   3. gradient checkpointing on/off for a Zhyper forward + backward at sequence 256 and 512 (micro-batch
#      4, bf16): peak device memory ratio and step-time ratio (benchmarks/bench_checkpointing.py);
#   4. mixed-context generation: 32 prompts, each with its own description (one modulation row each),
#      greedy, 64 new tokens, tokens/s against the plain base model generating the same batch.
# Where no CUDA device exists it says so and exits 0 (nothing to measure). A GPU that torch cannot use
# (the CPU build of torch from constraints.txt) is an error with the fix.
# Settings: GPU_CHECK_STEPS (timed steps, default 6), GPU_CHECK_SEQ (train sequence length, default 512).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${ZHYPER_VENV:-.venv}/bin/python"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
STEPS="${GPU_CHECK_STEPS:-6}"
SEQ="${GPU_CHECK_SEQ:-512}"

if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found; run 'bash make.sh setup' first" >&2
  exit 1
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: a GPU is present (nvidia-smi) but torch cannot use it: $("$PY" -c 'import torch; print(torch.__version__)')." >&2
    echo "  constraints.txt pins the CPU build; install the CUDA build of the same version first, e.g." >&2
    echo "  $PY -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" >&2
    exit 2
  fi
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to measure, skipping."
  exit 0
fi

"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check on {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# ZeRO-0 in bf16, the peer of zero3_bf16.json (zero0.json is fp32 for the CPU)
"$PY" - "$TMP/zero0_bf16.json" <<'EOF'
import json, sys
ds = json.load(open("launch/configs/zero0.json"))
ds["bf16"] = {"enabled": True}
json.dump(ds, open(sys.argv[1], "w"), indent=1)
EOF

echo; echo "== 1. bf16 ZeRO-3 train steps, Zhyper vs PEFT LoRA, one GPU (seq $SEQ)"
"$PY" benchmarks/bench_train.py --gpus 1 --steps "$STEPS" --seq "$SEQ" --micro 4 \
  --zero3-config launch/configs/zero3_bf16.json --zero0-config "$TMP/zero0_bf16.json"

echo; echo "== 2. the same with gradient checkpointing in both models"
"$PY" benchmarks/bench_train.py --gpus 1 --steps "$STEPS" --seq "$SEQ" --micro 4 --checkpointing \
  --zero3-config launch/configs/zero3_bf16.json --zero0-config "$TMP/zero0_bf16.json"

echo; echo "== 3. gradient checkpointing on/off, Zhyper forward + backward (bf16)"
"$PY" benchmarks/bench_checkpointing.py --device cuda --dtype bf16 --seqs 256 512 --micro 4 --steps "$STEPS"

echo; echo "== 4. mixed-context generation tokens/s (32 prompts, 32 descriptions, 64 new tokens)"
"$PY" - <<'EOF'
import statistics, time
import torch
from zhyper import ZhyperConfig, ZhyperModel
from zhyper.generation import generate_texts

model = ZhyperModel.from_base("smollm2", ZhyperConfig(mode="diag", rank=8, target_modules=["q_proj", "v_proj"]),
                              dtype=torch.bfloat16).to("cuda").eval()
torch.manual_seed(0)
with torch.no_grad():  # a non-trivial adapter: random B and heads, so every row really differs
    for m in model.layout:
        model.base.get_submodule(m.name).lora_B.normal_(0, 0.05)
    for head in model.hypernet.heads.values():
        head.weight.normal_(0, 0.05)
prompts = [f"Question {i}: name something that is {c}." for i, c in enumerate(["red", "green", "blue", "cold"] * 8)]
descriptions = [f"Answer in style number {i}, briefly." for i in range(len(prompts))]
kw = dict(max_new_tokens=64, min_new_tokens=64)


def base():
    with model.adapters_off():
        return generate_texts(model.base, model.tokenizer, prompts, descriptions, **kw)


runs = {"zhyper (32 descriptions)": lambda: model.generate(prompts, descriptions, **kw),
        "base model (adapters off)": base}
for fn in runs.values():
    fn()  # warm-up (and the description embeddings cached)
times = {k: [] for k in runs}
for _ in range(3):
    for k, fn in runs.items():  # interleaved
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times[k].append(time.perf_counter() - t)
tps = {k: len(prompts) * 64 / statistics.median(v) for k, v in times.items()}
for k, v in tps.items():
    print(f"{k:<30}{v:>10.0f} tokens/s")
print(f"{'zhyper / base':<30}{tps['zhyper (32 descriptions)'] / tps['base model (adapters off)']:>10.3f}")
EOF
echo; echo "gpu_check: done. Put the figures into docs/planning.md (Measured on a GPU) next to the computed plan."
