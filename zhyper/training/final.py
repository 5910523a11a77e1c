"""The end of a run: gather the trained tensors, write the checkpoint and a PEFT example on rank 0.

Only the trained tensors are gathered (the hypernetwork and the shared A/B, or the LoRA factors:
megabytes, not the base). Rank 0 puts them into the same model built on a weightless (meta)
base and saves it, so the end of training never holds a second copy of the base model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FINAL = "final"
PEFT_EXAMPLE = "peft_example"


def gather_trained(engine) -> dict[str, torch.Tensor]:
    """{name: full fp32 tensor on the CPU} of every trained parameter (a collective: call on every rank),
    plus the hypernetwork's buffers (never partitioned)."""
    import deepspeed

    out = {}
    for name, p in engine.module.named_parameters():
        if p.requires_grad:
            full = deepspeed.utils.safe_get_full_fp32_param(p)  # the optimizer's fp32 master copy
            if full is None:  # ZeRO stage 0 in fp32: the module holds the master weights
                full = p.detach()
            out[name] = full.detach().float().cpu().clone()
        elif name.endswith((".lora_A", ".lora_B")):  # shared factors frozen (model.freeze_factors_from): kept too
            out[name] = _frozen_full(p)
    hypernet = getattr(engine.module, "hypernet", None)
    if hypernet is not None:
        out.update({f"hypernet.{n}": b.detach().float().cpu().clone() for n, b in hypernet.named_buffers()})
    for name, t in out.items():
        if not torch.isfinite(t).all():
            raise FloatingPointError(f"trained tensor {name} holds NaN or inf; nothing is saved")
    return out


def _frozen_full(p) -> torch.Tensor:
    """A frozen parameter's whole value on the CPU (gathered when ZeRO-3 partitions it: a collective)."""
    import deepspeed

    if hasattr(p, "ds_id"):
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            return p.detach().float().cpu().clone()
    return p.detach().float().cpu().clone()


def base_fingerprint(engine) -> dict | None:
    """The fingerprint of the live engine's frozen base (``zhyper.pretrained.base_fingerprint``), for the checkpoint
    that ``write_final`` builds on a weightless base. Under ZeRO-3 the three tensors are gathered first: a
    collective, call it on every rank. None for a model without a hypernetwork (the LoRA baseline)."""
    import deepspeed

    from zhyper.pretrained import base_fingerprint as fingerprint
    from zhyper.pretrained import fingerprint_tensors

    module = engine.module
    if getattr(module, "hypernet", None) is None:
        return None
    params = [p for _, p in fingerprint_tensors(module)]
    if any(hasattr(p, "ds_id") for p in params):  # partitioned (ZeRO-3)
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return fingerprint(module)
    return fingerprint(module)


def write_final(cfg, tokenizer, tensors: dict[str, torch.Tensor], out_dir: Path, data,
                fingerprint: dict | None = None) -> dict[str, Path]:
    """Rank 0: ``<out>/final`` (zhyper checkpoint, or the LoRA adapter) and ``<out>/peft_example``;
    ``fingerprint``: the base's (``base_fingerprint``), recorded in the checkpoint."""
    from zhyper.io import atomic_write
    from zhyper.training.build import meta_model

    model = meta_model(cfg, tokenizer, tensors)
    model.base_fingerprint = fingerprint
    model.training_config = cfg.to_dict()  # recorded in zhyper_config.json and shown on the model card
    final_dir = model.save_pretrained(out_dir / FINAL)
    paths = {"checkpoint": final_dir}
    if cfg.method == "zhyper":
        from zhyper.serving.contexts import save_contexts

        # the contexts this checkpoint knows, for `zhyper serve` (model "zhyper:<name>"): held-out wordings first
        save_contexts(final_dir, {c: [*data.heldout_descriptions.get(c, []), *data.descriptions.get(c, [])]
                                  for c in data.contexts})
        context = data.seen_contexts[0]
        description = (data.heldout_descriptions.get(context) or data.descriptions[context])[0]
        example = model.export_peft(description, out_dir / PEFT_EXAMPLE)
        atomic_write(example / "DESCRIPTION.txt", description + "\n")
        paths["peft_example"] = example
    log.info("wrote %s", ", ".join(f"{k} {v}" for k, v in paths.items()))
    return paths


def write_debug_outputs(engine, run, collator, session) -> None:
    """``partition_rank<r>.json`` (how much of the model this rank holds) and, on rank 0, ``probe.safetensors``
    (the live engine's logits on the first training batch), for the tests that check ZeRO-3 and the gather."""
    import json

    import torch
    from safetensors.torch import save_file

    from zhyper.io import atomic_write

    params = list(engine.module.parameters())
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    atomic_write(session.out_dir / f"partition_rank{session.rank}.json",
                 json.dumps({"held": held, "full": full, "world": session.world}))
    probe = collator([{**run.rows[r], "description": d} for r, d in run.sampler.batch(0)])
    emb = run.table(probe["descriptions"])
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=probe["input_ids"].to(engine.device),
                        attention_mask=probe["attention_mask"].to(engine.device), context_embeddings=emb).logits
    engine.train()
    if session.master:
        tmp = session.out_dir / ".probe.safetensors.tmp"
        save_file({"logits": logits.float().cpu().contiguous(), "input_ids": probe["input_ids"],
                   "attention_mask": probe["attention_mask"], "context_embeddings": emb.float().cpu().contiguous()},
                  str(tmp))
        tmp.replace(session.out_dir / "probe.safetensors")
