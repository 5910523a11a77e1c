"""Crash-safe DeepSpeed checkpoints and the exact-resume state around them.

DeepSpeed writes ``<dir>/<tag>/`` and then a ``latest`` file naming the tag. A crash while
the tag folder is half-written must not leave ``latest`` pointing at it, so we save with
``save_latest=False``, wait for every rank, and only then replace ``latest`` atomically
(temp file + os.replace). Each rank also stores its own RNG state (torch CPU and, when
present, the accelerator's) next to the shards, so dropout and NEFTune noise resume exactly.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from zhyper.io import atomic_write

log = logging.getLogger(__name__)
LATEST = "latest"


def save(engine, ckpt_dir: str | Path, step: int, client_state: dict, rank: int) -> Path:
    """Save a DeepSpeed checkpoint ``step<step>`` and, once all ranks are done, point ``latest`` at it."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False,
                           exclude_frozen_parameters=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(ckpt_dir / tag / f"rng_rank{rank}.safetensors"))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        atomic_write(ckpt_dir / LATEST, tag)
        atomic_write(ckpt_dir / tag / "zhyper_state.json", json.dumps(client_state, indent=1))
    if dist.is_initialized():
        dist.barrier()
    log.info("saved DeepSpeed checkpoint %s", ckpt_dir / tag)
    return ckpt_dir / tag


def latest_tag(ckpt_dir: str | Path) -> str | None:
    path = Path(ckpt_dir) / LATEST
    return path.read_text().strip() if path.is_file() else None


def load(engine, ckpt_dir: str | Path, rank: int, sampler=None) -> dict:
    """Load the checkpoint ``latest`` points at; restore this rank's RNG (and ``sampler``); return the client state."""
    from safetensors.torch import load_file

    tag = latest_tag(ckpt_dir)
    if tag is None:
        raise ValueError(f"--resume: no {LATEST!r} file in {ckpt_dir}; nothing to resume from")
    _, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=False)
    if client_state is None:
        raise ValueError(f"--resume: DeepSpeed could not load {Path(ckpt_dir) / tag}")
    rng = load_file(str(Path(ckpt_dir) / tag / f"rng_rank{rank}.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    if sampler is not None:
        sampler.load_state_dict(client_state["sampler"])
    log.info("resumed from %s", Path(ckpt_dir) / tag)
    return client_state
