"""The run configuration of ``launch/train.py``: typed, validated, loaded from YAML + overrides.

A run YAML has the sections below (every field optional; defaults in the dataclasses)::

    base_model: smollm2            # "smollm2" (shipped), "tiny-llama" (random, tests), a path or hub id
    model: {mode: diag, rank: 8, ...}   # passed to zhyper.ZhyperConfig (validated there)
    data:  {source: builtin, n_contexts: 8, k: 1, ...}
    train: {max_steps: 300, lr: 1e-3, ...}
    eval:  {every: 50, ...}
    output_dir: runs/default

Command-line overrides use dotted keys: ``train.lr=5e-4 data.k=2 model.rank=4``. Unknown keys
are errors that name the key and list the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataConfig:
    source: str = field(default="builtin", metadata={"help": "builtin | askx | tasks"})
    path: str | None = field(default=None, metadata={"help": "data folder for askx / tasks"})
    setting: str = field(default="countries", metadata={"help": "askx seen/unseen setting: countries | regions"})
    data_files: dict[str, str] = field(default_factory=dict, metadata={"help": "tasks: {task: local file}"})
    drop_system_message: bool = field(default=True, metadata={
        "help": "askx: drop the culture-naming system message (it leaks the context into the prompt)"})
    contexts: list[str] = field(default_factory=list, metadata={
        "help": "train and evaluate on these contexts only (seen/unseen roles kept); empty: all"})
    n_contexts: int = field(default=8, metadata={"help": "distinct contexts per optimizer step (global)"})
    k: int = field(default=1, metadata={"help": "examples per context per step"})
    max_length: int = field(default=256, metadata={"help": "max tokens per example (prompt body truncated first)"})
    description_in_prompt: bool = field(default=False, metadata={
        "help": "also put the description in the prompt (the prompting baseline); off: hypernetwork only"})
    seed: int = 0

    def __post_init__(self):
        if self.source not in ("builtin", "askx", "tasks"):
            raise ValueError(f"data.source must be builtin, askx or tasks, got {self.source!r}")
        if self.source in ("askx", "tasks") and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if not isinstance(self.contexts, list) or not all(isinstance(c, str) and c for c in self.contexts):
            raise ValueError(f"data.contexts must be a list of context names, got {self.contexts!r}")
        for name in ("n_contexts", "k", "max_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)!r}")


@dataclass
class OptimConfig:
    max_steps: int = field(default=300, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (paper, Mistral-7B: 2.5e-5)"})
    weight_decay: float = 0.01
    hypernet_lr_scale: float = field(default=1.0, metadata={
        "help": "learning rate of the hypernetwork relative to train.lr (the shared A/B use train.lr)"})
    center_contexts: bool = field(default=True, metadata={
        "help": "centre the hypernetwork's input on the mean embedding of the training descriptions"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up fraction, then linear decay to 0"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient clipping (DeepSpeed); 0 disables"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing (paper extra; off)"})
    modulation_l2: float = field(default=0.0, metadata={
        "help": "L2 on the generated modulation's deviation from its initial value (paper extra; off)"})
    neftune_alpha: float = field(default=0.0, metadata={"help": "NEFTune embedding noise alpha (paper extra; off)"})
    checkpoint_every: int = field(default=0, metadata={"help": "DeepSpeed checkpoint every N steps (0: only at end)"})
    log_every: int = field(default=1, metadata={"help": "steps between metric flushes to MLflow"})
    stop_after: int = field(default=0, metadata={
        "help": "stop after this step with a checkpoint and no final export (time-limited jobs; resume later)"})
    seed: int = 0

    def __post_init__(self):
        if self.max_steps <= 0:
            raise ValueError(f"train.max_steps must be positive, got {self.max_steps}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.hypernet_lr_scale <= 0:
            raise ValueError(f"train.hypernet_lr_scale must be positive, got {self.hypernet_lr_scale}")
        for name in ("modulation_l2", "neftune_alpha", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class EvalConfig:
    every: int = field(default=100, metadata={"help": "validation losses every N steps (0: only at end)"})
    max_examples: int = field(default=64, metadata={"help": "validation examples per split (seen, unseen)"})
    batch_size: int = field(default=8, metadata={"help": "per-rank evaluation batch size"})
    generate: bool = field(default=True, metadata={"help": "rule-compliance accuracy of generated answers at the end"})
    generate_examples: int = field(default=48, metadata={"help": "prompts per condition for the accuracy table"})
    max_new_tokens: int = 48

    def __post_init__(self):
        if self.every < 0 or self.max_examples <= 0 or self.batch_size <= 0 or self.generate_examples <= 0:
            raise ValueError("eval.every must be >= 0; eval.max_examples, eval.batch_size and "
                             "eval.generate_examples must be positive")


@dataclass
class RunConfig:
    base_model: str = field(default="smollm2", metadata={
        "help": "smollm2 (shipped SmolLM2-135M-Instruct), tiny-llama (random, tests), or a path / hub id"})
    base_revision: str | None = None
    tiny: dict[str, int] = field(default_factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2}, metadata={
        "help": "sizes of the random tiny-llama"})
    model: dict[str, Any] = field(default_factory=dict, metadata={"help": "zhyper.ZhyperConfig fields"})
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/default"
    experiment: str = field(default="zhyper", metadata={"help": "MLflow experiment name"})
    tracking_uri: str | None = field(default=None, metadata={
        "help": "MLflow URI; default $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db"})
    run_name: str | None = None

    def zhyper_config(self):
        """The model section as a validated ZhyperConfig (unknown fields are errors)."""
        from zhyper.config import ZhyperConfig

        known = {f.name for f in dataclasses.fields(ZhyperConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ValueError(f"unknown key(s) model.{unknown[0]} in the run config; known model keys: {sorted(known)}")
        return ZhyperConfig(**self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "train": OptimConfig, "eval": EvalConfig}


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text != "" else ""


def _coerce(where: str, given: dict, cls) -> dict:
    """Numbers YAML reads as strings (PyYAML takes ``5e-4`` for a string) become the field's type."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out = dict(given)
    for key, value in given.items():
        kind = types.get(key)
        if isinstance(value, str) and kind in ("float", "int"):
            try:
                out[key] = float(value) if kind == "float" else int(value)
            except ValueError:
                raise ValueError(f"{where}{key} must be a number ({kind}), got {value!r}") from None
        elif kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _check_keys(where: str, given: dict, cls) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in known:
            raise ValueError(f"unknown key {where}{key!r} in the run config; known keys: {known}")


def build_config(raw: dict[str, Any]) -> RunConfig:
    """A RunConfig from a plain nested dict (as read from YAML); validates every key."""
    if not isinstance(raw, dict):
        raise ValueError(f"a run config must be a mapping, got {type(raw).__name__}")
    _check_keys("", raw, RunConfig)
    kwargs = dict(raw)
    for name, cls in _SECTIONS.items():
        section = kwargs.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"run config section {name!r} must be a mapping, got {type(section).__name__}")
        _check_keys(f"{name}.", section, cls)
        kwargs[name] = cls(**_coerce(f"{name}.", section, cls))
    cfg = RunConfig(**kwargs)
    cfg.zhyper_config()  # validate the model section now, not after the base model has loaded
    return cfg


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists) to a nested dict."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. train.lr=5e-4)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run YAML (or the defaults when path is None) and apply overrides."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: malformed YAML: {err}") from err
        except FileNotFoundError:
            raise ValueError(f"run config {path} does not exist") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a run config must be a mapping at top level")
    try:
        return build_config(apply_overrides(raw, overrides or []))
    except (TypeError, ValueError) as err:
        where = f"{path}: " if path else ""
        raise ValueError(f"{where}{err}") from err


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': '0.001'} (for MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out
