"""Gradient checkpointing on the real two-process ZeRO-3 engine: the same losses as without it.

launch/train.py on cpu-tiny.yaml, twice (train.gradient_checkpointing=true / false). The first
step's loss comes from the forward alone; every later loss depends on the gradients of the steps
before, so equal per-step losses mean the checkpointed backward (recompute of every decoder layer
with its ZLinear modulations restored, parameters gathered again by ZeRO-3) gave the same updates.

``tiny_run`` is shared with tests/sizing/test_plan_runs.py (the memory cross-check reuses these
runs' ``memory_rank<r>.json`` instead of launching its own), cached for the whole session.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.training.test_train_deepspeed import CONFIGS, DEEPSPEED, REPO, _env, _free_port, _losses

pytestmark = pytest.mark.slow


@functools.cache
def _runs_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="zhyper-tiny-runs-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def tiny_run(checkpointing: bool, ds: str = "zero3.json") -> tuple[Path, str]:
    """(output folder, launcher log) of one two-process cpu-tiny.yaml run; each setting runs once per session."""
    return _tiny_run(bool(checkpointing), str(ds))  # one cache key per setting, however it is called


@functools.cache
def _tiny_run(checkpointing: bool, ds: str) -> tuple[Path, str]:
    out = _runs_dir() / f"{Path(ds).stem}-ckpt{int(checkpointing)}"
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(_free_port()), str(REPO / "launch" / "train.py"),
           "--ds_config", str(CONFIGS / ds), "--config", str(CONFIGS / "cpu-tiny.yaml"),
           f"output_dir={out}", f"train.gradient_checkpointing={str(checkpointing).lower()}"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(out), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"training failed ({proc.returncode}):\n{log[-6000:]}"
    return out, log


def test_zero3_losses_with_and_without_checkpointing_agree():
    out_on, log_on = tiny_run(True)
    out_off, log_off = tiny_run(False)
    assert "gradient checkpointing on (non-reentrant); 2 blocks keep their ZLinear modulation" in log_on
    assert "gradient checkpointing on" not in log_off
    on, off = _losses(out_on), _losses(out_off)
    assert len(on) == len(off) == 4
    assert on == pytest.approx(off, rel=5e-5)  # gloo reduction order only
    # twin: the losses move with the updates, so a wrong gradient in an early step would show
    assert off[-1] != pytest.approx(off[0], rel=5e-5)
