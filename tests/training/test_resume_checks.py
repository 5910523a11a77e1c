"""What --resume refuses before anything loads, and a checkpoint save on a full disk (issue 31).

The checks run on checkpoint folders as a run writes them (``manifest.json`` and ``zhyper_state.json``,
whose ``run`` record is ``resume.run_record``, what ``Progress.client_state`` stores); the full disk is
a real one: a 400 KiB tmpfs mounted in a private mount namespace (``unshare``), under a real
one-process DeepSpeed engine. One slow test runs the real two-process launcher end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from zhyper.training import resume
from zhyper.training.config import load_config
from zhyper.training.output import mark_output_dir, run_id
from zhyper.training.resume import CheckpointError

TINY = REPO / "launch" / "configs" / "cpu-tiny.yaml"


def _run_folder(out, *overrides):
    """A run's folder with one checkpoint, step2, as a run of ``overrides`` leaves it; returns its config."""
    cfg = load_config(TINY, [f"output_dir={out}", *overrides])
    out.mkdir(parents=True)
    mark_output_dir(out)
    step = out / "checkpoints" / "step2"
    step.mkdir(parents=True)
    (step / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    (step / resume.STATE).write_text(json.dumps({"step": 2, "losses": [1.0, 0.9], "mlflow_run_id": "abc",
                                                 "run": resume.run_record(cfg, out)}))
    resume.write_manifest(step)
    (out / "checkpoints" / resume.LATEST).write_text("step2")
    return cfg


def test_resume_names_the_model_setting_that_changed(tmp_path):
    out = tmp_path / "run"
    cfg = _run_folder(out)
    ckpt = out / "checkpoints"
    changed = load_config(TINY, [f"output_dir={out}", "model.alpha=4", "model.rank=2"])
    with pytest.raises(CheckpointError, match=rf"checkpoint step2 was trained with model.alpha={cfg.model.alpha}, "
                                              rf"model.rank={cfg.model.rank}, but this run's config has "
                                              r"model.alpha=4.0, model.rank=2; a resumed run keeps the model's "
                                              rf"settings: pass model.alpha={cfg.model.alpha} model.rank="):
        resume.check_resumable(ckpt, "step2", changed, out)
    resume.check_resumable(ckpt, "step2", cfg, out)  # the twin: the same settings resume
    longer = load_config(TINY, [f"output_dir={out}", "train.max_steps=40", "train.lr=1e-4"])
    resume.check_resumable(ckpt, "step2", longer, out)  # training settings may change (train on from it)


def test_a_step_folder_copied_from_another_run_is_refused(tmp_path):
    cfg = _run_folder(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    mark_output_dir(b)
    (b / "checkpoints").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step2", b / "checkpoints" / "step2")
    (b / "checkpoints" / resume.LATEST).write_text("step2")
    assert run_id(b) and run_id(tmp_path / "a") and run_id(b) != run_id(tmp_path / "a")
    with pytest.raises(CheckpointError, match=rf"checkpoint {b / 'checkpoints' / 'step2'} was written by another run "
                                              rf"\(run id {run_id(tmp_path / 'a')}; {b} belongs to run {run_id(b)}\)"):
        resume.check_resumable(b / "checkpoints", "step2", cfg, b)
    resume.check_resumable(tmp_path / "a" / "checkpoints", "step2", cfg, tmp_path / "a")  # twin: in its own run
    shutil.copytree(tmp_path / "a", tmp_path / "moved")  # a whole run moved elsewhere keeps its id: resumable
    resume.check_resumable(tmp_path / "moved" / "checkpoints", "step2", cfg, tmp_path / "moved")


def test_checkpoints_and_markers_from_before_run_records_still_resume(tmp_path):
    out = tmp_path / "old"
    cfg = _run_folder(out)
    state = out / "checkpoints" / "step2" / resume.STATE
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "run"}))
    resume.check_resumable(out / "checkpoints", "step2", load_config(TINY, ["model.rank=2"]), out)
    marker = out / ".zhyper-output.json"
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "run_id"}))
    assert run_id(out) is None
    mark_output_dir(out)  # an old marker gets an id, keeping what it recorded
    assert run_id(out) and json.loads(marker.read_text())["written_by"] == "zhyper launch/train.py"
    assert cfg.model.rank != 2


