"""The run configuration of ``launch/train.py``: typed dataclasses, loaded with OmegaConf from YAML + overrides.

A run YAML has the sections below (every field optional; defaults in the dataclasses)::

    method: zhyper                 # zhyper | lora (the multi-task LoRA baseline, same loop and data)
    base_model: smollm2            # "smollm2" (shipped), "tiny-llama" (random, tests), a path or hub id
    model: {mode: diag, rank: 8, ...}   # a zhyper.ZhyperConfig (validated there)
    data:  {source: builtin, n_contexts: 8, k: 1, ...}
    train: {max_steps: 300, lr: 1e-3, ...}
    eval:  {every: 50, ...}
    output_dir: runs/default

Command-line overrides use dotted keys: ``train.lr=5e-4 data.k=2 model.rank=4``. OmegaConf merges
them into the structured config and converts types (``"5e-4"`` becomes a float; ``true`` is not
a number). Unknown keys and wrong types are ValueErrors that name the key, what was given and
what is expected; every section validates its values on construction (``__post_init__``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from zhyper.config import ZhyperConfig

METHODS = ("zhyper", "lora")
SOURCES = ("builtin", "ifeval", "askx", "tasks")


def _finite(where: str, value: float, low: float | None = None, positive: bool = False) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where} must be positive, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where} must be >= {low}, got {value!r}")


@dataclass
class TinyConfig:
    """Sizes of the random ``tiny-llama`` base (tests)."""

    hidden_size: int = 64
    num_hidden_layers: int = 2

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"tiny.{f.name} must be positive, got {getattr(self, f.name)}")


@dataclass
class DataConfig:
    source: str = field(default="builtin", metadata={"help": "builtin | ifeval | askx | tasks"})
    path: str | None = field(default=None, metadata={
        "help": "data folder for askx; tasks: the folder of the tasks' <name>/metadata.yaml (T2L's tasks/, read in "
                "place); ifeval: optional JSONL of {prompt, answer} plain answers to reshape (default: the base "
                "model's own answers, generated once and cached)"})
    setting: str = field(default="countries", metadata={"help": "askx seen/unseen setting: countries | regions | "
                                                                 "both (every present culture seen)"})
    data_files: dict[str, str] = field(default_factory=dict, metadata={
        "help": "tasks: {task: local file} (json / jsonl / csv / parquet); a task of data.split_file without one is "
                "loaded with datasets.load_dataset(**ds_kwargs) (the hub, or data.datasets_dir)"})
    split_file: str | None = field(default=None, metadata={
        "help": "tasks: the paper's split, T2L's hyper_lora_decontam_lol_tasks.yaml (train_ds_names, eval_ds_info); "
                "relative: from the working directory, then data.path. Unset: the tasks are data.data_files' keys"})
    datasets_dir: str | None = field(default=None, metadata={
        "help": "tasks: local copies of the hub datasets, DIR/<ds_kwargs.path> laid out like the hub dataset, read "
                "with the same datasets.load_dataset call in place of the hub id (unset: the hub)"})
    drop_system_message: bool = field(default=True, metadata={
        "help": "askx: drop the culture-naming system message (it leaks the context into the prompt)"})
    skip_bad_rows: bool = field(default=False, metadata={
        "help": "tasks: skip (and count) rows with missing/null fields or parse errors instead of stopping"})
    contexts: list[str] = field(default_factory=list, metadata={
        "help": "train and evaluate on these contexts only (seen/unseen roles kept); empty: all"})
    n_contexts: int = field(default=8, metadata={"help": "distinct contexts per optimizer step (global)"})
    k: int = field(default=1, metadata={"help": "examples per context per step"})
    max_length: int = field(default=256, metadata={"help": "max tokens per example (prompt body truncated first)"})
    description_in_prompt: bool = field(default=False, metadata={
        "help": "also put the description in the prompt (the prompting baseline); off: hypernetwork only"})
    null_context: bool = field(default=False, metadata={
        "help": "add a 'no context' pseudo-context: random strings and unrelated sentences as descriptions, the "
                "plain answer as target (built-in suite; teaches that a non-instruction changes nothing)"})
    augment: int = field(default=0, metadata={
        "help": "generic rewordings added per training description (case, punctuation, frames, typos)"})
    pairs: int = field(default=0, metadata={
        "help": "ifeval: extra training rows under two seen types at once (both checkers pass; the two texts "
                "joined as the description); the composition evaluation's pairs are never drawn"})
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source in ("askx", "tasks") and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        given = [k for k in ("split_file", "datasets_dir") if getattr(self, k) is not None]
        if self.source != "tasks" and (given or self.data_files):
            raise ValueError(f"data.{(given or ['data_files'])[0]} applies to data.source 'tasks'; data.source is "
                             f"{self.source!r}")
        if self.source == "tasks":  # the selection, and offline the hub rows, before anything heavy loads
            from zhyper.data.tasks import check_reachable

            check_reachable(self.path, self.data_files, split_file=self.split_file, datasets_dir=self.datasets_dir,
                            contexts=self.contexts or None)
        if not all(isinstance(c, str) and c for c in self.contexts):
            raise ValueError(f"data.contexts must be a list of context names, got {list(self.contexts)!r}")
        for name in ("n_contexts", "k", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be positive, got {getattr(self, name)!r}")
        if self.augment < 0:
            raise ValueError(f"data.augment must be >= 0, got {self.augment}")
        if self.pairs < 0 or (self.pairs and self.source != "ifeval"):
            raise ValueError(f"data.pairs: expected 0, or a count >= 1 with data.source 'ifeval', got {self.pairs} "
                             f"with data.source {self.source!r}")
        if self.null_context and self.source not in ("builtin", "ifeval"):
            raise ValueError("data.null_context needs a plain answer for every prompt, which only the built-in "
                             f"suite and ifeval have; data.source is {self.source!r}")


@dataclass
class OptimConfig:
    max_steps: int = field(default=300, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (paper, Mistral-7B: 2.5e-5)"})
    weight_decay: float = 0.01
    hypernet_lr_scale: float = field(default=1.0, metadata={
        "help": "learning rate of the hypernetwork relative to train.lr (the shared A/B use train.lr)"})
    center_contexts: bool = field(default=True, metadata={
        "help": "centre the hypernetwork's input on the mean embedding of the training descriptions"})
    first_tokens: int = field(default=3, metadata={
        "help": "how many response tokens per example get train.first_tokens_weight"})
    first_tokens_weight: float = field(default=1.0, metadata={
        "help": "loss weight of each answer's first tokens, where its format is decided (1: plain mean)"})
    contrast_weight: float = field(default=0.0, metadata={
        "help": "weight of the description-contrastive loss: two wordings of every training context through the "
                "hypernetwork's trunk each step, same context close, different contexts apart (0: off)"})
    contrast_temperature: float = field(default=0.1, metadata={"help": "temperature of that loss (cosine / T)"})
    embedding_noise: float = field(default=0.0, metadata={
        "help": "std of Gaussian noise added to description embeddings in training (0: off)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up fraction, then linear decay to 0"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient clipping (DeepSpeed); 0 disables"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing (paper extra; off)"})
    modulation_l2: float = field(default=0.0, metadata={
        "help": "L2 on the generated modulation's deviation from its initial value (paper extra; off)"})
    neftune_alpha: float = field(default=0.0, metadata={"help": "NEFTune embedding noise alpha (paper extra; off)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the base model's activations in backward (HF non-reentrant checkpointing)"})
    checkpoint_every: int = field(default=0, metadata={"help": "DeepSpeed checkpoint every N steps (0: only at end)"})
    log_every: int = field(default=1, metadata={"help": "steps between metric flushes to MLflow"})
    stop_after: int = field(default=0, metadata={
        "help": "stop after this step with a checkpoint and no final export (time-limited jobs; resume later)"})
    seed: int = 0

    def __post_init__(self):
        if self.max_steps <= 0:
            raise ValueError(f"train.max_steps must be positive, got {self.max_steps}")
        _finite("train.lr", self.lr, positive=True)
        _finite("train.hypernet_lr_scale", self.hypernet_lr_scale, positive=True)
        _finite("train.warmup_ratio", self.warmup_ratio, low=0.0)
        if self.warmup_ratio >= 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _finite("train.label_smoothing", self.label_smoothing, low=0.0)
        if self.label_smoothing >= 1.0:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _finite("train.contrast_temperature", self.contrast_temperature, positive=True)
        _finite("train.first_tokens_weight", self.first_tokens_weight, positive=True)
        if self.first_tokens < 0:
            raise ValueError(f"train.first_tokens must be >= 0, got {self.first_tokens}")
        for name in ("modulation_l2", "neftune_alpha", "weight_decay", "grad_clip", "embedding_noise",
                     "contrast_weight"):
            _finite(f"train.{name}", getattr(self, name), low=0.0)
        for name in ("checkpoint_every", "log_every", "stop_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every == 0:
            raise ValueError("train.log_every must be positive, got 0")


@dataclass
class EvalConfig:
    every: int = field(default=100, metadata={"help": "validation losses every N steps (0: only at end)"})
    max_examples: int = field(default=64, metadata={"help": "validation examples per split (seen, unseen)"})
    batch_size: int = field(default=8, metadata={"help": "per-rank evaluation batch size"})
    generate: bool = field(default=True, metadata={"help": "rule compliance of greedy answers at the end (built-in)"})
    prompts: int = field(default=8, metadata={"help": "validation prompts asked under every condition and rule"})
    paraphrases_per_prompt: int = field(default=2, metadata={"help": "held-out paraphrases per prompt and rule"})
    controls: int = field(default=16, metadata={"help": "answers under random strings / unrelated sentences"})
    base_prompt: bool = field(default=True, metadata={
        "help": "also answer with adapters off and the description in the prompt (the base+prompt baseline)"})
    generate_batch_size: int = field(default=16, metadata={"help": "prompts per generation batch"})
    max_new_tokens: int = 48
    retention: int = field(default=44, metadata={
        "help": "content retention: factual questions asked with adapters off and under every seen context's "
                "held-out description (zhyper.evaluation.retention; 0: off)"})
    retention_tokens: int = field(default=48, metadata={"help": "most new tokens per content-retention answer"})

    def __post_init__(self):
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.every}")
        if self.retention < 0:
            raise ValueError(f"eval.retention must be >= 0 (0: off), got {self.retention}")
        for name in ("max_examples", "batch_size", "prompts", "paraphrases_per_prompt", "controls",
                     "generate_batch_size", "max_new_tokens", "retention_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"eval.{name} must be positive, got {getattr(self, name)}")


@dataclass
class RunConfig:
    method: str = field(default="zhyper", metadata={
        "help": "zhyper (hypernetwork) | lora (multi-task PEFT LoRA, the baseline; same loop and data)"})
    base_model: str = field(default="smollm2", metadata={
        "help": "smollm2 (shipped SmolLM2-135M-Instruct), tiny-llama (random, tests), or a path / hub id"})
    base_revision: str | None = None
    tiny: TinyConfig = field(default_factory=TinyConfig)
    model: ZhyperConfig = field(default_factory=ZhyperConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/default"
    experiment: str = field(default="zhyper", metadata={"help": "MLflow experiment name"})
    tracking_uri: str | None = field(default=None, metadata={
        "help": "MLflow URI; default $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db"})
    run_name: str | None = None
    debug_outputs: bool = field(default=False, metadata={
        "help": "also write partition_rank*.json and probe.safetensors (what the engine tests compare)"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "lora" and self.train.contrast_weight > 0:
            raise ValueError("train.contrast_weight acts on the hypernetwork's modulations; method 'lora' has none")
        if self.model.freeze_factors_from is not None:
            if self.method != "zhyper":
                raise ValueError("model.freeze_factors_from: freezes Zhyper's shared A/B under a trained hypernetwork; "
                                 f"method {self.method!r} has none (use method zhyper)")
            from zhyper.factors import check_factor_source

            check_factor_source(self.model.freeze_factors_from, self.model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _known(section: list[str]) -> list[str]:
    """The field names of the config section at ``section`` (e.g. ["train"]), or of the top level."""
    node: Any = RunConfig()
    for part in section:
        node = getattr(node, part, None)
        if not is_dataclass(node):
            return []
    return [f.name for f in fields(node)]


def _readable(err: Exception) -> ValueError:
    """An OmegaConf error as a ValueError naming the key, the value given and what is expected."""
    import difflib

    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or ""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, ConfigKeyError):
        parts = key.split(".")
        known = _known(parts[:-1])
        close = difflib.get_close_matches(parts[-1], known, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return ValueError(f"unknown key '{key}' in the run config{hint}; known keys of "
                          f"{'.'.join(parts[:-1]) or 'the top level'}: {known}")
    if isinstance(err, ValidationError):
        value = getattr(err, "value", None)
        value = value._value() if hasattr(value, "_value") else value  # an OmegaConf node: its content
        merge = re.match(r"Merge error: (\w+) is not a subclass of (\w+)\. value: (.*)", first)
        if merge:
            section = {type(getattr(RunConfig(), f.name)).__name__: f.name for f in fields(RunConfig)}
            name = section.get(merge.group(2), merge.group(2))
            return ValueError(f"{name}: expected a mapping (a section of the run config), got {merge.group(3)} "
                              f"({merge.group(1)})")
        if "is not a ListConfig" in first:
            return ValueError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        if "is not a DictConfig" in first:
            return ValueError(f"{key}: expected a mapping (a section), got {value!r} ({type(value).__name__})")
        return ValueError(f"{key}: {first}" if key and key not in first else first)
    return ValueError(first)


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from a plain nested dict (as read from YAML) and ``key=value`` overrides; validates all."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(raw, dict):
        raise ValueError(f"a run config must be a mapping, got {type(raw).__name__}")
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. train.lr=5e-4)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(raw),
                                 OmegaConf.from_dotlist(list(overrides or [])))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _readable(err) from None
    except (TypeError, ValueError) as err:
        raise ValueError(_with_section(str(err))) from None
    return cfg  # type: ignore[return-value]


def _with_section(message: str) -> str:
    """A ZhyperConfig check's message ("rank: ...") with its key as the run config spells it ("model.rank: ...")."""
    name = message.split(":", 1)[0]
    return f"model.{message}" if name in {f.name for f in fields(ZhyperConfig)} else message


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run YAML (or the defaults when path is None) and apply overrides."""
    import yaml

    from zhyper.io import read_text

    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(read_text(path, "run config")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: malformed YAML: {err}") from err
        except FileNotFoundError:
            raise ValueError(f"run config {path} does not exist") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a run config must be a mapping at top level")
    try:
        return build_config(raw, overrides)
    except ValueError as err:
        where = f"{path}: " if path else ""
        raise ValueError(f"{where}{err}") from None


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
