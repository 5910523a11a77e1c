"""AskX loader: the cultural-alignment data of the Zhyper paper (Reddit "Ask<X>" subreddits).

Folder layout (as in ../shared/data/askx): ``cultures/cul_<Name>/metadata.yaml`` (descriptions,
system_message, user_prompt_template '{question}', response_field 'comment_body', ds_kwargs
naming the subreddit CSV), ``csv/<Subreddit>.csv`` (any subset) and the paper's two settings
``hyper_lora_align.yaml`` ("countries": train on 14 countries, 5 regions unseen) and
``hyper_lora_align_region.yaml`` ("regions": the reverse).

One example per CSV row (a submission/comment pair): question = submission title (plus the
submission text when ``include_body``), answer = the response field. Rows with the wrong number
of fields, a CSV error, or an empty question/answer are skipped, counted per file (``skipped``)
and logged with the first lines concerned: Reddit data has deleted comments and the odd broken
row, so skipping is the default here (never an answer "None"). A CSV without a column the loader
needs (``submission_title``, the response field, ``submission_text`` with ``include_body``, a
template field) is an error naming the file and the column, and so is a culture left without a
usable row. Bytes that are not valid UTF-8 are replaced by U+FFFD, counted per file
(``decode_errors``) and logged. Seen cultures: rows [0, 90%) "train", the rest "validation";
unseen cultures: the first 500 "unseen".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .base import ContextData, split_descriptions, split_labels
from .metadata import DecodeCount, TaskSpec, csv_rows, read_yaml

logger = logging.getLogger(__name__)

SETTING_FILES = {"countries": "hyper_lora_align.yaml", "regions": "hyper_lora_align_region.yaml"}


@dataclass(frozen=True)
class AskXSetting:
    """Which cultures are trained on (seen) and which are held out (unseen).

    eval_descriptions: {culture: descriptions reserved for evaluation}; a seen culture without an
    entry holds out ``heldout_fraction`` of its metadata descriptions instead.
    """

    seen: tuple[str, ...]
    unseen: tuple[str, ...] = ()
    eval_descriptions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    train_fraction: float = 0.9
    max_unseen_examples: int | None = 500

    def __post_init__(self) -> None:
        if not self.seen:
            raise ValueError("seen: expected at least one seen culture, got none")
        both = sorted(set(self.seen) & set(self.unseen))
        if both:
            raise ValueError(f"seen/unseen: cultures {both} are in both")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction: expected a value in (0, 1], got {self.train_fraction}")
        if self.max_unseen_examples is not None and self.max_unseen_examples < 1:
            raise ValueError(f"max_unseen_examples: expected a positive int or None, got {self.max_unseen_examples}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AskXSetting":
        """Read a reference run config: seen = ``train_ds_names``; unseen = other ``eval_ds_info`` keys."""
        raw = read_yaml(Path(path))
        if not isinstance(raw, dict) or not isinstance(raw.get("train_ds_names"), list):
            raise ValueError(f"{path}: expected a mapping with a 'train_ds_names' list")
        info = raw.get("eval_ds_info") or {}
        if not isinstance(info, dict):
            raise ValueError(f"{path}: 'eval_ds_info' must map culture -> descriptions, got {type(info).__name__}")
        seen = tuple(str(n).strip() for n in raw["train_ds_names"])
        evals = {}
        for name, descs in info.items():
            items = descs.get("descriptions") if isinstance(descs, dict) else descs
            if not isinstance(items, list):
                raise ValueError(f"{path}: eval_ds_info[{name!r}] must be a list of descriptions")
            evals[str(name).strip()] = tuple(str(d).strip() for d in items if str(d).strip())
        return cls(seen=seen, unseen=tuple(n for n in evals if n not in seen), eval_descriptions=evals)


@dataclass
class AskXData(ContextData):
    """ContextData of AskX; extra columns culture, question, answer (context == culture).

    skipped: {csv file name: malformed rows skipped}; missing_data: cultures of the setting that
    have descriptions but no CSV present (left out of the examples and the context lists);
    decode_errors: {csv file name: bytes that were not valid UTF-8, replaced by U+FFFD} (files
    without such bytes are not listed).
    """

    skipped: dict[str, int] = field(default_factory=dict)
    missing_data: list[str] = field(default_factory=list)
    decode_errors: dict[str, int] = field(default_factory=dict)


@dataclass
class CsvTable:
    """One CSV read leniently: header, good rows (with the line each starts on), what was skipped."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]
    skipped: list[tuple[int, str]]  # (line, why)
    decode: DecodeCount


