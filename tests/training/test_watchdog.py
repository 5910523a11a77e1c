"""The launcher watchdog of a training rank (zhyper.training.session.watch_launcher), on real processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

WATCHER = """
import sys, time
from zhyper.training.session import watch_launcher
watch_launcher([int(a) for a in sys.argv[1:]], interval=0.2)
print("watching", flush=True)
time.sleep(float(4))
"""


def _chain():
    """A shell B whose background child A ("the launcher") outlives it once B is told to exit."""
    shell = subprocess.Popen(["bash", "-c", "sleep 60 > /dev/null & echo $!; read line"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    return shell, int(shell.stdout.readline())


def _watch(*pids: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WATCHER, *map(str, pids)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "watching"
    return proc


def test_the_run_goes_on_when_the_launchers_shell_exits_and_stops_when_the_launcher_dies():
    shell, launcher = _chain()
    try:
        rank = _watch(launcher)
        shell.communicate("\n", timeout=10)  # the shell exits: the launcher is handed to init (nohup ... &)
        assert rank.wait(timeout=10) == 0  # the rank went on to its natural end
        rank = _watch(launcher)
        subprocess.run(["kill", "-9", str(launcher)], check=True)
        t0 = time.monotonic()
        assert rank.wait(timeout=10) == 143  # twin: the launcher's death does stop it
        assert time.monotonic() - t0 < 3
    finally:
        subprocess.run(["kill", "-9", str(launcher)], capture_output=True)


def test_a_launcher_that_loses_its_runner_stops_the_rank():
    shell, runner = _chain()  # here the shell plays the runner and its child the per-node launcher
    try:
        rank = _watch(runner, shell.pid)  # watched chain: launcher (child of the runner), runner
        shell.stdin.write("\n")
        shell.stdin.flush()  # the runner exits; its child is orphaned
        assert rank.wait(timeout=10) == 143
    finally:
        shell.kill()
        subprocess.run(["kill", "-9", str(runner)], capture_output=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
