"""Building a run: the DeepSpeed config, the frozen base, the trained model (Zhyper or LoRA), the engine.

Under ZeRO-3 the base is partitioned while it loads (``HfDeepSpeedConfig`` alive during
``from_pretrained``), so no rank ever holds a whole copy of it. ``meta_model`` builds the same
trained model on a base without weights (the meta device): what rank 0 needs at the end to write
the checkpoint and the PEFT example from the gathered trained tensors alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def resolve_ds_config(path: str | Path, cfg, world: int) -> dict:
    """Read the DeepSpeed JSON and fill the batch, LR and clipping fields from the run config."""
    from zhyper.io import read_text

    try:
        ds = json.loads(read_text(path, "--ds_config"))
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--ds_config {path}: malformed JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(ds, dict):
        raise ValueError(f"--ds_config {path}: expected a JSON object at top level")
    gas = ds.get("gradient_accumulation_steps", 1)
    gas = 1 if gas == "auto" else gas
    if isinstance(gas, bool) or not isinstance(gas, int) or gas < 1:
        raise ValueError(f"--ds_config {path}: gradient_accumulation_steps must be a positive int or 'auto', "
                         f"got {gas!r}")
    global_batch = cfg.data.n_contexts * cfg.data.k
    if global_batch % (world * gas):
        raise ValueError(f"data.n_contexts x data.k = {global_batch} examples per step must be divisible by "
                         f"world size {world} x gradient_accumulation_steps {gas}")
    ds.update(train_batch_size=global_batch, gradient_accumulation_steps=gas,
              train_micro_batch_size_per_gpu=global_batch // (world * gas), gradient_clipping=cfg.train.grad_clip)
    opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True}})
    opt.setdefault("params", {}).update(lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ds.pop("scheduler", None)  # the schedule is ours (transformers' warm-up + linear decay), stepped by the engine
    return ds


def ds_dtype(ds: dict) -> torch.dtype:
    return torch.bfloat16 if ds.get("bf16", {}).get("enabled") else torch.float32


def zero_stage(ds: dict) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def tokenizer_for(cfg):
    from transformers import AutoTokenizer

    from zhyper.base_model import tokenizer_source
    from zhyper.bases import BASES

    revision = None if cfg.base_model in BASES else cfg.base_revision
    return AutoTokenizer.from_pretrained(tokenizer_source(cfg.base_model), revision=revision)


def base_config(cfg, tokenizer):
    """The base model's HF config (no weights read)."""
    from transformers import AutoConfig, LlamaConfig

    from zhyper.base_model import resolve_base

    if cfg.base_model == "tiny-llama":  # random weights, the real architecture; for tests
        return LlamaConfig(vocab_size=len(tokenizer), intermediate_size=2 * cfg.tiny.hidden_size,
                           hidden_size=cfg.tiny.hidden_size, num_hidden_layers=cfg.tiny.num_hidden_layers,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    return AutoConfig.from_pretrained(resolve_base(cfg.base_model), revision=cfg.base_revision)


def build_base(cfg, ds: dict, tokenizer):
    """(frozen base LM, HfDeepSpeedConfig or None). Under ZeRO-3 the base is partitioned while it loads.

    Keep the returned HfDeepSpeedConfig alive until ``deepspeed.initialize`` has run.
    """
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from zhyper.base_model import resolve_base

    dtype = ds_dtype(ds)
    if cfg.base_model == "tiny-llama":
        # Built whole (HF's weight init indexes tensors that zero.Init has already emptied); the
        # engine partitions it in deepspeed.initialize. The same seed gives every rank the same weights.
        torch.manual_seed(cfg.train.seed)
        return LlamaForCausalLM(base_config(cfg, tokenizer)).to(dtype), None
    path = resolve_base(cfg.base_model)
    hf_ds = None
    if zero_stage(ds) == 3:  # must stay alive while from_pretrained runs: it switches loading to zero.Init
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds)
    base = AutoModelForCausalLM.from_pretrained(path, revision=cfg.base_revision, dtype=dtype)
    return base, hf_ds


def build_model(cfg, base, tokenizer):
    """The trained module on ``base``: a ZhyperModel, or the LoRA baseline (``method: lora``).

    The adapter and hypernetwork initialisation is seeded by ``train.seed`` (the same on every rank).
    """
    torch.manual_seed(cfg.train.seed)
    if cfg.method == "lora":
        from zhyper.baselines import LoRABaseline

        model = LoRABaseline.from_base(base, cfg.model, tokenizer=tokenizer)
    else:
        from zhyper.model import ZhyperModel

        model = ZhyperModel.from_base(base, cfg.model, tokenizer=tokenizer)
    model.base_model_id = cfg.base_model  # recorded in the checkpoint
    if cfg.train.gradient_checkpointing:
        from zhyper.layers.checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    return model


def freeze_factors(cfg, model) -> None:
    """``model.freeze_factors_from``: the shared A/B loaded from that PEFT adapter and frozen (the ablation of
    pre-trained factors); nothing when it is unset. Call before ``build_engine`` (frozen tensors get no optimizer
    state) and never on ``meta_model``'s copy (the final checkpoint carries the frozen factors as gathered)."""
    if not cfg.model.freeze_factors_from:
        return
    import logging

    from zhyper.factors import load_frozen_factors

    n = load_frozen_factors(model, cfg.model.freeze_factors_from)
    logging.getLogger(__name__).info("shared A/B of %d modules loaded from %s and frozen: only the hypernetwork "
                                     "trains", n, cfg.model.freeze_factors_from)


def meta_model(cfg, tokenizer, tensors: dict[str, torch.Tensor]):
    """The trained model on a weightless (meta) base, holding ``tensors``: for saving and export only.

    ``tensors``: every trained parameter by name, plus the hypernetwork's buffers
    (``hypernet.context_center``) for Zhyper. Nothing of the base is loaded.
    """
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(base_config(cfg, tokenizer))
        model = build_model(replace(cfg, train=replace(cfg.train, gradient_checkpointing=False)), base, tokenizer)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if cfg.method == "zhyper":
        expected |= {f"hypernet.{n}" for n, _ in model.hypernet.named_buffers()}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise RuntimeError(f"gathered tensors do not fit the model: missing {missing[:4]}, unexpected {extra[:4]}")
    model.load_state_dict(tensors, strict=False, assign=True)
    return model.eval()


def param_count(model) -> int:
    """Trainable parameters (their full size under ZeRO-3)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def build_engine(cfg, model, ds: dict):
    """``deepspeed.initialize`` with our parameter groups and transformers' warm-up/decay schedule."""
    import deepspeed

    from zhyper.training.objective import lr_schedule, param_groups

    groups = param_groups(model, cfg.train.weight_decay, cfg.train.lr, cfg.train.hypernet_lr_scale)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds,
        lr_scheduler=lambda opt: lr_schedule(opt, cfg.train.max_steps, cfg.train.warmup_ratio))
    return engine