SAVE_ON_TMPFS = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import torch, deepspeed
    from zhyper.training import resume
    from zhyper.training.session import init_distributed
    init_distributed("gloo")
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)  # 263 KB of weights, twice that in Adam's states: more than the disk holds
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config={
        "train_batch_size": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": 0}})
    engine.backward(engine(torch.ones(1, 256)).sum())
    engine.step()
    ckpt = Path(sys.argv[1])
    ckpt.mkdir()
    (ckpt / "step0").mkdir()  # an earlier complete checkpoint (tiny) that latest names
    (ckpt / resume.LATEST).write_text("step0")
    try:
        resume.save(engine, ckpt, 1, {"step": 1}, 0)
        result = {"ok": True}
    except OSError as err:
        result = {"ok": False, "errno": err.errno, "message": str(err)}
    result["left"] = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*"))
    print("RESULT " + json.dumps(result))
""")


def _save_on_disk(tmp_path, size: str) -> dict:
    """resume.save of a real engine into a fresh ``size`` tmpfs (its own mount namespace: nothing else sees it)."""
    from tests.training.test_train_deepspeed import _env, _free_port

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mount = tmp_path / f"disk{size}"
    mount.mkdir()
    script = tmp_path / "save.py"
    script.write_text(SAVE_ON_TMPFS)
    shell = (f"mount -t tmpfs -o size={size} tmpfs {mount} && exec {sys.executable} {script} {mount / 'checkpoints'} "
             f"{_free_port()}")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    if "RESULT " not in proc.stdout and ("mount" in proc.stderr or "unshare" in proc.stderr):
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[-300:]}")
    assert "RESULT " in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])


def test_a_full_disk_during_a_checkpoint_leaves_no_partial_folder_and_says_so(tmp_path):
    import errno

    full = _save_on_disk(tmp_path, "400k")
    assert not full["ok"] and full["errno"] == errno.ENOSPC, full
    assert "disk full: checkpoint " in full["message"] and "step1 could not be written" in full["message"]
    assert str(tmp_path / "disk400k" / "checkpoints" / "step1") in full["message"]
    assert "the incomplete folder was removed; `latest` still names step0" in full["message"]
    assert full["left"] == ["latest", "step0"], full["left"]  # nothing partial, the earlier checkpoint kept
    roomy = _save_on_disk(tmp_path, "64m")  # the twin: the same save with room completes
    assert roomy["ok"] and "step1/manifest.json" in roomy["left"] and "step0" in roomy["left"], roomy


@pytest.mark.slow
def test_resume_refusals_on_the_real_launcher(tmp_path):
    """Two real ranks: --resume with a changed model setting, and a step folder copied into another run's
    folder, each end with one line naming what is wrong before anything loads (no MLflow traceback)."""
    from tests.training.test_faults import _command
    from tests.training.test_train_deepspeed import _env, _train

    a = tmp_path / "a"
    _train(a, "train.stop_after=2", "train.checkpoint_every=2")
    record = json.loads((a / "checkpoints" / "step2" / resume.STATE).read_text())["run"]
    assert record["run_id"] == run_id(a) and record["settings"]["model.rank"] == "4", record

    def resumed(out, *overrides) -> str:
        proc = subprocess.run(_command(out, *overrides, resume=True), cwd=REPO, env=_env(out), capture_output=True,
                              text=True, timeout=300)
        log = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in log and "MlflowException" not in log, log[-4000:]
        return log

    assert "checkpoint step2 was trained with model.rank=4, but this run's config has model.rank=2" in \
        resumed(a, "model.rank=2")
    b = tmp_path / "b"  # another run's folder (one that stopped before its first checkpoint)
    b.mkdir()
    mark_output_dir(b)
    shutil.copytree(a / "checkpoints" / "step2", b / "checkpoints" / "step2")
    (b / "checkpoints" / resume.LATEST).write_text("step2")
    assert f"checkpoint {b / 'checkpoints' / 'step2'} was written by another run" in resumed(b)
