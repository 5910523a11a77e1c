"""Train a Zhyper model with ``transformers.Trainer`` or ``trl.SFTTrainer`` (docs/hf_trainer.md).

    from zhyper.hf import ZhyperTrainer, training_arguments
    trainer = ZhyperTrainer(model, training_arguments(OptimConfig(), "out", per_device_train_batch_size=4),
                            train_dataset=rows)        # columns prompt, response, description (system, context)
    trainer.train()
    trainer.save_model("out/final")                     # a zhyper checkpoint: ZhyperModel.from_pretrained

The objective is the one of ``launch/train.py``, computed by the same functions
(``zhyper.training.step.micro_batch_loss``, batches from ``zhyper.data.ChatCollator``): the summed
response cross-entropy divided by the response tokens of the whole optimizer step (every micro-batch,
every rank), the first-token weight, label smoothing, the modulation penalty and, on a step's first
micro-batch, the description-contrastive term (``train.contrast_weight``) over two wordings of every
context. ``objective`` is the run config's ``train:`` section (``OptimConfig``); the optimisation itself
(learning rate, weight decay, steps, warm-up, clipping, seed, DeepSpeed) comes from the
``TrainingArguments``; ``training_arguments`` maps a ``train:`` section onto them.

``ZhyperTrainer`` and ``ZhyperSFTTrainer`` are built on first access, so ``import zhyper.hf`` imports
neither transformers' Trainer nor TRL.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ["prompt", "response", "description", "system", "context"]  # what ChatCollator reads (and keeps)
_PARENTS = {"ZhyperTrainer": ("transformers", "Trainer"), "ZhyperSFTTrainer": ("trl", "SFTTrainer")}

__all__ = ["ZhyperTrainer", "ZhyperSFTTrainer", "ZhyperTrainerMixin", "training_arguments", "add_null_context",
           "context_descriptions"]


def training_arguments(objective=None, output_dir: str = "zhyper-trainer", cls=None, **overrides):
    """``TrainingArguments`` (or ``cls``, e.g. ``trl.SFTConfig``) with the optimisation of a ``train:`` section.

    ``objective``: an ``OptimConfig`` or a dict of its fields (default: the defaults). Maps ``lr``,
    ``weight_decay``, ``max_steps``, ``warmup_ratio`` (as warm-up steps, rounded as ``launch/train.py`` does),
    ``grad_clip``, ``seed`` and ``gradient_checkpointing``; torch's AdamW, a linear schedule, a log line every
    step, no reporting integrations and fp32, unless ``overrides`` say otherwise. Without CUDA, ``use_cpu=True``:
    accelerate then sees the ranks of ``torchrun`` on the CPU (else each rank trains alone, world size 1).
    """
    if cls is None:
        from transformers import TrainingArguments as cls
    train = _objective(objective)
    kwargs = dict(output_dir=str(output_dir), learning_rate=train.lr, weight_decay=train.weight_decay,
                  max_steps=train.max_steps, warmup_steps=int(round(train.warmup_ratio * train.max_steps)),
                  lr_scheduler_type="linear", max_grad_norm=train.grad_clip, seed=train.seed, optim="adamw_torch",
                  logging_steps=1, report_to=[], save_strategy="no", bf16=False, fp16=False,
                  activation_checkpointing=train.gradient_checkpointing, use_cpu=not torch.cuda.is_available())
    kwargs.update(overrides)
    return cls(**kwargs)


def _objective(objective):
    from zhyper.training.config import OptimConfig

    if objective is None:
        return OptimConfig()
    if isinstance(objective, dict):
        return OptimConfig(**objective)
    if not isinstance(objective, OptimConfig):
        raise TypeError(f"objective: expected a zhyper.training.config.OptimConfig or a dict of its fields, got "
                        f"{type(objective).__name__}")
    return objective


def add_null_context(dataset, seed: int = 0):
    """``dataset`` plus the null pseudo-context of ``data.null_context``: one row per training prompt with its
    plain answer (column ``base_answer``) as the response, context ``_null``, and as description a random string
    or an unrelated sentence of the training pool (drawn per row from ``seed``)."""
    import random

    from datasets import concatenate_datasets

    from zhyper.training.data import null_pool, null_rows

    pool = null_pool(seed)
    null = null_rows(dataset)
    rng = random.Random(f"{seed}:null-descriptions")
    drawn = [pool[rng.randrange(len(pool))] for _ in range(len(null))]
    null = null.map(lambda _, i: {"description": drawn[i]}, with_indices=True)
    return concatenate_datasets([dataset, null.cast(dataset.features)])


def context_descriptions(dataset) -> dict[str, list[str]]:
    """{context: its distinct descriptions} of a dataset (column ``context``; without it each description is
    its own context): the wordings the contrastive term pairs."""
    described = list(dataset["description"])
    contexts = dataset["context"] if "context" in dataset.column_names else described
    out: dict[str, set[str]] = {}
    for c, d in zip(contexts, described):
        if d:
            out.setdefault(c, set()).add(d)
    return {c: sorted(ds) for c, ds in sorted(out.items())}


def unwrap(model):
    """The ZhyperModel inside a DeepSpeed engine or a DDP wrapper."""
    while hasattr(model, "module") and not hasattr(model, "hypernet"):
        model = model.module
    return model


@contextmanager
def hf_view(model):
    """Inside the block the ZhyperModel shows its base's HF config as ``.config`` and has ``add_model_tags`` and
    ``activation_checkpointing_enable``, as Trainer / SFTTrainer expect of a transformers model; restored after."""
    zconfig = model.config
    tags = model.__dict__.setdefault("model_tags", [])
    model.config = model.base.config
    model.add_model_tags = lambda new: tags.extend(t for t in ([new] if isinstance(new, str) else new)
                                                   if t not in tags)
    model.activation_checkpointing_enable = lambda **kw: _checkpointing(model, **kw)
    try:
        yield model
    finally:
        model.config = zconfig
        del model.add_model_tags, model.activation_checkpointing_enable


def _checkpointing(model, activation_checkpointing_kwargs=None, every_n_layers: int = 1, offload: bool = False):
    """The Trainer's ``activation_checkpointing``: zhyper's non-reentrant checkpointing of every block."""
    if every_n_layers != 1 or offload:
        raise ValueError("activation_checkpointing_kwargs: every_n_layers and offload are not supported by zhyper's "
                         "checkpointing (every block, activations kept on the device)")
    return model.gradient_checkpointing_enable(activation_checkpointing_kwargs)


def checkpoint_model(model, tensors: dict[str, torch.Tensor], fingerprint: dict | None, config=None):
    """``model`` (its ZhyperConfig ``config``, default ``model.config``) rebuilt on a weightless (meta) copy of its
    base, holding ``tensors``: what ``save_pretrained`` writes, without a second copy of the base and whatever ZeRO
    stage holds the live weights."""
    from transformers import AutoModelForCausalLM

    from zhyper.model import ZhyperModel

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model.base.config)
        copy = ZhyperModel.from_base(base, config if config is not None else model.config, tokenizer=model.tokenizer)
    expected = {n for n, p in copy.named_parameters() if p.requires_grad}
    expected |= {f"hypernet.{n}" for n, _ in copy.hypernet.named_buffers()}
    missing = sorted(expected - set(tensors))
    if missing:
        raise RuntimeError(f"trained tensors do not fit the model: missing {missing[:4]}")
    copy.load_state_dict(tensors, strict=False, assign=True)
    copy.base_model_id, copy.base_revision = model.base_model_id, model.base_revision
    copy.base_folder, copy.checkpoint_folder = model.base_folder, model.checkpoint_folder
    copy.base_fingerprint = fingerprint
    return copy.eval()


class ZhyperTrainerMixin:
    """The Zhyper objective, collator, optimizer groups and checkpoint format for a ``transformers.Trainer``
    subclass (``ZhyperTrainer``, ``ZhyperSFTTrainer``).

    Keyword arguments beside the Trainer's: ``objective`` (``OptimConfig`` or dict: the loss terms; default
    the defaults), ``tokenizer`` (default the model's), ``max_length`` / ``description_in_prompt`` (of the
    default ``ChatCollator``), ``embed`` (descriptions -> embeddings; default: every description of the
    datasets embedded once by the model's encoder), ``descriptions`` ({context: wordings} for the contrastive
    term; default ``context_descriptions(train_dataset)``), ``shuffle`` (False: the dataset's order).
    """

    loss_is_scaled_for_ga = True  # the loss divides by the tokens of the whole accumulated step

    def __init__(self, model, args=None, train_dataset=None, *, objective=None, tokenizer=None,
                 max_length: int = 256, description_in_prompt: bool = False, embed=None, descriptions=None,
                 shuffle: bool = True, **kwargs):
        from zhyper.data import ChatCollator

        if not hasattr(model, "hypernet"):
            raise TypeError(f"model: expected a ZhyperModel, got {type(model).__name__}")
        self.objective = _objective(objective)
        self.shuffle = shuffle
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if tokenizer is None:
            raise ValueError("tokenizer: the model has none; pass tokenizer=")
        kwargs.setdefault("data_collator", ChatCollator(tokenizer, max_length=max_length,
                                                        description_in_prompt=description_in_prompt))
        kwargs.setdefault("processing_class", tokenizer)
        args = self._prepare_args(args)
        check_deepspeed_config(getattr(getattr(args, "hf_deepspeed_config", None), "config", None))
        self._step: dict | None = None  # the optimizer step in progress (its token count, micro-batches seen)
        self._logged: list[float] = []
        self.step_losses: list[float] = []  # token-mean response loss of every step, over all ranks
        self.zhyper_config = model.config  # while the Trainer runs, model.config is the base's (hf_view)
        with hf_view(model):
            super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        self.descriptions = (descriptions if descriptions is not None
                             else context_descriptions(train_dataset) if train_dataset is not None else {})
        self.embed = embed if embed is not None else self._description_table()

    def _prepare_args(self, args):
        return args

    def train(self, *args, **kwargs):
        """``Trainer.train`` with the model showing its base's HF config (``hf_view``) as the Trainer expects."""
        with hf_view(unwrap(self.model)):
            return super().train(*args, **kwargs)

    def _description_table(self):
        """Every description of the datasets and of the contrastive pairs, embedded once (``DescriptionTable``)."""
        from zhyper.training.data import DescriptionTable

        texts = {d for pool in self.descriptions.values() for d in pool}
        evals = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
        for ds in [self.train_dataset, *evals]:
            if ds is not None and "description" in getattr(ds, "column_names", []):
                texts |= set(ds["description"])
        model = unwrap(self.model)
        return DescriptionTable.build(model.encoder, sorted(texts), self.args.device)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(FEATURE_COLUMNS)

    def _get_train_sampler(self, train_dataset=None):
        if not self.shuffle:
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None
                                                      else self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer class on zhyper's parameter groups (no decay on vectors, norms and embeddings;
        the hypernetwork at ``lr * hypernet_lr_scale``)."""
        from zhyper.training.objective import param_groups

        if self.optimizer is None:
            groups = param_groups(unwrap(model or self.model), self.args.weight_decay, self.args.learning_rate,
                                  self.objective.hypernet_lr_scale)
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            self.optimizer = cls(groups, **kwargs)
        return self.optimizer

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches and its (weighted) response tokens over all ranks, as ``train_step`` counts."""
        from zhyper.training.step import step_tokens

        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        tokens = torch.tensor(step_tokens(batches, self.objective), dtype=torch.float64, device=self.args.device)
        if self.args.world_size > 1:
            torch.distributed.all_reduce(tokens)
        self._step = {"tokens": float(tokens), "micro": len(batches), "seen": 0,
                      "lsum": torch.zeros((), dtype=torch.float64)}
        return batches, tokens

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``zhyper.training.step.micro_batch_loss`` on one micro-batch (a plain token mean outside training)."""
        from zhyper.training.step import contrast_pairs, micro_batch_loss, step_tokens

        step, obj = self._step, self.objective
        zmodel = unwrap(model)
        if step is None or not model.training:  # evaluation: this batch's token mean
            norm, n_micro, contrast = max(step_tokens([inputs], obj), 1.0), 1, None
        else:
            norm, n_micro = step["tokens"] / self.args.world_size, step["micro"]
            contrast = (contrast_pairs(self.descriptions, self.state.global_step, obj.seed, self.args.process_index)
                        if obj.contrast_weight > 0 and step["seen"] == 0 and self.descriptions else None)
        loss, lsum, out = micro_batch_loss(model, zmodel.hypernet, inputs, self.embed, obj, self.zhyper_config, norm,
                                           n_micro, contrast)
        if step is not None and model.training:
            self._account(step, lsum)
        return (loss, out) if return_outputs else loss

    def _account(self, step: dict, lsum: torch.Tensor) -> None:
        """Add a micro-batch's summed loss; after the step's last one, record the step's token-mean loss."""
        from zhyper.training.step import check_finite

        step["lsum"] += lsum
        step["seen"] += 1
        if step["seen"] < step["micro"]:
            return
        total = step["lsum"].to(self.args.device)
        if self.args.world_size > 1:
            torch.distributed.all_reduce(total)
        value = float(total) / max(step["tokens"], 1.0)
        check_finite(value, self.state.global_step, self.optimizer.param_groups[0]["lr"])
        self.step_losses.append(value)
        self._logged.append(value)
        self._step = None

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds ``response_loss``: the token-mean response loss since the last log line (``launch/train.py``'s
        loss; the Trainer's ``loss`` also holds the modulation penalty and the contrastive term)."""
        if self._logged and "loss" in logs:
            logs["response_loss"] = sum(self._logged) / len(self._logged)
            self._logged = []
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A zhyper checkpoint (``zhyper_config.json`` + ``model.safetensors``) in ``output_dir``, loadable by
        ``ZhyperModel.from_pretrained``. Call on every rank: under DeepSpeed the trained tensors are gathered."""
        from zhyper.training.final import base_fingerprint, gather_trained

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        engine = self.model_wrapped if self.is_deepspeed_enabled else _Engine(unwrap(self.model))
        tensors = gather_trained(engine)  # the fp32 master weights; a collective under DeepSpeed
        fingerprint = base_fingerprint(engine)  # a collective under ZeRO-3
        if self.args.should_save:
            checkpoint_model(unwrap(self.model), tensors, fingerprint, self.zhyper_config).save_pretrained(output_dir)
            log.info("wrote the zhyper checkpoint %s", output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """``resume_from_checkpoint`` without DeepSpeed: the trained tensors of the zhyper checkpoint in that
        ``checkpoint-N`` folder (its record and checksum checked) copied into the live model."""
        from pathlib import Path

        from safetensors.torch import load_file

        from zhyper.checksums import verify_files
        from zhyper.pretrained import CONFIG_FILE, check_weights_file, read_config

        folder = Path(resume_from_checkpoint)
        record = read_config(folder)
        weights = check_weights_file(folder, record)
        verify_files(folder, record.get("files"), folder / CONFIG_FILE)
        saved, live = load_file(str(weights)), unwrap(model or self.model).trainable_state_dict()
        if set(saved) != set(live):
            raise ValueError(f"{folder}: its tensors do not fit this model (missing "
                             f"{sorted(set(live) - set(saved))[:3]}, unexpected {sorted(set(saved) - set(live))[:3]})")
        with torch.no_grad():
            for name, tensor in live.items():
                tensor.copy_(saved[name])

    def create_model_card(self, *args, **kwargs) -> None:
        """No Trainer model card: the checkpoint folder holds zhyper's files only."""


class _Engine:
    """A plain model seen as a DeepSpeed engine (``.module``) by ``zhyper.training.final``."""

    def __init__(self, module):
        self.module = module


def check_deepspeed_config(config: dict | None) -> None:
    """A DeepSpeed config's own ``optimizer`` would replace zhyper's parameter groups (no decay on vectors, the
    hypernetwork's learning-rate scale): refused; without it the Trainer builds the optimizer and DeepSpeed wraps it."""
    if config and "optimizer" in config:
        raise ValueError("deepspeed: the config has an 'optimizer' section; remove it: the Trainer then builds "
                         "zhyper's parameter groups (optim=adamw_torch by default) and DeepSpeed wraps them")


def _sft_prepare_args(self, args):
    """An ``SFTConfig`` whose dataset preparation is skipped (``ChatCollator`` tokenises the raw columns)."""
    from trl import SFTConfig

    if args is None:
        args = training_arguments(cls=SFTConfig)
    elif not isinstance(args, SFTConfig):
        args = SFTConfig(**{k: v for k, v in args.to_dict().items() if k != "hub_token"}, hub_token=args.hub_token)
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    return args


def __getattr__(name: str):
    if name not in _PARENTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, parent = _PARENTS[name]
    body = {"__module__": __name__, "__qualname__": name,
            "__doc__": f"``{module}.{parent}`` with zhyper's objective, collator and checkpoints "
                       f"(``ZhyperTrainerMixin``; docs/hf_trainer.md)."}
    if name == "ZhyperSFTTrainer":
        body["_prepare_args"] = _sft_prepare_args
    cls = type(name, (ZhyperTrainerMixin, getattr(importlib.import_module(module), parent)), body)
    globals()[name] = cls
    return cls
