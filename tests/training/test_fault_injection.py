"""Fault injection: a 2-rank ZeRO-2 run killed at random steps and resumed ends with an uninterrupted run's weights.

One run (the main job's DeepSpeed config, the tiny model, 8 steps, a checkpoint every 2) is hit twice
at steps drawn with a seeded generator (printed on failure): SIGKILL of one rank, then SIGTERM of the
launcher; after each hit it is resumed with --resume from whatever complete checkpoint it left. Its
final weights and loss history must equal, bit for bit, those of a run that was never interrupted:
nothing lost, nothing corrupted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest
import torch

from tests.training.test_faults import _ranks, _wait_for
from tests.training.test_interrupts import _command
from tests.training.test_train_deepspeed import REPO, _env, _losses, _train
from zhyper.training.resume import MANIFEST

pytestmark = pytest.mark.slow
RECIPE = ["train.max_steps=8", "train.checkpoint_every=2", "eval.every=0"]
SEED = int(os.environ.get("ZHYPER_FAULT_SEED", "0"))


def _hit(out, how: str, at_step: int, resume: bool) -> None:
    """Start (or resume) the run, wait for the checkpoint of ``at_step``, then deliver the fault."""
    cmd = _command(out, *RECIPE) + (["--resume"] if resume else [])
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        done = out / "checkpoints" / f"step{at_step}" / MANIFEST  # written last: the checkpoint is complete
        _wait_for(lambda: done.is_file() or proc.poll() is not None, 300, f"the step-{at_step} checkpoint")
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if how == "sigkill-rank":
            max(_ranks(proc), key=lambda p: p.pid).kill()
        else:
            proc.terminate()
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _final(out):
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def test_killed_at_random_steps_and_resumed_equals_uninterrupted(tmp_path):
    rng = random.Random(SEED)
    first = rng.choice([2, 4])
    second = rng.choice([s for s in (4, 6) if s > first] or [6])
    whole = _train(tmp_path / "whole", *RECIPE, ds="zero2.json")
    out = tmp_path / "faulty"
    _hit(out, "sigkill-rank", first, resume=False)
    _hit(out, "sigterm-launcher", second, resume=True)
    _train(out, *RECIPE, ds="zero2.json", resume=True)
    a, b = _final(whole), _final(out)
    note = f"(seed {SEED}: killed after step {first}, terminated after step {second})"
    assert a.keys() == b.keys() and a, note
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=lambda m: f"{name} {note}: {m}")
    assert _losses(out) == _losses(whole), note
    twin = _train(tmp_path / "other", *RECIPE, "train.seed=1", ds="zero2.json")  # the comparison can fail
    assert any(not torch.equal(_final(twin)[n], a[n]) for n in a)
