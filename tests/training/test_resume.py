"""Checkpoint manifests, damaged-checkpoint fallback and the pickle allow-list (no training: fast)."""

from __future__ import annotations

import pytest
import torch

from zhyper.training import resume
from zhyper.training.resume import CheckpointError


def _checkpoint(root, step, files=None):
    folder = root / f"step{step}"
    folder.mkdir(parents=True)
    for name, data in (files or {"a.pt": b"x" * 100, "rng_rank0.safetensors": b"y" * 10}).items():
        (folder / name).write_bytes(data)
    resume.write_manifest(folder)
    (root / resume.LATEST).write_text(f"step{step}")
    return folder


def test_manifest_verifies_and_names_what_changed(tmp_path):
    folder = _checkpoint(tmp_path, 2)
    assert resume.verify(folder) is None
    (folder / "a.pt").write_bytes(b"x" * 50)
    assert "a.pt has 50 bytes, the manifest records 100" in resume.verify(folder)
    (folder / "a.pt").write_bytes(b"z" * 100)  # same size, other content
    assert "differs from the manifest's SHA-256" in resume.verify(folder)
    (folder / "a.pt").unlink()
    assert "a.pt is missing" in resume.verify(folder)
    unfinished = tmp_path / "step9"
    unfinished.mkdir()
    assert "has no manifest.json" in resume.verify(unfinished)


def test_damaged_latest_names_the_previous_complete_checkpoint(tmp_path):
    _checkpoint(tmp_path, 2)
    newest = _checkpoint(tmp_path, 4)
    assert resume.choose(tmp_path) == "step4"  # intact: used as is
    (newest / "a.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"step4 is damaged: .*a\.pt has 0 bytes.*`--resume step2`"):
        resume.choose(tmp_path)
    assert resume.choose(tmp_path, "step2") == "step2"
    with pytest.raises(CheckpointError, match=r"step7 is damaged: .*does not exist"):
        resume.choose(tmp_path, "step7")


def test_no_latest_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no 'latest' file"):
        resume.choose(tmp_path)


class _Payload:
    """Pickles to a call of os.system: what a planted checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _Engine:
    checkpoint_engine = None


def test_safe_loader_refuses_pickled_code_and_loads_deepspeed_state(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    engine = resume.safe_checkpoint_engine(_Engine())
    plain = tmp_path / "ok.pt"
    torch.save({"module": {"w": torch.ones(2)}, "loss_scaler": LossScaler(1.0), "stage": ZeroStageEnum.weights,
                "param_slice_mappings": [{"w": fragment_address(numel=2, start=0)}],  # ZeRO-1/2, bf16 optimizer
                "client": {"step": 3, "losses": [1.0, 0.5]}}, plain)
    loaded = engine.checkpoint_engine.load(str(plain), map_location="cpu")
    torch.testing.assert_close(loaded["module"]["w"], torch.ones(2))
    assert loaded["client"]["step"] == 3 and loaded["stage"] == ZeroStageEnum.weights
    assert loaded["param_slice_mappings"][0]["w"] == fragment_address(numel=2, start=0)

    marker = tmp_path / "pwned"
    planted = tmp_path / "planted.pt"
    torch.save({"module": {"w": torch.ones(2)}, "x": _Payload(marker)}, planted)
    refused = r"refusing to load .*planted\.pt: it holds the Python object (posix|nt|os)\.system, outside .*allow-list"
    with pytest.raises(CheckpointError, match=refused):
        engine.checkpoint_engine.load(str(planted), map_location="cpu")
    assert not marker.exists()
    torch.load(planted, weights_only=False)  # the twin: what DeepSpeed's own loader does runs the payload
    assert marker.exists()
