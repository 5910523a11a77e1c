"""Crash-safe DeepSpeed checkpoints, checked before they are trusted, loaded without running pickled code.

Saving: DeepSpeed writes ``<dir>/<tag>/`` (``save_latest=False``); each rank adds its RNG state
(safetensors); after every rank is done, rank 0 writes ``manifest.json`` (every file of the tag with
its size and SHA-256) and only then replaces ``latest`` atomically. A crash or ``kill -9`` at any
point leaves ``latest`` on the previous complete checkpoint.

Loading: the tag's manifest is verified first (missing, truncated or altered files are named, with
the newest complete checkpoint to fall back to: ``--resume <tag>``). DeepSpeed's own loader calls
``torch.load(weights_only=False)``, which runs any code a planted ``__reduce__`` carries; the engine's
checkpoint engine is replaced by one that loads with ``weights_only=True`` and allows, beyond
tensors and plain containers, only the few DeepSpeed classes its checkpoints hold (``_allowed``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from pathlib import Path

import torch

from zhyper.io import atomic_write

log = logging.getLogger(__name__)
LATEST = "latest"
MANIFEST = "manifest.json"
STATE = "zhyper_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, damaged or holds something that must not be loaded."""


def _allowed():
    """DeepSpeed classes its own checkpoints pickle besides tensors and containers (data only, no code).

    - ``LossScaler`` / ``DynamicLossScaler``: the loss scale (ZeRO-1/2/3 and fp16 optimizer state);
    - ``ZeroStageEnum``: the stage a ZeRO optimizer state was written under;
    - ``fragment_address``: a dataclass of two ints (numel, start) that ZeRO-1/2 and the bf16
      optimizer store per parameter in ``param_slice_mappings`` (``zero_pp_rank_*_optim_states.pt``).
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _offending(err: Exception) -> str:
    """The object torch's weights-only unpickler refused, from its message (``GLOBAL module.name``)."""
    import re

    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"the Python object {found.group(1)}"
    reason = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line), text.splitlines()[0])
    return f"something the weights-only unpickler refuses ({reason[:300]})"


def safe_checkpoint_engine(engine):
    """Give ``engine`` a checkpoint engine that loads with ``weights_only=True`` and the allow-list."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            try:
                with torch.serialization.safe_globals(_allowed()):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # torch raises UnpicklingError with the offending global's name
                raise CheckpointError(f"refusing to load {path}: it holds {_offending(err)}, outside zhyper's "
                                      f"allow-list of tensors, containers and {[c.__name__ for c in _allowed()]} "
                                      "(loading it could run code). If you wrote this file yourself with another "
                                      "DeepSpeed version, report the class named here") from None

    old = engine.checkpoint_engine
    engine.checkpoint_engine = SafeTorchCheckpointEngine(getattr(old, "config_params", None))
    return engine


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> dict:
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    atomic_write(folder / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")
    return files


def verify(folder: Path) -> str | None:
    """None if ``folder`` matches its manifest, else a sentence naming the first problem."""
    manifest = folder / MANIFEST
    if not folder.is_dir():
        return f"{folder} does not exist"
    if not manifest.is_file():
        return f"{folder} has no {MANIFEST} (the save did not finish)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{manifest} is malformed"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, the manifest records {want['bytes']} (truncated?)"
        if _sha256(path) != want["sha256"]:
            return f"{path} differs from the manifest's SHA-256 (altered after saving)"
    return None


def tags(ckpt_dir: str | Path) -> list[str]:
    """The step tags under ``ckpt_dir``, newest first."""
    found = [p.name for p in Path(ckpt_dir).glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(found, key=lambda t: int(t[4:]), reverse=True)


def latest_tag(ckpt_dir: str | Path) -> str | None:
    path = Path(ckpt_dir) / LATEST
    return path.read_text().strip() if path.is_file() else None


def _check_finite(engine, step: int) -> None:
    for name, p in engine.module.named_parameters():
        if p.requires_grad:
            local = getattr(p, "ds_tensor", p)  # this rank's shard under ZeRO-3
            if local.numel() and not torch.isfinite(local).all():
                raise FloatingPointError(f"trained parameter {name} holds NaN or inf at step {step}; no checkpoint is "
                                         "written (lower train.lr, or check the data)")


def save(engine, ckpt_dir: str | Path, step: int, client_state: dict, rank: int) -> Path:
    """Save checkpoint ``step<step>``; once every rank is done, write its manifest and point ``latest`` at it.

    A write that fails for want of space (``disk_full``) removes the step folder this save created (never
    one that was there before) and raises OSError(ENOSPC) saying "disk full" with the folder; ``latest``
    still names the previous complete checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    folder = ckpt_dir / f"step{step}"
    _check_finite(engine, step)
    existed = folder.exists()
    try:
        _write(engine, ckpt_dir, folder, client_state, rank)
    except (OSError, RuntimeError) as err:
        free = disk_full(err, folder, engine)
        if free is None:
            raise
        if not existed:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)  # this save's own partial folder
        raise OSError(errno.ENOSPC, f"disk full: checkpoint {folder} could not be written ({free:,} bytes free "
                      f"on its disk); {'the incomplete folder was removed; ' if not existed else ''}`latest` "
                      f"still names {latest_tag(ckpt_dir) or 'no checkpoint'}. Free space (or choose an "
                      "output_dir on a larger disk) and continue with --resume") from err
    log.info("saved DeepSpeed checkpoint %s", folder)
    return folder


