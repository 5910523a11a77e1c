"""``zhyper plan`` and the paper's Mistral-7B setting end to end without weights.

The Mistral-7B run (launch/configs/mistral7b-multinode.yaml + ds_zero3_mistral7b.json) goes through
the config checks the launcher runs (load_config, resolve_ds_config for a world of 8), is built on
the meta device with r 8 on q/v (the paper's parameter counts), and planned for 2 nodes x 4 GPUs of
80 GB: it fits. The same run on one 16 GB GPU does not, and the plan says what to change.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from zhyper.cli import main
from zhyper.sizing.memory import GIB, model_sizes
from zhyper.sizing.plan import format_plan, plan
from zhyper.training.build import ds_dtype, resolve_ds_config, zero_stage
from zhyper.training.config import load_config

CONFIGS = REPO / "launch" / "configs"
MISTRAL_YAML, MISTRAL_DS = CONFIGS / "mistral7b-multinode.yaml", CONFIGS / "ds_zero3_mistral7b.json"
PAPER_COUNTS = {"diag": 4_207_632, "square": 4_265_088, "full": 55_424_000}  # Mistral-7B, gte-large (1024-d)


@pytest.fixture(scope="module")
def mistral_cfg():
    return load_config(MISTRAL_YAML)


def test_paper_config_passes_the_launchers_checks(mistral_cfg):
    cfg = mistral_cfg
    ds = resolve_ds_config(MISTRAL_DS, cfg, 8)  # what launch/train.py runs with the world of 2 nodes x 4 GPUs
    assert cfg.base_model == "mistralai/Mistral-7B-Instruct-v0.2" and cfg.method == "zhyper"
    assert (cfg.model.mode, cfg.model.rank, cfg.model.target_modules) == ("diag", 8, ["q_proj", "v_proj"])
    assert cfg.model.encoder == "Alibaba-NLP/gte-large-en-v1.5" and cfg.model.resolved_context_dim() == 1024
    assert cfg.train.lr == 2.5e-5 and cfg.train.warmup_ratio == 0.2 and cfg.data.n_contexts == 8
    assert ds["train_batch_size"] == 16 and ds["train_micro_batch_size_per_gpu"] == 2
    assert zero_stage(ds) == 3 and ds_dtype(ds) == torch.bfloat16
    with pytest.raises(ValueError, match="divisible by world size 3"):  # twin: a world the batch does not split over
        resolve_ds_config(MISTRAL_DS, cfg, 3)


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
def test_paper_parameter_counts_on_the_meta_device(mode):
    sizes = model_sizes(load_config(MISTRAL_YAML, [f"model.mode={mode}"]))
    assert sizes.trained_params == PAPER_COUNTS[mode]
    assert sizes.base_params == 7_241_732_096  # Mistral-7B-v0.2, untied head
    assert sizes.n_layers == 32 and sizes.adapted == (("q_proj", 4096, 4096), ("v_proj", 4096, 1024))


def test_paper_setting_fits_on_two_nodes_of_four_80gb_gpus(mistral_cfg):
    ds = resolve_ds_config(MISTRAL_DS, mistral_cfg, 8)
    result = plan(mistral_cfg, ds, nodes=2, gpus_per_node=4, device="cuda", device_memory=80 * GIB)
    text = format_plan(result)
    print(text)  # the plan docs/planning.md shows
    assert result.fits and "FITS:" in text and "DOES NOT FIT" not in text
    est = result.estimate
    assert est.device_total < 0.5 * est.usable  # room to spare: a larger micro-batch or max_length would fit
    assert est.line("base parameters").device == pytest.approx(2 * 7_241_732_096 / 8, rel=1e-3)
    assert est.line("sentence encoder").host == 4 * 434_139_136 and est.line("sentence encoder").device == 0
    assert "COMPUTED" in text and est.timing.tokens_per_s > 0
    # twin: one 16 GB GPU cannot hold the bf16 base (14.5 GB) and the activations; the plan names what fits
    ds1 = resolve_ds_config(MISTRAL_DS, mistral_cfg, 1)
    small = plan(mistral_cfg, ds1, nodes=1, gpus_per_node=1, device="cuda", device_memory=16 * GIB)
    small_text = format_plan(small)
    assert not small.fits and "DOES NOT FIT" in small_text and "first that fits:" in small_text
    assert any(a.fits for _, a in small.alternatives) and not all(a.fits for _, a in small.alternatives)
    assert "offload_param" in small_text.split("first that fits:")[1]


def test_checkpointing_is_what_saves_memory_at_long_sequences(mistral_cfg):
    ds = resolve_ds_config(MISTRAL_DS, mistral_cfg, 8)
    long = load_config(MISTRAL_YAML, ["data.max_length=8192"])
    off = plan(long, ds, 2, 4, device_memory=80 * GIB)
    assert not off.fits
    labels = [label for label, a in off.alternatives if a.fits]
    assert labels[0] == "train.gradient_checkpointing=true"
    on = plan(load_config(MISTRAL_YAML, ["data.max_length=8192", "train.gradient_checkpointing=true"]), ds, 2, 4,
              device_memory=80 * GIB)
    assert on.fits and on.estimate.device_total < off.estimate.device_total / 3
    assert on.estimate.timing.step_s > off.estimate.timing.step_s  # the recompute costs a forward


def test_zero3_run_is_told_about_the_replicated_alternative(mistral_cfg):
    ds = resolve_ds_config(MISTRAL_DS, mistral_cfg, 8)
    result = plan(mistral_cfg, ds, 2, 4, device_memory=80 * GIB)
    assert result.replicated is not None and result.replicated.fits
    assert result.replicated.timing.step_s < result.estimate.timing.step_s  # no all-gather of the base
    assert "ZeRO-2 (frozen base replicated" in format_plan(result)
    # twin: on 16 GB GPUs the replicated bf16 base (14.5 GB) plus activations no longer fits: no such note
    small = plan(mistral_cfg, ds, 2, 4, device_memory=16 * GIB)
    assert small.fits and small.replicated is None


def test_cli_prints_the_plan(capsys):
    argv = ["plan", "--config", str(MISTRAL_YAML), "--ds_config", str(MISTRAL_DS), "--nodes", "2",
            "--gpus-per-node", "4", "--gpu-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "FITS:" in out and "world 8 = 2 node(s) x 4 GPUs" in out and "4,207,632" in out
    assert main(argv[:-2] + ["--gpu-memory", "8"]) == 0
    assert "DOES NOT FIT" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "0"], "argument --nodes: expected an integer >= 1, got '0'"),
    (["--gpu-memory", "-1"], "argument --gpu-memory: expected a finite number > 0, got '-1'"),
])
def test_cli_bad_number_is_named(argv, message, capsys):
    """Refused by argparse (zhyper.validate): exit status 2, the option and the value named; more: test_validate.py."""
    base = ["plan", "--config", str(MISTRAL_YAML), "--ds_config", str(MISTRAL_DS)]
    with pytest.raises(SystemExit) as exit_:
        main(base + argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--gpus-per-node", "3"], "divisible by world size 3"),
    (["model.rank=0"], "rank"),
])
def test_cli_bad_input_is_named(argv, message, capsys):
    """A user error: one line ``zhyper plan: error: ...`` and exit status 2, as every command (cli.py)."""
    base = ["plan", "--config", str(MISTRAL_YAML), "--ds_config", str(MISTRAL_DS)]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zhyper plan: error: ") and message in err and "Traceback" not in err


def test_cli_missing_ds_config(tmp_path, capsys):
    assert main(["plan", "--config", str(MISTRAL_YAML), "--ds_config", str(tmp_path / "none.json")]) == 2
    assert f"zhyper plan: error: --ds_config {tmp_path / 'none.json'} does not exist" in capsys.readouterr().err


def test_plan_help_imports_nothing_heavy():
    code = ("import sys\nfrom zhyper.cli import main\ntry:\n    main(['plan', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "usage: zhyper plan" in out.stdout and out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_bundled_smollm2_config_is_the_shipped_models():
    from transformers import AutoConfig

    from zhyper.base_model import smollm2_path
    from zhyper.bases import base_config

    shipped, bundled = AutoConfig.from_pretrained(smollm2_path()), base_config("smollm2")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings"):
        assert getattr(bundled, key) == getattr(shipped, key), key


def test_tiny_llama_sizes_are_the_recipes_model():
    """base_model: tiny-llama is sized from the recipe's own config (the shipped tokenizer's vocabulary)."""
    from zhyper.training import build

    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    tokenizer = build.tokenizer_for(cfg)
    base, _ = build.build_base(cfg, {}, tokenizer)
    model = build.build_model(cfg, base, tokenizer)
    sizes = model_sizes(cfg)
    assert sizes.base_params == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert sizes.trained_params == build.param_count(model)
    assert sizes.vocab == len(tokenizer) and sizes.n_layers == cfg.tiny.num_hidden_layers


def test_unknown_encoder_needs_its_size():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["model.encoder=my/encoder"])
    with pytest.raises(ValueError, match="model.context_dim"):
        model_sizes(cfg)
    sizes = model_sizes(load_config(CONFIGS / "cpu-tiny.yaml", ["model.encoder=my/encoder", "model.context_dim=256"]))
    assert sizes.encoder_params is None


def test_cpu_plan_counts_the_runtime_and_offers_no_offload():
    from zhyper.sizing.memory import CPU_HEAP_FACTOR, CPU_RUNTIME_BYTES

    cfg = load_config(CONFIGS / "default.yaml")
    ds = resolve_ds_config(CONFIGS / "zero0.json", cfg, 2)
    tight = plan(cfg, ds, nodes=1, gpus_per_node=2, device="cpu", device_memory=GIB)
    assert not tight.fits and "DOES NOT FIT" in format_plan(tight)
    assert tight.estimate.line("runtime").device == CPU_RUNTIME_BYTES[0]
    assert tight.estimate.line("sentence encoder").device == 4 * 22_713_216  # host RAM is the device here
    assert tight.alternatives and all("offload" not in label for label, _ in tight.alternatives)
    gpu = plan(cfg, ds, nodes=1, gpus_per_node=2, device="cuda", device_memory=GIB)
    assert tight.estimate.line("logits").device == pytest.approx(CPU_HEAP_FACTOR * gpu.estimate.line("logits").device)
    assert plan(cfg, ds, nodes=1, gpus_per_node=2, device="cpu", device_memory=8 * GIB).fits  # twin: enough RAM
