"""The zhyper checkpoint folder: ``zhyper_config.json`` + ``model.safetensors``, written atomically.

Loading checks, in this order and before the base model's weights are read: the config file's
fields (errors name the file and the field), the weights file (``safe_open``: a truncated or
corrupt file is named; its tensor names and shapes must be the recorded ones), then the base's
``model_type`` and layout from its config alone (``AutoConfig`` and a weightless meta copy).
Non-finite tensors are refused on save and on load, naming the tensor. Nothing is ever written
into the folder a model was read from (``check_output_folder``).

``zhyper_config.json`` records the ZhyperConfig, the context size, the base model (id, revision,
model type), the per-module layout (name, grid position, in/out features, modulation shape) and
the library version, and the weights file's size and SHA-256 (``files``: a flipped byte or a
file swapped in from another checkpoint is refused on load, naming the file; ``verify=False``
opts out). ``model.safetensors`` holds only the trained tensors: the hypernetwork
(``hypernet.*``) and the shared factors (``base.<module>.lora_A`` / ``lora_B``). No pickle.
``README.md`` is the model card (``zhyper.card``), written unless the folder holds a README.md zhyper did
not write; ``zhyper_config.json`` also records its license and, for a training run's ``final/``, the run
config. A hub id (``org/name``) is resolved to a folder of huggingface_hub's cache by ``zhyper.hub``, then
loaded here with the same checks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from zhyper.io import atomic_folder

logger = logging.getLogger(__name__)

CONFIG_FILE = "zhyper_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
_KEPT_CARD = "%s is not a model card zhyper wrote (or it was edited): kept as it is, no card written"


def layout_record(layout) -> dict:
    """JSON-able description of an AdapterLayout."""
    return {"n_layers": layout.n_layers, "module_types": list(layout.module_types),
            "modules": [{"name": m.name, "layer_index": m.layer_index, "module_type": m.module_type,
                         "in_features": m.in_features, "out_features": m.out_features,
                         "modulation_shape": list(m.modulation_shape)} for m in layout]}


def layout_difference(recorded: dict, layout) -> str | None:
    """None if ``layout`` has the recorded modules and shapes, else a sentence naming the first difference."""
    now = layout_record(layout)
    old_mods = {m["name"]: m for m in recorded["modules"]}
    new_mods = {m["name"]: m for m in now["modules"]}
    missing = [n for n in old_mods if n not in new_mods]
    if missing:
        return f"module {missing[0]} of the checkpoint is not in this base model ({len(missing)} missing)"
    extra = [n for n in new_mods if n not in old_mods]
    if extra:
        return f"module {extra[0]} of this base model is not in the checkpoint ({len(extra)} extra)"
    for name, old in old_mods.items():
        new = new_mods[name]
        for key in ("in_features", "out_features", "modulation_shape", "layer_index", "module_type"):
            if old[key] != new[key]:
                return f"module {name}: {key} is {old[key]} in the checkpoint but {new[key]} in this base model"
    if recorded["n_layers"] != now["n_layers"] or recorded["module_types"] != now["module_types"]:
        return (f"grid differs: checkpoint {recorded['n_layers']} layers x {recorded['module_types']}, "
                f"base model {now['n_layers']} layers x {now['module_types']}")
    return None


def write_config(folder: Path, record: dict) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **record}, indent=2) + "\n")


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_record(record: dict, path: Path) -> None:
    """The fields ``load_checkpoint`` reads, with their types; an error names the file and the field."""

    def bad(field: str, expected: str, got) -> ValueError:
        shown = repr(got) if len(repr(got)) <= 80 else f"{type(got).__name__} {repr(got)[:80]}..."
        return ValueError(f"{path}: field {field!r}: expected {expected}, got {shown}")

    for key in ("config", "layout", "tensors"):
        if key not in record:
            raise ValueError(f"{path}: missing field {key!r} (a zhyper checkpoint records config, base_model, "
                             f"layout and tensors); fields present: {sorted(record)}")
    if not isinstance(record["config"], dict):
        raise bad("config", "a mapping of ZhyperConfig fields", record["config"])
    base = record.get("base_model")
    if base is not None:
        if not isinstance(base, dict):
            raise bad("base_model", "a mapping with id, revision, model_type", base)
        for key in ("id", "revision", "model_type"):
            if base.get(key) is not None and not isinstance(base[key], str):
                raise bad(f"base_model.{key}", "a string or null", base[key])
    layout = record["layout"]
    if not isinstance(layout, dict):
        raise bad("layout", "a mapping with n_layers, module_types, modules", layout)
    if not _is_int(layout.get("n_layers"), 1):
        raise bad("layout.n_layers", "a positive int", layout.get("n_layers"))
    types = layout.get("module_types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        raise bad("layout.module_types", "a non-empty list of module type names", types)
    modules = layout.get("modules")
    if not isinstance(modules, list) or not modules:
        raise bad("layout.modules", "a non-empty list of adapted modules", modules)
    for i, m in enumerate(modules):
        where = f"layout.modules[{i}]"
        if not isinstance(m, dict):
            raise bad(where, "a mapping", m)
        for key, ok, expected in (
                ("name", lambda v: isinstance(v, str) and v, "a module name"),
                ("module_type", lambda v: isinstance(v, str) and v, "a module type name"),
                ("layer_index", lambda v: _is_int(v, 0), "an int >= 0"),
                ("in_features", lambda v: _is_int(v, 1), "a positive int"),
                ("out_features", lambda v: _is_int(v, 1), "a positive int"),
                ("modulation_shape", lambda v: isinstance(v, list) and v and all(_is_int(x, 1) for x in v),
                 "a list of positive ints")):
            if key not in m:
                raise ValueError(f"{path}: field {where}.{key} is missing")
            if not ok(m[key]):
                raise bad(f"{where}.{key}", expected, m[key])
    if record.get("license") is not None and not isinstance(record["license"], str):
        raise bad("license", "a license id (a string) or null", record["license"])
    if record.get("training") is not None and not isinstance(record["training"], dict):
        raise bad("training", "the run config (a mapping) or null", record["training"])
    tensors = record["tensors"]
    if not isinstance(tensors, dict) or not tensors:
        raise bad("tensors", "a non-empty mapping of tensor name -> shape", tensors)
    for name, shape in tensors.items():
        if not isinstance(shape, list) or not all(_is_int(x, 0) for x in shape):
            raise bad(f"tensors.{name}", "a shape (list of ints)", shape)


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed and checked ``zhyper_config.json`` of a checkpoint folder."""
    path = Path(folder) / CONFIG_FILE
    if Path(folder).is_file():
        raise NotADirectoryError(f"{folder} is a file; expected a zhyper checkpoint folder (holding {CONFIG_FILE})")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected the checkpoint's {CONFIG_FILE} file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a zhyper checkpoint folder")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); expected the JSON zhyper writes") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; the file is "
                         "damaged or was not written by zhyper (save the checkpoint again)") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object of checkpoint fields, got {type(record).__name__}")
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: field 'format_version' is {record.get('format_version')!r}, expected the "
                         f"supported {FORMAT_VERSION}")
    _check_record(record, path)
    return record


