"""``zhyper train``: the command it runs is make.sh's deepspeed invocation; one real tiny run (slow)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO
from zhyper.cli import main


def dry_run(capsys, *argv) -> list[str]:
    assert main(["train", "--dry-run", *argv]) == 0
    return shlex.split(capsys.readouterr().out)


def make_sh_train() -> list[str]:
    """The arguments `bash make.sh train` gives the deepspeed launcher (its exec line, continuation joined)."""
    text = (REPO / "make.sh").read_text().replace("\\\n", " ")
    line = re.search(r'^\s*train\)\n(?:.*\n)*?\s*exec "\$VENV/bin/deepspeed" (.*?) "\$@" ;;', text, re.M).group(1)
    return shlex.split(line.replace('"$port"', "PORT"))


def test_dry_run_is_make_sh_train(capsys, monkeypatch):
    monkeypatch.setenv("ZHYPER_PORT", "29511")
    cmd = dry_run(capsys, "train.max_steps=4")
    assert cmd[0].endswith("deepspeed")
    rel = [str(a).replace(f"{REPO}/", "") for a in cmd[1:]]
    assert rel == [a.replace("PORT", "29511") for a in make_sh_train()] + ["train.max_steps=4"]
    # twin: the options change the command
    other = dry_run(capsys, "--num-gpus", "1", "--master-port", "1234", "--config",
                    str(REPO / "launch/configs/cpu-tiny.yaml"), "--resume")
    assert other[1:5] == ["--num_gpus", "1", "--master_port", "1234"]
    assert other[-4:] == ["--config", str(REPO / "launch/configs/cpu-tiny.yaml"), "--resume", "latest"]


def test_dry_run_says_offline_task_rows_are_on_the_hub(capsys, shared_data):
    """The paper's task setting offline: one line naming the first task's hub dataset, exit 2."""
    argv = ["train", "--dry-run", "--config", str(REPO / "launch/configs/tasks.yaml"), f"data.path={shared_data / 'tasks'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Lots-of-LoRAs/" in err and "HF_HUB_OFFLINE=1" in err and "datasets_dir" in err and "Traceback" not in err


def test_free_port_unless_zhyper_port(capsys, monkeypatch):
    monkeypatch.delenv("ZHYPER_PORT", raising=False)
    port = int(dry_run(capsys)[4])
    assert 0 < port < 65536


@pytest.mark.parametrize("argv, env, message", [
    (["--config", "nope.yaml"], None, "--config: nope.yaml is not a file"),
    (["train.nope=1"], None, ".*unknown key 'train.nope'"),  # the run config is checked before the command is printed
    ([], "0", r"\$ZHYPER_PORT: expected a port number in \[1, 65535\], got '0'"),
])
def test_user_errors_are_named(capsys, monkeypatch, argv, env, message):
    if env is not None:
        monkeypatch.setenv("ZHYPER_PORT", env)
    assert main(["train", "--dry-run", *argv]) == 2
    assert re.search(rf"zhyper train: error: {message}", capsys.readouterr().err)


def test_bad_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dry-run", "--num-gpus", "0"])
    assert exc.value.code == 2 and "--num-gpus" in capsys.readouterr().err


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom zhyper.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('HEAVY', sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "usage: zhyper train" in out.stdout and out.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.slow
def test_real_tiny_run(tmp_path):
    """Two CPU ranks through the real launcher, cpu-tiny.yaml (4 steps)."""
    from tests.training.test_train_deepspeed import _env

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "zhyper", "train", "--num-gpus", "2", "--config",
           str(REPO / "launch/configs/cpu-tiny.yaml"), f"output_dir={out}", "eval.every=0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(json.loads((out / "losses.json").read_text())["losses"]) == 4
