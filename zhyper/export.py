"""Export one description's adapter: a standard PEFT LoRA folder, or a plain merged HF model.

The modulation is folded into the factors so the exported function is exactly the trained one::

    diag    lora_A' = diag(z) · A     lora_B' = B        (s · B · diag(z) · A)
    square  lora_A' = Z · A           lora_B' = B        (s · B · Z · A)
    full    lora_A' = A_c             lora_B' = B_c      (s · B_c · A_c)

with PEFT's own scaling s = lora_alpha / r (or / sqrt(r) with use_rslora), the same s ZLinear uses.
``merge`` hands that adapter to PEFT (``get_peft_model`` on a plain copy of the base, then PEFT's own
``merge_and_unload``): the merged model is what PEFT makes of the exported adapter.

Every export writes ``zhyper_export.json`` beside its files: what was exported (the description,
its weights and combine, a digest of the model's trained tensors), the formats the folder holds
(``peft``, ``zhyper``: the raw modulation, ``merged``) and the SHA-256 of each weight file, which
``verify_export`` (and ``LoRABaseline.from_pretrained``) check. One folder holds one export: the same
description may be added in another format, and a new description replaces an export of the same
format; a new description beside another format's files (which would then contradict each other:
an adapter of one description, a description.txt of another) is refused before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zhyper.io import atomic_folder

ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODULATION_WEIGHTS = "modulation.safetensors"
EXPORT_RECORD = "zhyper_export.json"
# a file that marks a format's export in a folder (one without a record: written before records existed)
FORMAT_MARKERS = {"peft": ADAPTER_WEIGHTS, "zhyper": MODULATION_WEIGHTS, "merged": "config.json"}
_SAME = ("description", "weights", "combine", "source")  # what makes two exports the same export


@torch.no_grad()
def folded_factors(model, description, action: str = "export", weights=None,
                   combine: str = "modulation") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (lora_A' (r, in), lora_B' (out, r))} in fp32 on the CPU for one description entry.

    ``description`` is a string or a list combined with ``weights`` / ``combine`` (``zhyper.compose``).
    Raises ValueError naming the tensor when a trained tensor, the modulation or a folded factor
    holds a NaN or an inf (nothing would be worth writing), and FloatingPointError when the model's
    output under the modulation does (``compose.check_output``: a weight such as 1e30).
    """
    from zhyper import compose
    from zhyper.pretrained import check_finite

    check_finite(model.trainable_state_dict(), f"{action}: the model")
    z = compose.modulation(model, [description], None if weights is None else [weights], combine)
    per_module = model.layout.module_modulations(z)
    check_finite({f"modulation[{name}]": z for name, z in per_module.items()},
                 f"{action}: the hypernetwork's modulation for {description!r}")
    compose.check_output(model, z, compose.entries([description], None if weights is None else [weights]))
    out = {}
    for m in model.layout:
        a, b = model.base.get_submodule(m.name).folded_factors(per_module[m.name])
        out[m.name] = (a.cpu().contiguous(), b.cpu().contiguous())
    check_finite({f"{name}.lora_{ab}'": t for name, pair in out.items() for ab, t in zip("AB", pair)},
                 f"{action}: the folded factors for {description!r}")
    return out


def peft_adapter(model, description, action: str = "export", weights=None, combine: str = "modulation"):
    """(LoraConfig, {PEFT state-dict key: tensor}) of ``description``'s adapter, as an adapter folder stores them."""
    from peft import LoraConfig

    tensors = {}
    for name, (a, b) in folded_factors(model, description, action, weights, combine).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    cfg = model.config
    peft_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, use_rslora=cfg.rslora, lora_dropout=cfg.dropout,
                             target_modules=sorted(model.layout.module_types), bias="none", task_type="CAUSAL_LM",
                             base_model_name_or_path=model.base_model_id)
    return peft_config, tensors