def nonfinite(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are NaN or +-inf (0 for integer tensors)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    return int((~torch.isfinite(tensor.detach())).sum())


def check_finite(tensors, what: str) -> None:
    """Raise naming the first of ``tensors`` ({name: tensor}) that holds a NaN or an inf."""
    for name, tensor in tensors.items():
        bad = nonfinite(tensor)
        if bad:
            raise ValueError(f"{what}: tensor {name} has {bad} non-finite values (NaN/inf) of {tensor.numel()}")


def check_output_folder(model, out_dir: str | os.PathLike, action: str, allow_checkpoint: bool = False) -> None:
    """Refuse to write into a folder this model was read from (its checkpoint, its hub cache, its base's folder).

    ``allow_checkpoint``: ``save_pretrained`` may rewrite the checkpoint it was loaded from (its
    own two files, replaced atomically), but never a folder inside it or the base's folder.
    """
    from zhyper.io import same_folder

    out = Path(out_dir)
    hub = getattr(model, "checkpoint_hub", None)
    if hub is not None and same_folder(hub["storage"], out):
        raise ValueError(f"{action}: output folder {out} is in the hub cache of {hub['repo_id']} ({hub['storage']}), "
                         "which this model was loaded from; writing there would change the cached files of a hub "
                         "commit. Choose another output folder")
    checkpoint = getattr(model, "checkpoint_folder", None)
    if checkpoint is not None and same_folder(checkpoint, out):
        if not (allow_checkpoint and out.resolve() == Path(checkpoint).resolve()):
            raise ValueError(f"{action}: output folder {out} is the checkpoint folder {checkpoint} this model was "
                             "loaded from (or inside it); writing there would mix other files into (or overwrite) "
                             "the checkpoint. Choose another output folder")
    base = getattr(model, "base_folder", None)
    if base is not None and same_folder(base, out):
        raise ValueError(f"{action}: output folder {out} is the base model's folder {base} (or inside it), which "
                         "this model was read from; writing there could overwrite the base model's files. Choose "
                         "another output folder")


FINGERPRINT_VALUES = 4096  # leading values hashed of each fingerprinted tensor


def fingerprint_tensors(model) -> list:
    """(name, parameter) of the base's first, middle and last frozen tensors, sorted by name."""
    frozen = sorted(((n, p) for n, p in model.base.named_parameters() if not p.requires_grad), key=lambda t: t[0])
    return [frozen[0], frozen[len(frozen) // 2], frozen[-1]] if frozen else []


def base_fingerprint(model) -> dict | None:
    """A fingerprint of the frozen base's weights: the names of its first, middle and last frozen tensors
    (sorted by name) and a SHA-256 of their shapes and leading values, rounded to bfloat16 (the same for
    a base loaded in fp32, fp16 or bf16). None when the weights are not materialised (meta device)."""
    import hashlib

    picked = fingerprint_tensors(model)
    if not picked or any(p.is_meta for _, p in picked):
        return None
    h = hashlib.sha256()
    for name, p in picked:
        values = p.detach().reshape(-1)[:FINGERPRINT_VALUES].to("cpu", torch.bfloat16).view(torch.int16)
        h.update(f"{name}:{tuple(p.shape)}:".encode())
        h.update(values.numpy().tobytes())
    return {"tensors": [n for n, _ in picked], "values_per_tensor": FINGERPRINT_VALUES, "sha256": h.hexdigest()}


def check_base_fingerprint(folder: Path, record: dict, model, strict: bool = False) -> None:
    """Compare the recorded fingerprint of the base with ``model``'s: a warning on mismatch, an error if ``strict``."""
    recorded = (record.get("base_model") or {}).get("fingerprint")
    if not recorded:
        if strict:
            raise ValueError(f"checkpoint {folder} records no fingerprint of its base model (written before zhyper "
                             "recorded one, or from a weightless base): strict_base cannot check the base")
        return
    current = base_fingerprint(model)
    if current is None or current.get("sha256") == recorded.get("sha256"):
        return
    message = (f"checkpoint {folder} was trained on a base model whose weights differ from the one it is loaded on "
               f"(same shapes, other values: fingerprint of {recorded.get('tensors')} "
               f"{recorded.get('sha256', '')[:12]} recorded, {current['sha256'][:12]} now); the modulations were "
               "learnt for the other weights. Load it on the base it was trained on")
    if strict:
        raise ValueError(message)
    logger.warning(message + " (strict_base=True makes this an error)")


def save_checkpoint(model, folder: str | os.PathLike, license: str | None = None, repo_id: str | None = None) -> Path:
    """Write ``model`` (a ZhyperModel) into ``folder`` atomically, with its model card; returns the folder.

    Refuses (before writing anything) non-finite trained tensors, the base model's folder and the hub cache.
    ``license``: the card's (default: the model's recorded one, else the base's); ``repo_id``: the hub id the
    card's loading example names (``push_to_hub``). A ``README.md`` zhyper did not write is kept (no card).
    """
    from safetensors.torch import save_file

    from zhyper import __version__
    from zhyper.card import CARD_FILE, card_text, check_license, may_write_card
    from zhyper.checksums import file_records

    folder = Path(folder)
    check_output_folder(model, folder, "save_pretrained", allow_checkpoint=True)
    license = check_license(license) or check_license(getattr(model, "license", None))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    check_finite(tensors, f"save_pretrained: nothing was written to {folder}; the model")
    record = checkpoint_record(model, tensors, license)
    card = may_write_card(folder)
    with atomic_folder(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "zhyper_version": __version__})
        record = {"format_version": FORMAT_VERSION, **record, "files": file_records(tmp, [WEIGHTS_FILE])}
        write_config(tmp, record)  # the files' checksums are checked on load
        if card:
            (tmp / CARD_FILE).write_text(card_text(record, repo_id=repo_id, folder=folder), encoding="utf-8")
    if not card:
        logger.warning(_KEPT_CARD, folder / CARD_FILE)
    return folder


def checkpoint_record(model, tensors: dict, license: str | None = None) -> dict:
    """What ``zhyper_config.json`` records of ``model`` (its trained ``tensors`` given), less the files' checksums."""
    from zhyper import __version__

    base_cfg = getattr(model.base, "config", None)
    training = getattr(model, "training_config", None)
    record = {
        "zhyper_version": __version__,
        "config": {**model.config.to_dict(), "context_dim": model.context_dim},
        "base_model": {"id": model.base_model_id, "revision": model.base_revision,
                       "model_type": getattr(base_cfg, "model_type", None),
                       "architectures": getattr(base_cfg, "architectures", None) or [type(model.base).__name__],
                       "fingerprint": getattr(model, "base_fingerprint", None) or base_fingerprint(model)},
        "layout": layout_record(model.layout),
        "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
    }
    if license is not None:
        record["license"] = license
    if training is not None:  # the run config of launch/train.py (write_final), as plain JSON
        record["training"] = json.loads(json.dumps(training, default=str))
    return record


def check_weights_file(folder: Path, record: dict) -> Path:
    """Open ``model.safetensors`` (header only) and compare its tensors with the recorded ones."""
    from safetensors import SafetensorError, safe_open

    path = folder / WEIGHTS_FILE
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected the checkpoint's weights file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the checkpoint {folder} has no weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({err}); the checkpoint cannot be loaded, save it "
                         "again") from None
    recorded = record["tensors"]
    missing, extra = sorted(set(recorded) - set(shapes)), sorted(set(shapes) - set(recorded))
    if missing or extra:
        raise ValueError(f"{path} does not hold the tensors {folder / CONFIG_FILE} records: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}")
    for name, shape in recorded.items():
        if shapes[name] != list(shape):
            raise ValueError(f"{path}: tensor {name} has shape {tuple(shapes[name])}, but {folder / CONFIG_FILE} "
                             f"records {tuple(shape)}")
    return path


def _reloadable(base_id: str) -> bool:
    """False for a random base of the training recipe (tests): never saved, so never reloadable."""
    from zhyper.bases import find

    base = find(base_id)
    return base is None or base.reloadable


def _unreadable_base(folder: Path, base_info: dict, base, err: Exception, given: bool) -> Exception:
    """The error for a base whose config cannot be read: advice to pass a base when none was given, and for a
    given one what is wrong with it (a path that does not exist is named as such, not as a bad hub id)."""
    name = str(base)
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not given:
        return ValueError(f"checkpoint {folder}: cannot read the config of the base model {name!r} ({reason}); "
                          "pass base_model= (--base on the command line) a local copy of the base it was trained on")
    trained_on = f" ({base_info['id']!r})" if base_info.get("id") else ""
    expected = f"expected a local HF model folder or a hub id of the base the checkpoint was trained on{trained_on}"
    if (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1) and not Path(name).exists():
        return FileNotFoundError(f"base model {name} (base_model= / --base) does not exist; {expected}")
    return ValueError(f"checkpoint {folder}: cannot read the config of the base model {name!r} given as "
                      f"base_model= (--base) ({reason}); {expected}")


def _check_base_before_loading(folder: Path, record: dict, config, base, revision: str | None,
                               given: bool = False) -> None:
    """model_type and layout of ``base`` (a path / hub id) from its config alone, before its weights load.
    ``given``: the caller passed ``base`` (base_model= / --base); else it is the one the checkpoint records."""
    from transformers import AutoConfig

    from zhyper.base_model import resolve_base

    base_info = record.get("base_model") or {}
    try:
        base_cfg = AutoConfig.from_pretrained(resolve_base(base), revision=revision)
    except (OSError, ValueError) as err:
        raise _unreadable_base(folder, base_info, base, err, given) from None
    _check_model_type(folder, base_info, getattr(base_cfg, "model_type", None), str(base))
    try:  # the layout on a weightless (meta) copy; a model that cannot be built so is checked after loading
        from zhyper.bases import meta_model
        from zhyper.layers.inject import inject_zlinear

        meta = meta_model(base_cfg)
        layout = inject_zlinear(meta, config.target_modules, rank=config.rank, mode=config.mode, alpha=config.alpha,
                                rslora=config.rslora, dropout=config.dropout)
    except Exception as err:  # noqa: BLE001 - best effort; the same check runs on the loaded model
        logger.debug("layout pre-check of %s skipped: %s", base, err)
        return
    diff = layout_difference(record["layout"], layout)
    if diff is not None:
        raise ValueError(f"checkpoint {folder} does not fit the base model {str(base)!r}: {diff}")


def _check_model_type(folder: Path, base_info: dict, model_type: str | None, base_name: str) -> None:
    recorded = base_info.get("model_type")
    if recorded and model_type and recorded != model_type:
        trained_on = f" ({base_info['id']!r})" if base_info.get("id") else ""
        raise ValueError(f"checkpoint {folder} was trained on a {recorded!r} base model{trained_on}, "
                         f"but the base model {base_name} is a {model_type!r} model; pass base_model= the base it "
                         "was trained on")


def _check_tensors(folder: Path, weights: Path, tensors: dict, expected: dict) -> None:
    """The checkpoint's tensors are exactly the model's trained ones, of their shapes, and finite."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"checkpoint {folder}: tensors missing {missing[:4]}, unexpected {extra[:4]}")
    for name, target in expected.items():
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise ValueError(f"checkpoint {folder}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                             f"the model expects {tuple(target.shape)}")
    check_finite(tensors, f"checkpoint {weights}")


def load_checkpoint(cls, folder: str | os.PathLike, base_model=None, dtype=None, tokenizer=None,
                    strict_base: bool = False, verify: bool | None = None):
    """Rebuild a ZhyperModel from ``folder``; the base is ``base_model`` or the recorded id.

    Everything that can be checked without the base model's weights is checked first: the
    config file's fields, the weights file (header, tensor names and shapes), and the base's
    model_type and layout from its config. Once the base is loaded, its weights are compared with
    the fingerprint the checkpoint records: a warning when they differ, an error with ``strict_base``.
    The weights file's SHA-256 must be the recorded one (``zhyper.checksums``; ``verify=False`` or
    ``ZHYPER_VERIFY_CHECKSUMS=0`` skips this for weights edited on purpose; older checkpoints record none).
    """
    from safetensors.torch import load_file
    from torch import nn

    from zhyper.bases import hub_revision
    from zhyper.checksums import verify_files
    from zhyper.config import ZhyperConfig

    folder = Path(folder)
    record = read_config(folder)
    try:
        config = ZhyperConfig.from_dict(record["config"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: field 'config': {err}") from None
    weights = check_weights_file(folder, record)
    verify_files(folder, record.get("files"), folder / CONFIG_FILE, verify)
    base_info = record.get("base_model") or {}
    if base_model is None:
        base_id = base_info.get("id")
        if not base_id:
            raise ValueError(f"{folder}: the checkpoint records no base model id; pass base_model=")
        if not _reloadable(base_id):
            raise ValueError(f"{folder} was trained on {base_id!r}, the randomly initialised test base of the "
                             "training recipe: its weights were never saved, so the checkpoint cannot be reloaded "
                             "from its recorded base. Pass base_model= the same base model (e.g. rebuilt with the "
                             "run's seed), or --base on the command line")
        revision = hub_revision(base_info.get("revision"))
        _check_base_before_loading(folder, record, config, base_id, revision)
        model = cls.from_base(base_id, config, tokenizer=tokenizer, dtype=dtype, revision=revision)
    else:
        if isinstance(base_model, (str, os.PathLike)):
            _check_base_before_loading(folder, record, config, base_model, None, given=True)
        elif isinstance(base_model, nn.Module):
            _check_model_type(folder, base_info, getattr(getattr(base_model, "config", None), "model_type", None),
                              f"given ({type(base_model).__name__})")
        model = cls.from_base(base_model, config, tokenizer=tokenizer, dtype=dtype)
        if base_info.get("id") and model.base_model_id is None:
            model.base_model_id, model.base_revision = base_info.get("id"), base_info.get("revision")
    diff = layout_difference(record["layout"], model.layout)
    if diff is not None:
        raise ValueError(f"checkpoint {folder} does not fit this base model: {diff}")
    check_base_fingerprint(folder, record, model, strict=strict_base)
    tensors = load_file(str(weights))
    expected = model.trainable_state_dict()
    _check_tensors(folder, weights, tensors, expected)
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])
    return _provenance(model, folder, record)


def _provenance(model, folder: Path, record: dict):
    """Record on ``model`` the folder it was read from, and its license and run config (save_pretrained keeps them)."""
    model.checkpoint_folder = folder.resolve()
    model.license, model.training_config = record.get("license"), record.get("training")
    return model


def write_card(folder: str | os.PathLike, evaluation: dict | None = None, repo_id: str | None = None) -> Path | None:
    """Write (atomically) the model card of the checkpoint in ``folder`` (``zhyper.card``); None, and nothing
    written, when ``folder`` holds a ``README.md`` zhyper did not write (kept, with a warning)."""
    from zhyper.card import CARD_FILE, card_text, may_write_card
    from zhyper.io import atomic_write

    folder = Path(folder)
    if not may_write_card(folder):
        logger.warning(_KEPT_CARD, folder / CARD_FILE)
        return None
    return atomic_write(folder / CARD_FILE, card_text(read_config(folder), evaluation, repo_id, folder))


def card_after_evaluation(checkpoint: str | os.PathLike, eval_json: str | os.PathLike) -> Path | None:
    """Rewrite the card of a run's checkpoint folder with the figures of its ``eval.json`` (when there is one);
    None (nothing written) for a folder that is no zhyper checkpoint (the LoRA baseline's ``final/``) or whose
    README.md zhyper did not write."""
    from zhyper.card import read_evaluation

    checkpoint = Path(checkpoint)
    if not (checkpoint / CONFIG_FILE).is_file():
        return None
    return write_card(checkpoint, evaluation=read_evaluation(eval_json))