def read_csv(path: Path) -> CsvTable:
    """Parse one CSV (quoted newlines kept); malformed rows are collected with their line, not raised."""
    decode = DecodeCount(Path(path))
    header, parsed = csv_rows(Path(path), decode)
    rows, lines, skipped = [], [], []
    for start, row in parsed:
        if isinstance(row, str):
            skipped.append((start, row))
            continue
        rows.append(dict(zip(header, row)))
        lines.append(start)
    decode.warn()
    return CsvTable(Path(path), header, rows, lines, skipped, decode)


def read_rows(path: Path) -> tuple[list[dict[str, str]], int]:
    """(rows as dicts, number of malformed rows skipped) of one CSV; quoted newlines are kept."""
    table = read_csv(path)
    return table.rows, len(table.skipped)


def _resolve_setting(root: Path, setting: str | Path | AskXSetting) -> AskXSetting:
    if isinstance(setting, AskXSetting):
        return setting
    if isinstance(setting, str) and setting in SETTING_FILES:
        path = root / SETTING_FILES[setting]
        if not path.is_file():
            raise ValueError(f"setting: {setting!r} reads {path}, which does not exist; pass an AskXSetting(seen=..., "
                             "unseen=...) or the path of a run YAML instead")
        return AskXSetting.from_yaml(path)
    if Path(setting).is_file():
        return AskXSetting.from_yaml(setting)
    raise ValueError(f"setting: expected one of {sorted(SETTING_FILES)}, an AskXSetting or a YAML path, got {setting!r}")


def _csv_path(spec: TaskSpec, root: Path, csv_dir: Path | None) -> Path | None:
    ref = spec.ds_kwargs.get("data_files")
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{spec.source}: ds_kwargs.data_files must name the subreddit CSV, got {ref!r}")
    name = Path(ref).name
    for candidate in ([csv_dir / name] if csv_dir else []) + [root / "csv" / name, root / ref]:
        if candidate.is_file():
            return candidate
    return None


def _checked_setting(root: Path, setting) -> AskXSetting:
    """The setting, with every culture it names present under ``root/cultures``."""
    if not (root / "cultures").is_dir():
        raise ValueError(f"root: expected an AskX folder with a 'cultures' subfolder, got {str(root)!r}")
    st = _resolve_setting(root, setting)
    known = sorted(p.parent.name for p in (root / "cultures").glob("*/metadata.yaml"))
    unknown = [c for c in (*st.seen, *st.unseen) if c not in known]
    if unknown:
        raise ValueError(f"setting: cultures {unknown} are not in {root / 'cultures'}; known cultures: {known}")
    return st


def _culture_rows(path: Path, spec: TaskSpec, culture: str, include_body: bool):
    """(good rows as (question, answer, row, line), skipped (line, why), the table) of one culture's CSV."""
    table = read_csv(path)
    needed = ["submission_title", spec.response_field] + (["submission_text"] if include_body else [])
    absent = [c for c in needed if c not in table.header]
    if absent:
        raise ValueError(f"{path}: no column {absent[0]!r} (culture {culture!r} needs {needed}); columns of the "
                         f"file: {table.header}")
    spec.check_columns([*table.header, "question"], str(path))
    good, bad = [], list(table.skipped)
    for row, line in zip(table.rows, table.lines):
        question = row["submission_title"].strip()
        body = row.get("submission_text", "").strip()
        if include_body and body:
            question = f"{question}\n\n{body}"
        answer = row[spec.response_field].strip()
        if not question or not answer:
            bad.append((line, "empty question" if not question else f"empty {spec.response_field}"))
            continue
        good.append((question, answer, {**row, "question": question}, line))
    if bad:
        shown = "; ".join(f"line {ln}: {why}" for ln, why in sorted(bad)[:3])
        logger.warning("%s: skipped %d of %d rows (%s%s)", path, len(bad), len(bad) + len(good), shown,
                       "; ..." if len(bad) > 3 else "")
    if not good:
        raise ValueError(f"{path}: culture {culture!r} has no usable row ({len(bad)} skipped: "
                         f"{'; '.join(f'line {ln}: {why}' for ln, why in sorted(bad)[:3]) or 'no data rows'})")
    return good, bad, table