def export_peft(model, description, out_dir: str | os.PathLike, weights=None, combine: str = "modulation") -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for ``description`` into ``out_dir``.

    Other files in ``out_dir`` are kept. Refused before anything is written: the checkpoint or base
    folder the model was read from (or a folder inside either), non-finite tensors, and a folder that
    holds another format's export of another description (``consistent_record``).
    """
    from safetensors.torch import save_file

    from zhyper.pretrained import check_output_folder

    out_dir = Path(out_dir)
    check_output_folder(model, out_dir, "export_peft")
    peft_config, tensors = peft_adapter(model, description, "export_peft", weights, combine)
    what = export_identity(model, description, weights, combine)
    record = consistent_record(out_dir, "peft", what, "export_peft")
    with atomic_folder(out_dir) as tmp:
        peft_config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_record(tmp, record, "peft", [p.name for p in tmp.iterdir()], [ADAPTER_WEIGHTS])
    return out_dir


def export_modulation(model, description, out_dir: str | os.PathLike, modulation, weights=None,
                      combine: str = "modulation", text: str | None = None, action: str = "export_modulation") -> Path:
    """Write ``modulation.safetensors`` (``modulation``, the hypernetwork's output for ``description``: one tensor,
    or ``{type: tensor}`` in full mode, batch of one) and ``description.txt`` (``text``) into ``out_dir``.

    The same checks as ``export_peft``: not a folder the model was read from, finite values, and no other
    format's export of another description in ``out_dir``.
    """
    from safetensors.torch import save_file

    from zhyper.compose import as_text
    from zhyper.pretrained import check_finite, check_output_folder

    out_dir = Path(out_dir)
    check_output_folder(model, out_dir, action)
    tensors = ({"modulation": modulation[0]} if not isinstance(modulation, dict)
               else {f"modulation.{t}": m[0] for t, m in modulation.items()})
    check_finite(tensors, f"{action}: the hypernetwork's output for {description!r}")
    record = consistent_record(out_dir, "zhyper", export_identity(model, description, weights, combine), action)
    with atomic_folder(out_dir) as tmp:
        save_file({k: v.float().cpu().contiguous() for k, v in tensors.items()}, str(tmp / MODULATION_WEIGHTS))
        (tmp / "description.txt").write_text((as_text(description) if text is None else text) + "\n")
        write_record(tmp, record, "zhyper", [MODULATION_WEIGHTS, "description.txt"], [MODULATION_WEIGHTS])
    return out_dir


def plain_base(model):
    """A fresh plain HF model (no ZLinear) holding the frozen base weights of ``model``."""
    from transformers import AutoModelForCausalLM

    base = model.base
    state = {k: v for k, v in base.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    plain = AutoModelForCausalLM.from_config(base.config, dtype=next(iter(base.parameters())).dtype)
    plain.load_state_dict(state, strict=True)
    plain.tie_weights()
    return plain


@torch.no_grad()
def merge(model, description, out_dir: str | os.PathLike | None = None, weights=None, combine: str = "modulation"):
    """A fresh plain HF model (no ZLinear) with ΔW of ``description`` added to every adapted weight.

    The exported adapter is merged by PEFT itself (``merge_and_unload``). Checked before anything is
    built or written: ``out_dir`` is not the checkpoint or base folder the model was read from, the
    tensors are finite; and no merged weight may overflow its dtype.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    from zhyper.pretrained import check_output_folder

    if out_dir is not None:
        check_output_folder(model, Path(out_dir), "merge")
        record = consistent_record(Path(out_dir), "merged", export_identity(model, description, weights, combine),
                                   "merge")
    peft_config, tensors = peft_adapter(model, description, "merge", weights, combine)
    peft_config.base_model_name_or_path = None  # the plain copy is this model's base, whatever its recorded name
    peft = get_peft_model(plain_base(model), peft_config)
    result = set_peft_model_state_dict(peft, tensors)
    if result.unexpected_keys:
        raise RuntimeError(f"merge: the adapter does not fit PEFT's model: unexpected {result.unexpected_keys[:4]}")
    merged = peft.merge_and_unload().eval()
    for name in model.layout.names:
        w = merged.get_submodule(name).weight
        bad = int((~torch.isfinite(w)).sum())
        if bad:
            raise ValueError(f"merge: the merged weight {name}.weight has {bad} non-finite values in {w.dtype} "
                             f"(W + ΔW overflows) for {description!r}")
    if out_dir is not None:
        with atomic_folder(out_dir) as tmp:
            merged.save_pretrained(str(tmp))
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(str(tmp))
            names = [p.name for p in tmp.iterdir() if p.is_file()]
            write_record(tmp, record, "merged", names, [n for n in names if n.endswith(".safetensors")])
    return merged


