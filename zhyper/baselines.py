"""The multi-task LoRA baseline: one PEFT LoRA for every context, with the same interface as ZhyperModel.

What Zhyper is compared against ("prompted multi-task LoRA"): a single PEFT LoRA (same targets,
rank, alpha and dropout as the Zhyper run) trained on the mixture of every context's data by the
same loop, with the description written in the prompt (``data.description_in_prompt``) or not at
all. It has no hypernetwork but the same conditioning interface as ZhyperModel, with an identity
conditioning: ``embed`` gives (n, 0) embeddings, ``modulation`` gives ``None``, ``conditioned`` changes
nothing, and ``forward`` accepts ``context_embeddings`` and ignores them, so the training loop, the
evaluation and the DeepSpeed engine treat both models alike.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from zhyper.config import ZhyperConfig


class LoRABaseline(nn.Module):
    """A PEFT LoRA model (``peft_model``) plus its tokenizer; descriptions reach it only through the prompt."""

    def __init__(self, peft_model: nn.Module, config: ZhyperConfig, tokenizer=None, base_model_id: str | None = None):
        super().__init__()
        self.base = peft_model
        self.config = config
        self.tokenizer = tokenizer
        self.base_model_id = base_model_id

    @classmethod
    def from_base(cls, base: nn.Module, config: ZhyperConfig, tokenizer=None) -> "LoRABaseline":
        """Wrap ``base`` (frozen in place) in a PEFT LoRA with ``config``'s targets, rank, alpha, dropout."""
        from peft import LoraConfig, get_peft_model

        base.requires_grad_(False)
        targets = config.target_modules
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, use_rslora=config.rslora,
                          target_modules=targets if isinstance(targets, str) else list(targets), bias="none",
                          task_type="CAUSAL_LM")
        name = getattr(getattr(base, "config", None), "_name_or_path", None) or None
        return cls(get_peft_model(base, lora), config, tokenizer, name)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, base_model: str | None = None,
                        verify: bool | None = None) -> "LoRABaseline":
        """Load a ``save_pretrained`` folder (a PEFT adapter) onto its recorded base, or ``base_model``.

        The adapter's weights must have the SHA-256 its ``zhyper_export.json`` records, if it has one
        (``verify=False`` or ``ZHYPER_VERIFY_CHECKSUMS=0`` skips this for weights edited on purpose)."""
        import json

        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from zhyper.base_model import resolve_base
        from zhyper.export import verify_export

        config_file = Path(folder) / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder}: no adapter_config.json; expected a PEFT adapter folder "
                                    "(LoRABaseline.save_pretrained, a LoRA run's final/)")
        verify_export(folder, verify)
        record = json.loads(config_file.read_text(encoding="utf-8"))
        base_id = base_model or record.get("base_model_name_or_path")
        if not base_id:
            raise ValueError(f"{config_file} records no base_model_name_or_path; pass base_model= (--base)")
        path = resolve_base(base_id)
        base = AutoModelForCausalLM.from_pretrained(path).requires_grad_(False)
        targets = record.get("target_modules") or []
        config = ZhyperConfig(rank=record["r"], alpha=float(record["lora_alpha"]),
                              target_modules=targets if isinstance(targets, str) else sorted(targets))
        return cls(PeftModel.from_pretrained(base, str(folder)), config, AutoTokenizer.from_pretrained(path),
                   str(base_id))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, context_embeddings: torch.Tensor | None = None, **kwargs):
        """The LoRA model's output; ``context_embeddings`` is accepted and ignored (no hypernetwork)."""
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        out.modulation = None
        return out

    def embed(self, descriptions: Sequence[str]) -> torch.Tensor:
        """(n, 0) embeddings: the description does not reach this model except through its prompt."""
        return torch.zeros(len(descriptions), 0)

    def modulation(self, descriptions, weights=None, combine: str = "modulation", check_finite: bool = False):
        """``None``: the identity conditioning (the same trained LoRA for every description)."""
        return None

    @contextmanager
    def conditioned(self, modulation) -> Iterator[None]:
        """The identity conditioning: the block runs the LoRA model as it is."""
        if modulation is not None:
            raise ValueError(f"modulation: the LoRA baseline has no hypernetwork and takes None, got {type(modulation)}")
        yield

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        """Run the plain base model inside the block."""
        with self.base.disable_adapter():
            yield

    @torch.no_grad()
    def generate(self, prompts: Sequence[str] | str, descriptions, system: str = "",
                 description_in_prompt: bool = False, weights=None, combine: str = "text", **gen_kwargs) -> list[str]:
        """Answer ``prompts`` (chat template, left padding); a description is used only if put in the prompt.

        Entries may be lists of descriptions, as for ZhyperModel; they are joined into one text
        (``combine="text"``, the only way a prompt can combine them; weights are refused)."""
        from zhyper import compose
        from zhyper.generation import _as_list, generate_texts

        if combine != "text" or weights is not None:
            raise ValueError("combine/weights: the LoRA baseline reads descriptions from its prompt only; "
                             "several are joined into one text (combine='text', no weights)")
        prompts = _as_list(prompts, None, "prompts")
        texts = [compose.as_text(e) for e in compose.entries(descriptions, None, len(prompts))]
        return generate_texts(self.base, self.tokenizer, prompts, texts, system=system,
                              description_in_prompt=description_in_prompt, **gen_kwargs)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """A standard PEFT adapter folder (adapter_config.json + adapter_model.safetensors), written atomically,
        with ``zhyper_export.json`` recording the weights' SHA-256 (checked by ``from_pretrained``)."""
        from zhyper.export import ADAPTER_WEIGHTS, write_record
        from zhyper.io import atomic_folder

        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            self.base.save_pretrained(str(tmp))
            names = [p.name for p in tmp.iterdir() if p.is_file()]
            write_record(tmp, {"written_by": "LoRABaseline.save_pretrained", "base_model": self.base_model_id},
                         "peft", names, [ADAPTER_WEIGHTS])
        return folder