def _culture_descriptions(st: AskXSetting, culture: str, spec: TaskSpec, heldout_fraction: float,
                          seed: int) -> tuple[list[str] | None, list[str]]:
    """(training descriptions, or None for an unseen culture; held-out descriptions) of one culture."""
    evals = list(st.eval_descriptions.get(culture, ()))
    if culture in st.unseen:
        return None, list(dict.fromkeys([*evals, *spec.descriptions]))
    if evals:
        return [d for d in dict.fromkeys(spec.descriptions) if d not in set(evals)], evals
    return split_descriptions(spec.descriptions, heldout_fraction, seed, culture, source=spec.source)


def load_askx(root: str | Path, setting: str | Path | AskXSetting = "countries", csv_dir: str | Path | None = None,
              include_body: bool = False, drop_system_message: bool = False, heldout_fraction: float = 0.1,
              seed: int = 0) -> AskXData:
    """Load AskX from ``root`` for one seen/unseen setting.

    setting: "countries" / "regions" (the paper's run YAMLs in ``root``), a YAML path, or an AskXSetting.
    csv_dir: where the subreddit CSVs are (default ``root/csv``, then the metadata's own path).
    include_body: question = title + blank line + submission text (when non-empty).
    drop_system_message: system = "" instead of the culture-naming system message, which would
        leak the context into the prompt and confound what the hypernetwork contributes.
    """
    from datasets import Dataset

    root = Path(root)
    st = _checked_setting(root, setting)
    cols: dict[str, list] = {k: [] for k in ("context", "culture", "question", "answer", "prompt", "response", "split",
                                             "system")}
    descriptions, heldout, skipped, missing, present, decode = {}, {}, {}, [], set(), {}
    for culture in (*st.seen, *st.unseen):
        spec = TaskSpec.from_file(root / "cultures" / culture / "metadata.yaml")
        path = _csv_path(spec, root, Path(csv_dir) if csv_dir else None)
        if path is None:
            missing.append(culture)
            continue
        good, bad, table = _culture_rows(path, spec, culture, include_body)
        n_bad = skipped[path.name] = len(bad)
        if table.decode.bad_bytes:
            decode[path.name] = table.decode.bad_bytes
        splits = split_labels(len(good), culture in st.unseen, st.train_fraction, st.max_unseen_examples)
        good = good[:len(splits)]
        system = "" if drop_system_message else spec.system_message
        for (question, answer, row, line), split in zip(good, splits):
            prompt = spec.prompt(row, where=f"{path} line {line}")
            for k, v in zip(cols, (culture, culture, question, answer, prompt, answer, split, system)):
                cols[k].append(v)
        present.add(culture)
        train_descriptions, heldout[culture] = _culture_descriptions(st, culture, spec, heldout_fraction, seed)
        if train_descriptions is not None:
            descriptions[culture] = train_descriptions
        logger.info("AskX %s: %d rows from %s (%d skipped)", culture, len(good), path.name, n_bad)
    if missing:
        logger.info("AskX: cultures with descriptions but no CSV: %s", missing)
    if not present:
        raise ValueError(f"root: none of the setting's cultures has a CSV under {csv_dir or root / 'csv'}; "
                         f"missing: {missing}")
    return AskXData(Dataset.from_dict(cols), descriptions, heldout, [c for c in st.seen if c in present],
                    [c for c in st.unseen if c in present], skipped=skipped, missing_data=missing,
                    decode_errors=decode)