def source_digest(model) -> str:
    """A short SHA-256 of the model's trained tensors (names and values): which checkpoint an export came from."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.trainable_state_dict().items()):
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_identity(model, description, weights=None, combine: str = "modulation") -> dict:
    """What an export is of: the description entry, its weights and combine, the trained tensors' digest, the base."""
    listed = None if weights is None else [weights] if isinstance(weights, (int, float)) else weights
    return {"description": description, "weights": None if listed is None else [float(w) for w in listed],
            "combine": combine, "source": source_digest(model), "mode": model.config.mode,
            "base_model": model.base_model_id, "base_revision": model.base_revision}


def read_record(folder: Path) -> dict | None:
    """The folder's ``zhyper_export.json`` (None when there is none); an unreadable one is named."""
    path = Path(folder) / EXPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not the JSON zhyper writes ({err}); remove it, or export into another "
                         "folder") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object (zhyper's export record), got {type(record).__name__}")
    return record


def _formats_present(folder: Path, record: dict) -> list[str]:
    """The export formats whose files are in ``folder``: recorded, or recognised by their weights (older exports)."""
    recorded = record.get("formats") if isinstance(record.get("formats"), dict) else {}
    found = [f for f, names in recorded.items()
             if isinstance(names, list) and any((folder / str(n)).is_file() for n in names)]
    return found + [f for f, marker in FORMAT_MARKERS.items() if f not in found and (folder / marker).is_file()]


def _exported_text(folder: Path, record: dict, fmt: str) -> str:
    if record.get("description") is not None:
        return repr(record["description"])
    if fmt == "zhyper" and (folder / "description.txt").is_file():
        return repr((folder / "description.txt").read_text(encoding="utf-8").strip())
    return "a description zhyper has no record of"


def consistent_record(out_dir: Path, fmt: str, what: dict, action: str) -> dict:
    """The export record to write for format ``fmt`` of ``what`` into ``out_dir``: the folder's record extended
    when it holds the same export, a new one when it holds none or only ``fmt``'s files (replaced whole).
    Refused (ValueError naming the folder and the export there) when another format's export of something
    else is there: the two would contradict each other."""
    folder = Path(out_dir)
    record = (read_record(folder) or {}) if folder.is_dir() else {}
    if record.get("description") is not None and all(record.get(k) == what[k] for k in _SAME if k in record):
        return {**record, **what}
    others = [f for f in _formats_present(folder, record) if f != fmt] if folder.is_dir() else []
    if others:
        raise ValueError(f"{action}: {folder} holds the {others[0]} export of "
                         f"{_exported_text(folder, record, others[0])}; writing the {fmt} export of "
                         f"{what['description']!r} there would leave two exports that contradict each other. "
                         "Export into another folder, or export the same description")
    return dict(what)


def write_record(tmp: Path, record: dict, fmt: str, names, weight_files) -> None:
    """Write ``zhyper_export.json`` into ``tmp``: ``record`` with format ``fmt``'s files and their checksums added."""
    from zhyper.checksums import file_records

    formats = {f: n for f, n in (record.get("formats") or {}).items() if f != fmt}
    formats[fmt] = sorted(n for n in names if n != EXPORT_RECORD)
    files = {n: v for n, v in (record.get("files") or {}).items() if n not in formats[fmt]}
    files.update(file_records(tmp, weight_files))
    out = {**record, "formats": formats, "files": files}
    (tmp / EXPORT_RECORD).write_text(json.dumps(out, indent=2) + "\n")


def verify_export(folder: str | os.PathLike, verify: bool | None = None) -> None:
    """Check the weight files of an export (or a LoRA run's adapter) against its ``zhyper_export.json``: a changed
    or swapped file is a ValueError naming it. A folder without a record (not zhyper's, or older) is not checked."""
    from zhyper.checksums import verify_files

    record = read_record(Path(folder))
    if record is not None:
        verify_files(folder, record.get("files"), Path(folder) / EXPORT_RECORD, verify)
