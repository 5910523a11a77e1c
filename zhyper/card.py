"""The model card (``README.md``) of a checkpoint folder: what it is, how it was trained and scored, how to load it.

``save_pretrained`` writes it beside ``zhyper_config.json`` and ``model.safetensors``; a training run
rewrites the card of its ``final/`` once ``eval.json`` exists (``zhyper.pretrained.card_after_evaluation``,
called by ``zhyper.training.report.write_report``), so the card carries the run's evaluation figures.
This module renders and checks the text; ``zhyper.pretrained`` writes it into the folder (the imports go one way).

The card starts with the hub's metadata block (YAML front matter, written with huggingface_hub's
``ModelCardData``: ``library_name: zhyper``, ``base_model`` when the base is a hub model, ``tags``,
``license``, ``pipeline_tag``), then the base model, the context encoder, mode / rank / targets, the
training run's config when one is recorded, the evaluation figures, the license and how to load it
(Python and ``zhyper chat``).

A card ends with a line holding the SHA-256 of the text above it. A ``README.md`` without that line,
or whose text no longer matches it (the user edited it), is not zhyper's: it is never overwritten
(``save_pretrained`` keeps it and says so), as every other file zhyper did not write is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path


CARD_FILE = "README.md"
DEFAULT_LICENSE = "other"  # the hub's id for "see the card": used when neither the caller nor the base names one
_MARK = "<!-- zhyper model card; sha256 of the text above: {} -->\n"
_MARK_RE = re.compile(r"<!-- zhyper model card; sha256 of the text above: ([0-9a-f]{64}) -->\n\Z")
_LICENSE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_license(license: str | None) -> str | None:
    """``license`` as the hub spells a license id (e.g. ``apache-2.0``, ``mit``, ``other``); None passes."""
    if license is None:
        return None
    if not isinstance(license, str) or not _LICENSE_RE.fullmatch(license):
        raise ValueError(f"license: expected a license id of the Hugging Face hub (lower case, e.g. 'apache-2.0', "
                         f"'mit', 'cc-by-4.0', 'other'), got {license!r}")
    return license


def default_license(base_id: str | None) -> str:
    """The license of the registered base (``zhyper.bases``), else ``other``."""
    from zhyper.bases import find

    base = find(base_id)
    return (base.license if base is not None else None) or DEFAULT_LICENSE


def is_own_card(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a card zhyper wrote and nobody changed since (its last line's SHA-256 matches)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    mark = _MARK_RE.search(text)
    return bool(mark) and hashlib.sha256(text[:mark.start()].encode()).hexdigest() == mark.group(1)


def may_write_card(folder: str | os.PathLike) -> bool:
    """No ``README.md`` in ``folder``, or one zhyper wrote: a card may be written there."""
    path = Path(folder) / CARD_FILE
    return not (path.exists() or path.is_symlink()) or (path.is_file() and not path.is_symlink()
                                                        and is_own_card(path))


def hub_base_id(base_id: str | None) -> str | None:
    """The hub id of the base for the metadata block: the registry's for a short name, the id itself for an
    ``org/name`` that is not a local folder; None for a local path, a random test base or no base."""
    from zhyper.bases import find

    if not base_id:
        return None
    base = find(base_id)
    if base is not None:
        return base.hub_id
    return base_id if _HUB_ID_RE.fullmatch(base_id) and not Path(base_id).exists() else None


def card_text(record: dict, evaluation: dict | None = None, repo_id: str | None = None,
              folder: Path | None = None) -> str:
    """The card of a checkpoint from its ``zhyper_config.json`` record (and ``eval.json``'s report, if any)."""
    from huggingface_hub import ModelCard, ModelCardData

    config, base = record["config"], record.get("base_model") or {}
    license = record.get("license") or default_license(base.get("id"))
    hub_base = hub_base_id(base.get("id"))
    data = ModelCardData(library_name="zhyper", base_model=hub_base, license=license, pipeline_tag="text-generation",
                         tags=["zhyper", "hypernetwork", "lora", f"zhyper-{config.get('mode')}"])
    body = [f"# {repo_id or 'Zhyper checkpoint'}", "",
            "A zhyper checkpoint: a hypernetwork that turns a description of the wanted behaviour (a sentence) into "
            "low-rank modulations of the frozen base model's layers, one adapter per description, without training "
            "on that description.", "",
            *_model_section(record, hub_base), *_training_section(record.get("training")),
            *_evaluation_section(evaluation), *_license_section(license, record),
            *_loading_section(repo_id), *_files_section(record, folder)]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body).rstrip("\n") + "\n\n"
    ModelCard(text)  # huggingface_hub parses it back: a malformed metadata block fails here, not on the hub
    return text + _MARK.format(hashlib.sha256(text.encode()).hexdigest())


