"""``zhyper train``: the DeepSpeed recipe for users who do not type ``deepspeed``.

    zhyper train [--num-gpus N] [--master-port PORT] [--config RUN.yaml] [--ds_config DS.json]
                 [--hostfile FILE] [--resume [TAG]] [--overwrite] [--dry-run] [key=value ...]

runs exactly what ``bash make.sh train`` runs, the real DeepSpeed launcher::

    deepspeed --num_gpus N --master_port PORT launch/train.py --ds_config DS --config RUN key=value ...

with the same defaults (2 GPUs, launch/configs/zero2.json, launch/configs/default.yaml, a free port
unless ``$ZHYPER_PORT`` is set, OMP_NUM_THREADS=1 and quiet tokenizers unless set). ``make.sh`` also
turns the hub offline for its sandbox; ``zhyper train`` leaves that to the user's environment. ``--dry-run`` checks the run config (including, for ``data.source: tasks``, that every task's rows
can be had) and prints the command instead of running it. The launcher
replaces nothing: its exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from zhyper.validate import in_range, option, positive_int

REPO = Path(__file__).resolve().parents[2]  # a clone (or editable install): launch/ sits beside zhyper/
RECIPE = REPO / "launch" / "train.py"
DEFAULT_DS = REPO / "launch" / "configs" / "zero2.json"
DEFAULT_CONFIG = REPO / "launch" / "configs" / "default.yaml"
RECIPE_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-gpus", "--num_gpus", type=option(positive_int, int), default=2,
                        help="processes (GPUs) on this machine (default 2, as `bash make.sh train`)")
    parser.add_argument("--master-port", "--master_port", type=option(in_range, int, low=1, high=65535), default=None,
                        help="rendezvous port (default: $ZHYPER_PORT, else a free one)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="run YAML (default launch/configs/default.yaml)")
    parser.add_argument("--ds_config", "--ds-config", default=str(DEFAULT_DS),
                        help="DeepSpeed JSON (default launch/configs/zero2.json)")
    parser.add_argument("--hostfile", default=None, help="DeepSpeed hostfile for a multi-node run "
                        "(launch/configs/hostfile.example); --num-gpus is then per node")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="TAG",
                        help="continue from <output_dir>/checkpoints/latest (or the checkpoint TAG)")
    parser.add_argument("--overwrite", action="store_true", help="passed to launch/train.py")
    parser.add_argument("--dry-run", action="store_true", help="print the deepspeed command, run nothing")
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. train.lr=5e-4 data.k=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_launcher() -> str:
    """The ``deepspeed`` script of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("deepspeed")
    found = str(beside) if beside.is_file() else shutil.which("deepspeed")
    if found is None:
        raise FileNotFoundError("the deepspeed launcher was found neither beside this Python "
                                f"({beside}) nor on PATH; install zhyper's dependencies (`bash make.sh setup`)")
    return found


def _port(given: int | None) -> int:
    if given is not None:
        return given
    env = os.environ.get("ZHYPER_PORT")
    if not env:
        return _free_port()
    if not env.isdigit() or not 0 < int(env) < 65536:
        raise ValueError(f"$ZHYPER_PORT: expected a port number in [1, 65535], got {env!r}")
    return int(env)


def command(args: argparse.Namespace) -> list[str]:
    """The launcher's argument list for ``args`` (what ``--dry-run`` prints)."""
    for name, path in (("--config", args.config), ("--ds_config", args.ds_config), ("the recipe", RECIPE)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path} is not a file")
    cmd = [deepspeed_launcher()] + (["--hostfile", args.hostfile] if args.hostfile else [])
    cmd += ["--num_gpus", str(args.num_gpus), "--master_port", str(_port(args.master_port)), str(RECIPE),
            "--ds_config", str(args.ds_config), "--config", str(args.config)]
    cmd += (["--resume", args.resume] if args.resume else []) + (["--overwrite"] if args.overwrite else [])
    return cmd + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    cmd = command(args)
    from zhyper.training.config import load_config

    load_config(args.config, list(args.overrides))  # a bad key, or task rows that cannot be had: one line, here
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    env = dict(os.environ)
    for key, value in RECIPE_ENV.items():  # what make.sh sets; the user's own settings win
        env.setdefault(key, value)
    return subprocess.call(cmd, cwd=REPO, env=env)
