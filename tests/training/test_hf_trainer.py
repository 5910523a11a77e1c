"""zhyper.hf: training with transformers.Trainer and trl.SFTTrainer is launch/train.py's training.

The parity run (tests/training/hf_parity.py, one subprocess: it initialises torch.distributed and accelerate's
process-wide state) trains the same tiny model on the same sampler steps with zhyper's own ``train_step`` on a
ZeRO-2 engine, with ``ZhyperTrainer`` (plain and with ``deepspeed=``), with ``ZhyperSFTTrainer``, and with
``ZhyperTrainer`` on rows whose description was dropped (the twin). The two-process ZeRO-2 run goes through
``examples/train_with_trainer.py`` under torchrun (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

PATHS = ("trainer", "trainer_zero2", "sft")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def parity(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf_parity")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "training" / "hf_parity.py"), str(out)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def _losses(out: Path, name: str) -> torch.Tensor:
    return torch.tensor(json.loads((out / f"{name}.json").read_text()), dtype=torch.float64)


def _tensors(out: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / f"{name}.safetensors"))


@pytest.mark.parametrize("path", PATHS)
def test_trainer_losses_equal_zhyper_train_step(parity, path):
    expected = _losses(parity, "zhyper")
    assert len(expected) == 4 and torch.isfinite(expected).all()
    torch.testing.assert_close(_losses(parity, path), expected, rtol=1e-6, atol=1e-6)
    mine, theirs = _tensors(parity, path), _tensors(parity, "zhyper")
    assert sorted(mine) == sorted(theirs)
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resumed_trainer_continues_exactly(parity):
    """resume_from_checkpoint on the Trainer's checkpoint-2 (zhyper files + optimizer and scheduler state): steps
    3 and 4 and the final weights equal the uninterrupted run's; a restart from the initial weights would not."""
    expected = _losses(parity, "zhyper")
    resumed = _losses(parity, "resumed")
    torch.testing.assert_close(resumed, expected[2:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_tensors(parity, "resumed"), _tensors(parity, "trainer"), rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError):  # the twin: steps 1-2 of the fresh run are not what the resumed run logs
        torch.testing.assert_close(resumed, expected[:2], rtol=1e-6, atol=1e-6)


def test_twin_dropped_description_changes_the_losses(parity):
    """The same Trainer run with every description replaced by "none": the losses and the weights differ, so
    the equality above holds only because the Trainer conditions on the same descriptions."""
    dropped, expected = _losses(parity, "dropped"), _losses(parity, "zhyper")
    assert len(dropped) == len(expected)
    assert ((dropped - expected).abs() > 1e-4).all(), (dropped, expected)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_tensors(parity, "dropped"), _tensors(parity, "zhyper"), rtol=1e-5, atol=1e-6)


def test_trainer_checkpoint_loads_and_exports_to_peft(parity, tmp_path):
    from zhyper import ZhyperModel

    model = ZhyperModel.from_pretrained(parity / "checkpoint", base_model=str(parity / "base"), strict_base=True)
    trained = _tensors(parity, "trainer")
    saved = model.trainable_state_dict()
    assert sorted(saved) == sorted(trained)
    for name, value in trained.items():
        torch.testing.assert_close(saved[name].float(), value, msg=name)
    adapter = model.export_peft("Answer in all capital letters.", tmp_path / "peft")
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()


def test_deepspeed_config_with_its_own_optimizer_is_refused():
    from zhyper.hf import check_deepspeed_config

    zero2 = json.loads((REPO / "examples" / "ds_zero2.json").read_text())
    check_deepspeed_config(zero2)  # the shipped example: the Trainer builds zhyper's parameter groups
    check_deepspeed_config(None)
    with pytest.raises(ValueError, match="'optimizer' section"):
        check_deepspeed_config({**zero2, "optimizer": {"type": "AdamW", "params": {}}})


def test_add_null_context_rows_and_descriptions():
    from datasets import Dataset

    from zhyper.hf import add_null_context, context_descriptions
    from zhyper.training.data import NULL_CONTEXT, null_pool

    rows = Dataset.from_list([
        {"prompt": "Name a fruit.", "response": "APPLE.", "description": "Shout.", "context": "upper",
         "base_answer": "Apple."},
        {"prompt": "Name a fruit.", "response": "apple.", "description": "Whisper.", "context": "lower",
         "base_answer": "Apple."},
        {"prompt": "Name a colour.", "response": "RED.", "description": "Use capitals.", "context": "upper",
         "base_answer": "Red."}])
    out = add_null_context(rows, seed=0)
    null = out.filter(lambda r: r["context"] == NULL_CONTEXT)
    assert len(out) == 5 and null["response"] == ["Apple.", "Red."]  # one row per distinct prompt, plain answer
    assert set(null["description"]) <= set(null_pool(0))
    assert add_null_context(rows, seed=0)["description"] == out["description"]  # deterministic in the seed
    assert context_descriptions(rows) == {"lower": ["Whisper."], "upper": ["Shout.", "Use capitals."]}
    with pytest.raises(ValueError, match="base_answer"):  # the twin: no plain answers, no null context
        add_null_context(rows.remove_columns("base_answer"))


def test_import_stays_light():
    code = ("import sys, zhyper.hf; heavy = [m for m in ('transformers.trainer', 'trl', 'deepspeed') "
            "if m in sys.modules]; print(heavy); assert not heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_process_zero2_trainer_run_ends_with_a_loadable_checkpoint(tmp_path):
    """examples/train_with_trainer.py under torchrun: two CPU ranks, ZeRO-2 through the Trainer's deepspeed=."""
    from tests.training.test_train_deepspeed import _free_port
    from zhyper import ZhyperModel
    from zhyper.testing import tiny_chat_base

    base = tiny_chat_base(tmp_path / "base")
    out, port = tmp_path / "run", _free_port()
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", str(port),
           str(REPO / "examples" / "train_with_trainer.py"), "--out", str(out), "--base", str(base),
           "--deepspeed", str(REPO / "examples" / "ds_zero2.json"), "--max-steps", "2", "--batch-size", "2",
           "--max-length", "96"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "trained on 2 rank(s), 2 steps" in proc.stdout  # accelerate saw both ranks (use_cpu=True)
    model = ZhyperModel.from_pretrained(out / "final", strict_base=True)  # the recorded base folder
    assert Path(model.base_model_id) == base and model.trainable_state_dict()
    assert (out / "peft" / "adapter_config.json").is_file()
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")), "the run left shared memory"