def _model_section(record: dict, hub_base: str | None) -> list[str]:
    config, base, layout = record["config"], record.get("base_model") or {}, record["layout"]
    base_id = base.get("id")
    if base_id is None:
        shown = "not recorded (pass `base_model=` when loading)"
    else:
        shown = f"`{hub_base}`" + (f" (recorded as `{base_id}`)" if hub_base and hub_base != base_id else "")
        if not hub_base:
            shown = f"`{base_id}` (not a hub model: pass `base_model=` a copy of it when loading)"
    details = ", ".join(f"{k} `{base[k]}`" for k in ("revision", "model_type") if base.get(k))
    n_params = sum(math.prod(shape) for shape in record["tensors"].values())
    modules = layout["modules"]
    rows = [("base model", shown + (f"; {details}" if details else "")),
            ("context encoder", f"`{config.get('encoder')}` (embedding size {config.get('context_dim')})"),
            ("mode", f"`{config.get('mode')}`"),
            ("rank / alpha", f"{config.get('rank')} / {config.get('alpha')}" + (" (rsLoRA)" if config.get("rslora")
                                                                                 else "")),
            ("target modules", ", ".join(f"`{t}`" for t in layout["module_types"])
             + f" ({len(modules)} modules in {layout['n_layers']} layers)"),
            ("trained parameters", f"{n_params:,} (hypernetwork and shared factors)"),
            ("zhyper version", f"`{record.get('zhyper_version')}`")]
    return ["## Model", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _training_section(training: dict | None) -> list[str]:
    import yaml

    if not training:
        return ["## Training", "", "No training run is recorded (saved outside `launch/train.py`).", ""]
    return ["## Training", "", "The run configuration of `launch/train.py` that trained these weights:", "",
            "```yaml", yaml.safe_dump(training, sort_keys=False).rstrip(), "```", ""]


def _figure(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluation_rows(report: dict) -> list[tuple[str, str, str]]:
    """(section, figure, value) of an ``eval.json`` report: its summary figures, each with its standard error
    where the report has one; the per-context and per-rule breakdowns stay in eval.json."""
    rows = []
    for section in ("final", "compliance", "retention", "diagnostics"):
        figures = report.get(section)
        if not isinstance(figures, dict):
            continue
        for key, value in figures.items():
            name = key.removeprefix("diagnostics.")  # diagnostics.spread_median; diagnostics.spread.q_proj: detail
            summary = key.split("/")[-1] in ("mean", "worst", "adapters_off_rate") if section == "retention" \
                else not any(c in name for c in "/.")
            if not _figure(value) or key.endswith("_se") or not summary:
                continue
            se = figures.get(f"{key}_se")
            rows.append((section, key, f"{value:.4g}" + (f" (se {se:.2g})" if _figure(se) else "")))
    rows += [("speed", key, f"{report[key]:.4g}") for key in ("train_time_s", "step_time_s", "tokens_per_s_per_rank")
             if _figure(report.get(key))]
    return rows


def _evaluation_section(evaluation: dict | None) -> list[str]:
    if evaluation is None:
        return ["## Evaluation", "", "No evaluation is recorded for these weights.", ""]
    rows = evaluation_rows(evaluation)
    lines = ["## Evaluation", "", "From the training run's `eval.json` (losses in nats per response token; gaps are "
             "the loss with the right description minus with another context's: negative means the description "
             "is used; compliance: fraction of greedy answers that follow the described rule).", "",
             "| section | figure | value |", "|---|---|---|", *[f"| {s} | `{k}` | {v} |" for s, k, v in rows]]
    warnings = (evaluation.get("diagnostics") or {}).get("warnings") if isinstance(evaluation.get("diagnostics"),
                                                                                   dict) else None
    if warnings:
        lines += ["", "Warnings of the failure-signature diagnostics:", "", *[f"- {w}" for w in warnings]]
    return lines + [""]


def _license_section(license: str, record: dict) -> list[str]:
    if record.get("license"):
        text = f"`{license}`."
    elif license != DEFAULT_LICENSE:
        text = (f"`{license}`, the base model's license (no other was given: `save_pretrained(..., license=...)` "
                "sets one).")
    else:
        text = ("Not given (`other`): `save_pretrained(..., license=...)` or `push_to_hub(..., license=...)` sets "
                "one. The base model's license applies to the base.")
    return ["## License", "", text, ""]


def _loading_section(repo_id: str | None) -> list[str]:
    where = repo_id or "path/to/this/folder"
    note = "" if repo_id else "  # this folder, or its hub id \"org/name\""
    return ["## How to load", "", "```python", "from zhyper import ZhyperModel", "",
            f"model = ZhyperModel.from_pretrained(\"{where}\"){note}",
            "print(model.generate(\"Tell me about the moon.\", \"Answer in upper case.\")[0])", "```", "",
            "From the command line:", "", "```bash",
            f"zhyper chat --checkpoint {where} --description \"Answer in upper case.\" \"Tell me about the moon.\"",
            "```", "",
            "The base model is the one recorded in `zhyper_config.json` (or `base_model=` / `--base`). Loading "
            "checks the weights' SHA-256, their tensors and shapes, and that the base fits, before using them.", ""]


def _files_section(record: dict, folder: Path | None) -> list[str]:
    files = record.get("files") or {}
    lines = ["## Files", "", "- `zhyper_config.json`: the model's settings, its base and layout, the weights' checksum"]
    lines += [f"- `{name}`: {info.get('bytes', 0):,} bytes, SHA-256 `{info.get('sha256', '')}`"
              for name, info in sorted(files.items())]
    if folder is not None and (folder / "contexts.json").is_file():
        lines.append("- `contexts.json`: the contexts of the run, for `zhyper serve` (model `zhyper:<name>`)")
    return lines + [""]


def read_evaluation(path: str | os.PathLike) -> dict | None:
    """The report of an ``eval.json``; None when there is none. A malformed one is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not the JSON report zhyper writes ({err})") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path}: expected a JSON object (the evaluation report), got {type(report).__name__}")
    return report