def _write(engine, ckpt_dir: Path, folder: Path, client_state: dict, rank: int) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    engine.save_checkpoint(str(ckpt_dir), tag=folder.name, client_state=client_state, save_latest=False,
                           exclude_frozen_parameters=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(folder / f"rng_rank{rank}.safetensors"))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        atomic_write(folder / STATE, json.dumps(client_state, indent=1))
        write_manifest(folder)  # only now is the checkpoint complete ...
        atomic_write(ckpt_dir / LATEST, folder.name)  # ... and only then does resume look at it
    if dist.is_initialized():
        dist.barrier()


def disk_full(err: BaseException, folder: Path, engine=None) -> int | None:
    """The free bytes on ``folder``'s disk when ``err`` (raised while writing it) is a full disk, else None.

    An OSError carries ENOSPC / EDQUOT; torch's zip writer drops the errno ("unexpected pos", "file write
    failed"), so a failure while writing counts as a full disk when the space left is less than this
    rank's trained parameters take in float32 (the least a checkpoint of them writes)."""
    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return _free_bytes(folder)
        cause = cause.__cause__ or cause.__context__
    free = _free_bytes(folder)
    if free is None or engine is None:
        return None
    local = [getattr(p, "ds_tensor", p) for p in engine.module.parameters() if p.requires_grad]
    return free if free < 4 * sum(t.numel() for t in local) else None


def _free_bytes(folder: Path) -> int | None:
    import shutil

    for path in (folder, *folder.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return None


# run-config sections a resumed run must keep: they define the model whose state the checkpoint holds
MODEL_SECTIONS = ("method", "base_model", "base_revision", "tiny", "model")


def run_record(cfg, out_dir: str | Path) -> dict:
    """What every checkpoint records of the run that wrote it (``client_state["run"]``): the id of the run
    owning ``out_dir`` (``output.run_id``) and the model's settings, flattened (``model.rank`` -> "8")."""
    from zhyper.training.config import flatten
    from zhyper.training.output import run_id

    settings = cfg.to_dict()
    return {"run_id": run_id(Path(out_dir)), "settings": flatten({k: settings[k] for k in MODEL_SECTIONS})}


def check_resumable(ckpt_dir: str | Path, tag: str, cfg, out_dir: str | Path) -> None:
    """Before anything loads: refuse (CheckpointError) checkpoint ``tag`` when another run wrote it (a step
    folder copied in: its MLflow run, losses and sampler belong to that run) or when a model setting
    differs from the one it was trained with, naming each key. Checkpoints without a record (written
    before they had one) and unreadable states (``choose`` names those) pass."""
    try:
        recorded = json.loads((Path(ckpt_dir) / tag / STATE).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, dict):
        return
    now = run_record(cfg, out_dir)
    if recorded.get("run_id") and now["run_id"] and recorded["run_id"] != now["run_id"]:
        raise CheckpointError(f"--resume: checkpoint {Path(ckpt_dir) / tag} was written by another run (run id "
                              f"{recorded['run_id']}; {out_dir} belongs to run {now['run_id']}): a step folder copied "
                              "from another run cannot be continued here, its MLflow run, losses and data order "
                              "belong to that run. Resume it in its own output_dir, or remove the copied "
                              f"checkpoint from {ckpt_dir}")
    then = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    changed = [k for k in sorted(set(then) & set(now["settings"])) if then[k] != now["settings"][k]]
    if changed:
        was, now_ = (", ".join(f"{k}={values[k]}" for k in changed) for values in (then, now["settings"]))
        raise CheckpointError(f"--resume: checkpoint {tag} was trained with {was}, but this run's config has "
                              f"{now_}; a resumed run keeps the model's settings: pass "
                              f"{' '.join(f'{k}={then[k]}' for k in changed)} (or train the new settings in another "
                              "output_dir)")


def choose(ckpt_dir: str | Path, tag: str | None = None) -> str:
    """The tag to resume from (``tag``, else ``latest``), verified against its manifest."""
    ckpt_dir = Path(ckpt_dir)
    chosen = tag if tag not in (None, LATEST) else latest_tag(ckpt_dir)
    if chosen is None:
        raise CheckpointError(f"--resume: no {LATEST!r} file in {ckpt_dir}; nothing to resume from")
    problem = verify(ckpt_dir / chosen)
    if problem is None:
        return chosen
    good = next((t for t in tags(ckpt_dir) if t != chosen and verify(ckpt_dir / t) is None), None)
    hint = (f"the newest complete checkpoint is {good}: resume from it with `--resume {good}`" if good
            else "no complete checkpoint is left to fall back to")
    raise CheckpointError(f"--resume: checkpoint {chosen} is damaged: {problem}; {hint}")


def load(engine, ckpt_dir: str | Path, rank: int, sampler=None, tag: str | None = None) -> dict:
    """Verify and load a checkpoint (``latest`` by default); restore this rank's RNG and ``sampler``;
    return the client state."""
    from safetensors.torch import load_file

    chosen = choose(ckpt_dir, tag)
    safe_checkpoint_engine(engine)
    _, client_state = engine.load_checkpoint(str(ckpt_dir), tag=chosen, load_module_strict=False)
    if client_state is None:
        raise CheckpointError(f"--resume: DeepSpeed could not load {Path(ckpt_dir) / chosen}")
    rng = load_file(str(Path(ckpt_dir) / chosen / f"rng_rank{rank}.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    if sampler is not None:
        sampler.load_state_dict(client_state["sampler"])
    log.info("resumed from %s", Path(ckpt_dir) / chosen)
    return client_state
