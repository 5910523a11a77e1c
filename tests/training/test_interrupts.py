"""Interrupts and user errors on the real two-process DeepSpeed runs (cpu-tiny.yaml, ZeRO-2: the README's job).

Ctrl-C (SIGINT to the whole process group), SIGTERM to the `deepspeed` launcher alone, and SIGKILL of
one rank: each ends the MLflow run as KILLED (tagged with where to resume), removes the run's record
``.zhyper-run.json`` and leaves ``latest`` on a complete checkpoint, from which ``--resume`` finishes
the run in the same MLflow run. A folder of the user's files and a bad config key are refused with
one line each.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from tests.training.test_faults import _ranks, _wait_for
from tests.training.test_train_deepspeed import CONFIGS, DEEPSPEED, REPO, _env, _free_port, _train

pytestmark = pytest.mark.slow
LONG = ["train.max_steps=400", "train.checkpoint_every=2", "eval.every=0"]


def _command(out, *overrides):
    return [DEEPSPEED, "--num_gpus", "2", "--master_port", str(_free_port()), str(REPO / "launch" / "train.py"),
            "--ds_config", str(CONFIGS / "zero2.json"), "--config", str(CONFIGS / "cpu-tiny.yaml"),
            f"output_dir={out}", *overrides]


def _mlflow_run(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("zhyper").experiment_id])
    return run


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-launcher", "sigkill-rank"])
def test_interrupt_ends_mlflow_killed_removes_the_record_and_keeps_the_checkpoint(tmp_path, how):
    from zhyper.training.resume import latest_tag, verify

    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out, *LONG), cwd=REPO, env=_env(out), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for(lambda: (out / "checkpoints" / "latest").is_file() or proc.poll() is not None, 300, "a checkpoint")
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the foreground group
        elif how == "sigterm-launcher":
            proc.terminate()  # the `deepspeed` runner alone: its ranks notice and stop
        else:
            max(_ranks(proc), key=lambda p: p.pid).kill()  # one rank dies; the launcher stops the other
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    run = _mlflow_run(out)
    # a killed rank, or a launcher that terminates both ranks: rank 0 hears of it as a SIGTERM (KILLED) or, when
    # its peer stops first, as a broken collective (FAILED; seen under load); either way the run has ended
    assert run.info.status in (("KILLED",) if how == "ctrl-c" else ("KILLED", "FAILED")), \
        (run.info.status, log[-3000:])
    tag = latest_tag(out / "checkpoints")
    assert verify(out / "checkpoints" / tag) is None
    # the note names a complete checkpoint (with the launcher gone, the training thread may finish one more
    # save while the watchdog's cleanup writes the note: then `latest` is newer, and complete too)
    noted = re.search(r"the last complete checkpoint is (step\d+): continue with --resume", run.data.tags["zhyper.ended"])
    assert noted and verify(out / "checkpoints" / noted.group(1)) is None, run.data.tags["zhyper.ended"]
    assert int(noted.group(1)[4:]) <= int(tag[4:])
    assert not (out / ".zhyper-run.json").exists(), "the run's record stayed behind"
    if how != "ctrl-c":
        return
    assert "interrupted (SIGINT)" in log, log[-3000:]
    # no traceback of zhyper's (the `deepspeed` runner prints its own KeyboardInterrupt traceback; not ours to change)
    assert "launch/train.py\", line" not in log and "/zhyper/" not in log, log[-3000:]
    step = int(tag[4:])
    _train(out, "train.max_steps=" + str(step + 2), "train.checkpoint_every=2", "eval.every=0", ds="zero2.json",
           resume=True)
    again = _mlflow_run(out)  # the same MLflow run goes on and finishes
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert json.loads((out / "losses.json").read_text())["start_step"] == step
    assert not (out / ".zhyper-run.json").exists()


def test_a_folder_of_the_users_files_is_refused_and_kept(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "eval.md").write_text("my own notes")
    proc = subprocess.run(_command(out, "train.max_steps=2"), cwd=REPO, env=_env(out), capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"output_dir {out} holds files a zhyper training run did not write: eval.md" in log and "--overwrite" in log
    assert sorted(p.name for p in out.iterdir()) == ["eval.md"] and (out / "eval.md").read_text() == "my own notes"


def test_a_bad_config_key_is_one_line_on_every_rank(tmp_path):
    out = tmp_path / "bad"
    proc = subprocess.run(_command(out, "train.lrr=1"), cwd=REPO, env=_env(out), capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert "unknown key 'train.lrr' in the run config (did you mean 'lr'?)" in log and "Traceback" not in log
    assert not out.exists()  # refused before anything was written
