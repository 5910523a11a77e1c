"""Fault injection on the real two-process DeepSpeed runs (cpu-tiny.yaml): kills, planted pickles, NaN, a second run.

Each test starts real `deepspeed` launcher processes and breaks something the way it breaks in
practice (kill -9 while a checkpoint is being written, the launcher killed, a checkpoint file
replaced by one carrying a pickled payload, a learning rate that blows the weights up, two runs on
one folder) and checks that nothing is lost, nothing runs, and the error says what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.training.test_train_deepspeed import CONFIGS, DEEPSPEED, REPO, _env, _free_port, _losses, _train

pytestmark = pytest.mark.slow


def _command(out: Path, *overrides: str, resume: bool = False) -> list[str]:
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(_free_port()), str(REPO / "launch" / "train.py"),
           "--ds_config", str(CONFIGS / "zero3.json"), "--config", str(CONFIGS / "cpu-tiny.yaml"),
           f"output_dir={out}", *overrides]
    return [*cmd, "--resume"] if resume else cmd


def _start(out: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(_command(out, *overrides), cwd=REPO, env=_env(out), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


def _ranks(launcher: subprocess.Popen) -> list:
    """The training processes (ranks) under a launcher, found by their command line."""
    import psutil

    out = []
    for p in psutil.Process(launcher.pid).children(recursive=True):
        try:
            line = " ".join(p.cmdline())
        except psutil.Error:  # exited (or a zombie) while we looked
            continue
        if "train.py" in line and "--local_rank" in line:
            out.append(p)
    return out


STEPS = ["train.max_steps=6", "train.checkpoint_every=2", "eval.every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def uninterrupted(runs):
    return _losses(_train(runs / "whole", *STEPS))


def test_kill_9_while_saving_then_resume_gives_the_uninterrupted_losses(runs, uninterrupted):
    out = runs / "killed"
    proc = _start(out, *STEPS)
    _wait_for(lambda: (out / "checkpoints" / "step4").is_dir() or proc.poll() is not None, 300, "step4 to be written")
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-save or just after
    proc.wait()
    _train(out, *STEPS, resume=True)
    assert _losses(out) == pytest.approx(uninterrupted, abs=1e-6)  # the whole history, not only the resumed part
    assert json.loads((out / "checkpoints" / "step6" / "manifest.json").read_text())["files"]


def test_killing_the_launcher_stops_every_rank(runs):
    import psutil

    out = runs / "orphans"
    proc = _start(out, "train.max_steps=400", "eval.every=0", "train.checkpoint_every=0")
    _wait_for(lambda: len(_ranks(proc)) == 2 and (out / "mlflow.db").exists(), 300, "both ranks to train")
    ranks = _ranks(proc)
    proc.kill()  # SIGKILL to the `deepspeed` launcher only
    proc.wait()
    gone, alive = psutil.wait_procs(ranks, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f"ranks {[p.pid for p in alive]} outlived their launcher by more than 10 s"
    assert not (out / "final").exists()


def test_a_second_live_run_on_the_same_folder_is_refused_naming_the_first(runs):
    out = runs / "busy"
    first = _start(out, "train.max_steps=400", "eval.every=0", "train.checkpoint_every=0")
    try:
        _wait_for(lambda: (out / ".zhyper-run.json").is_file(), 300, "the first run to take the folder")
        pid = json.loads((out / ".zhyper-run.json").read_text())["pid"]
        second = subprocess.run(_command(out, "train.max_steps=2"), cwd=REPO, env=_env(out), capture_output=True,
                                text=True, timeout=300)
        assert second.returncode != 0
        assert f"is in use by another training run (PID {pid}" in second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_planted_pickle_even_with_a_matching_manifest(runs):
    from zhyper.training.resume import write_manifest

    out = runs / "planted"
    _train(out, "train.stop_after=2", "train.checkpoint_every=2")
    # train.stop_after ends the run as docs/training.md says: its record goes, the empty lock file stays
    assert not (out / ".zhyper-run.json").exists(), "train.stop_after left the run's record behind"
    assert (out / ".zhyper-run.lock").exists()
    target = out / "checkpoints" / "step2" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    state = torch.load(target, weights_only=False)
    marker = out / "payload-ran"
    state["planted"] = _Payload(marker)
    torch.save(state, target)
    write_manifest(target.parent)  # an attacker who can write files can rewrite the manifest too
    proc = subprocess.run(_command(out, resume=True), cwd=REPO, env=_env(out), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "refusing to load" in proc.stdout + proc.stderr
    assert not marker.exists()


def test_a_damaged_checkpoint_is_named_with_the_one_to_fall_back_to(runs):
    out = runs / "damaged"
    _train(out, "train.stop_after=4", "train.checkpoint_every=2")
    victim = out / "checkpoints" / "step4" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    proc = subprocess.run(_command(out, resume=True), cwd=REPO, env=_env(out), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "step4 is damaged" in proc.stdout + proc.stderr and "--resume step2" in proc.stdout + proc.stderr


def test_a_diverging_run_stops_before_writing_anything(runs):
    out = runs / "nan"
    proc = subprocess.run(_command(out, "train.lr=1e30", "train.max_steps=6", "train.checkpoint_every=1",
                                   "eval.every=0"), cwd=REPO, env=_env(out), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and ("holds NaN or inf" in log or "training loss is" in log), log[-3000:]
    assert not (out / "final").exists() and not (out / "peft_example").exists()
    from zhyper.training.resume import verify

    assert all(verify(m.parent) is None for m in (out / "checkpoints").glob("step*/manifest.json"))
