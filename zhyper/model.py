"""ZhyperModel: a frozen Hugging Face causal LM with ZLinear layers plus the hypernetwork, as one nn.Module.

    descriptions ─ContextEncoder (frozen, outside the module tree)─► c (b, d_c)
    c ─hypernet─► modulation (b, L, T, *shape) | {type: (b, L, r·in + out·r)}
    input_ids (b, t) ─base LM, every ZLinear modulated by its row of the grid─► logits (b, t, V)

``forward`` runs both, so a DeepSpeed engine wraps the whole thing and ZeRO-3 partitions and
gathers the hypernetwork like any other part. The sentence encoder is deliberately not a
submodule: it is frozen, and embeddings are computed once (``encode_descriptions``) and passed
to ``forward`` as ``context_embeddings``.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from zhyper.config import ZhyperConfig
from zhyper.hyper.hypernet import HyperNetwork
from zhyper.layers.inject import AdapterLayout, adapters_disabled, inject_zlinear, modulate

logger = logging.getLogger(__name__)


class ZhyperModel(nn.Module):
    """Base LM (frozen, ZLinear injected) + hypernetwork. Build with ``from_base`` or ``from_pretrained``.

    Attributes: ``base`` (the HF model), ``hypernet``, ``layout`` (AdapterLayout of the injected
    modules), ``config`` (ZhyperConfig), ``tokenizer`` (or None), ``base_model_id`` /
    ``base_revision`` (recorded in checkpoints), ``checkpoint_folder`` (the folder
    ``from_pretrained`` read, else None) and ``base_folder`` (the local folder the base model was
    read from, else None): ``save_pretrained``, ``export_peft`` and ``merge`` never write into
    either (``save_pretrained`` may rewrite the checkpoint folder itself).
    """

    def __init__(self, base: nn.Module, hypernet: HyperNetwork, layout: AdapterLayout, config: ZhyperConfig,
                 tokenizer=None, base_model_id: str | None = None, base_revision: str | None = None):
        super().__init__()
        self.base = base
        self.hypernet = hypernet
        self.layout = layout
        self.config = config
        self.tokenizer = tokenizer
        self.base_model_id, self.base_revision = base_model_id, base_revision
        self.checkpoint_folder: Path | None = None  # set by from_pretrained
        self.base_folder: Path | None = None  # set by from_base when the base was read from a local folder
        self._encoder = None  # a ContextEncoder, created on first use; not an nn.Module

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(cls, model_or_path, config: ZhyperConfig | None = None, tokenizer=None,
                  dtype: torch.dtype | None = None, revision: str | None = None) -> "ZhyperModel":
        """Inject ZLinear into a causal LM (an nn.Module, a path, a hub id or ``"smollm2"``) and build the hypernetwork.

        The base model is frozen in place. A path loads the model (``dtype``, default as saved)
        and its tokenizer. Under ZeRO-3 no parameter shape is read: sizes come from the layout.
        """
        from zhyper.base_model import base_identity, resolve_base

        config = config if config is not None else ZhyperConfig()
        if not isinstance(config, ZhyperConfig):
            raise TypeError(f"config: expected a ZhyperConfig, got {type(config).__name__}")
        if isinstance(model_or_path, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_base(model_or_path)
            base = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            base_id, base_rev = base_identity(model_or_path)
            base_rev = revision or base_rev
        elif isinstance(model_or_path, nn.Module):
            base = model_or_path
            base_id, base_rev = base_identity(getattr(getattr(base, "config", None), "_name_or_path", None) or None)
            base_rev = revision or base_rev or getattr(getattr(base, "config", None), "_commit_hash", None)
        else:
            raise TypeError(f"model_or_path: expected an nn.Module, a path or a hub id, got "
                            f"{type(model_or_path).__name__}")
        base.requires_grad_(False)
        layout = inject_zlinear(base, config.target_modules, rank=config.rank, mode=config.mode, alpha=config.alpha,
                                rslora=config.rslora, dropout=config.dropout)
        context_dim = config.resolved_context_dim()
        if context_dim is None:
            from zhyper.hyper.encoder import ContextEncoder

            context_dim = ContextEncoder(config.encoder, pooling=config.encoder_pooling).dim
        hcfg = config.hypernet_config(layout, context_dim)
        device = next(iter(base.parameters())).device
        hypernet = HyperNetwork(hcfg).to(device)
        logger.info("Zhyper %s r=%d on %d modules (%d layers x %s); hypernetwork %d parameters", config.mode,
                    config.rank, len(layout), layout.n_layers, list(layout.module_types),
                    sum(p.numel() for p in hypernet.parameters()))
        model = cls(base, hypernet, layout, config, tokenizer, base_id, base_rev)
        source = path if isinstance(model_or_path, (str, os.PathLike)) else (
            getattr(getattr(base, "config", None), "_name_or_path", None) or None)
        if source and Path(source).is_dir():
            model.base_folder = Path(source).resolve()
        return model

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, base_model=None, dtype: torch.dtype | None = None,
                        tokenizer=None, strict_base: bool = False, verify: bool | None = None,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None) -> "ZhyperModel":
        """Load a ``save_pretrained`` folder or a hub id ``"org/name"`` onto ``base_model`` (default: the recorded one).

        A local folder of that name wins; a hub id is resolved through huggingface_hub's cache and
        download (``revision``, ``cache_dir``, ``token``; ``zhyper.hub``) and checked like a folder.
        A base whose weights differ from the one the checkpoint was trained on (its recorded
        fingerprint) is a warning, or an error with ``strict_base=True``. A weights file whose SHA-256
        is not the recorded one is refused; ``verify=False`` (or ``ZHYPER_VERIFY_CHECKSUMS=0``) loads it.
        """
        from zhyper.hub import load

        return load(cls, folder, revision=revision, cache_dir=cache_dir, token=token, base_model=base_model,
                    dtype=dtype, tokenizer=tokenizer, strict_base=strict_base, verify=verify)

    def save_pretrained(self, folder: str | os.PathLike, license: str | None = None) -> Path:
        """Write ``zhyper_config.json`` + ``model.safetensors`` (hypernetwork + shared A/B) and the model card
        ``README.md`` (``zhyper.card``; ``license``: a hub license id, default the recorded one or the base's).

        Other files in ``folder`` are kept (a README.md zhyper did not write too: then no card). Refused
        before anything is written: a NaN/inf in a trained tensor (named), the base model's folder (or a
        folder inside it), and the hub cache the model was loaded from.
        """
        from zhyper.pretrained import save_checkpoint

        return save_checkpoint(self, folder, license=license)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    revision: str | None = None, commit_message: str | None = None, license: str | None = None,
                    create_pr: bool = False):
        """Upload what ``save_pretrained`` writes (card included) to the hub repository ``repo_id``, creating it if
        needed (``zhyper.hub.push``); with ``HF_HUB_OFFLINE=1`` a ConnectionError at once, nothing written."""
        from zhyper.hub import push

        return push(self, repo_id, private=private, token=token, revision=revision, commit_message=commit_message,
                    license=license, create_pr=create_pr)

    # ------------------------------------------------------------------ the function
    @property
    def context_dim(self) -> int:
        return self.hypernet.config.context_dim

    @property
    def encoder(self):
        """The ContextEncoder of ``config.encoder`` (created lazily; never a submodule)."""
        if self._encoder is None:
            from zhyper.hyper.encoder import ContextEncoder

            self._encoder = ContextEncoder(self.config.encoder, pooling=self.config.encoder_pooling)
        return self._encoder

    def embed(self, descriptions: Sequence[str]) -> torch.Tensor:
        """The conditioning interface, step 1 (then ``modulation``, then ``conditioned``): (n, d_c) fp32
        CPU embeddings of ``descriptions`` (cached by (encoder id, text))."""
        emb = self.encoder.encode(descriptions)
        if emb.shape[1] != self.context_dim:
            raise ValueError(f"encoder {self.config.encoder!r} gives {emb.shape[1]}-d embeddings but the "
                             f"hypernetwork expects context_dim {self.context_dim}")
        return emb

    encode_descriptions = embed  # the name of earlier releases

    def center_contexts(self, descriptions: Sequence[str]) -> torch.Tensor:
        """Centre the hypernetwork's input on the mean embedding of ``descriptions`` (once, before training).

        Pass the training descriptions. Without it, similar instructions reach the hypernetwork as
        nearly identical inputs and training collapses to one modulation (see ``HyperNetwork``).
        Returns the centre (d_c,).
        """
        if isinstance(descriptions, str) or len(descriptions) == 0:
            raise ValueError("descriptions: expected a non-empty list of training descriptions, got "
                             f"{descriptions!r}")
        return self.hypernet.set_context_center(self.encode_descriptions(list(descriptions)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, context_embeddings: torch.Tensor | None = None, **kwargs):
        """Generate the modulation from ``context_embeddings`` (b, d_c) and run the base on (b, t) tokens.

        Returns the base model's output (``.logits`` (b, t, V), ``.loss`` when ``labels``) with
        ``.modulation`` (what the hypernetwork emitted) attached. One embedding row per sequence;
        a single row is broadcast to the whole batch.
        """
        if context_embeddings is None:
            raise ValueError("context_embeddings: expected a (batch, d_c) tensor (see encode_descriptions), got None")
        c = context_embeddings
        if c.dim() == 1:
            c = c[None]
        batch = input_ids.shape[0] if input_ids is not None else kwargs["inputs_embeds"].shape[0]
        if c.dim() != 2 or c.shape[0] not in (1, batch):
            raise ValueError(f"context_embeddings have shape {tuple(context_embeddings.shape)}; expected "
                             f"({batch}, {self.context_dim}) for input batch {batch}")
        if c.shape[0] == 1 and batch > 1:
            c = c.expand(batch, -1)
        modulation = self.hypernet(c)
        with self.conditioned(modulation):
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        out.modulation = modulation
        return out

    @torch.no_grad()
    def modulation_for(self, descriptions: Sequence[str] | str, check_finite: bool = False):
        """The hypernetwork's modulation for ``descriptions`` (one row each; eval mode, no grad).

        ``check_finite=True``: a row holding NaN or inf (a diverged or overflowing hypernetwork) raises
        ``FloatingPointError`` naming its descriptions and the checkpoint folder, instead of being
        used silently (an empty or garbage answer); ``zhyper chat`` / ``generate`` ask for it. The
        default keeps such rows for a batch caller that handles them itself (the server answers each
        request alone)."""
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        out = self._hypernet_eval(self.embed(descriptions))
        if check_finite:
            parts = [out] if isinstance(out, torch.Tensor) else list(out.values())
            ok = torch.stack([torch.isfinite(p.detach().reshape(p.shape[0], -1)).all(dim=1) for p in parts]).all(0)
            if not bool(ok.all()):
                bad = [d for d, good in zip(descriptions, ok.tolist()) if not good]
                where = f" of checkpoint {self.checkpoint_folder}" if self.checkpoint_folder is not None else ""
                raise FloatingPointError(
                    f"the hypernetwork{where} gives a modulation holding NaN or inf for description(s) "
                    f"{bad[:3]!r}{f' (+{len(bad) - 3} more)' if len(bad) > 3 else ''}: it cannot be used for "
                    "inference (a diverged or overflowing hypernetwork; retrain with a lower train.lr, or check "
                    "the checkpoint's weights)")
        return out

    @torch.no_grad()
    def _hypernet_eval(self, embeddings: torch.Tensor):
        """The hypernetwork on (n, d_c) embeddings in eval mode (deterministic: no hypernetwork dropout in
        what is served or exported), without gradients."""
        device = next(iter(self.hypernet.parameters())).device
        was_training = self.hypernet.training
        self.hypernet.eval()
        try:
            return self.hypernet(embeddings.to(device))
        finally:
            self.hypernet.train(was_training)

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        """Run the plain base model inside the block (every ZLinear skips its update)."""
        with adapters_disabled(self.base):
            yield

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> int:
        """HF's switch, as Trainer calls it: non-reentrant checkpointing of the base that keeps every
        ZLinear's modulation through the recompute (``zhyper.layers.checkpointing``). Returns the
        number of checkpointed blocks; ``use_reentrant=True`` is refused (the modulation needs the
        non-reentrant recompute)."""
        from zhyper.layers.checkpointing import enable_gradient_checkpointing

        if (gradient_checkpointing_kwargs or {}).get("use_reentrant", False):
            raise ValueError("gradient_checkpointing_kwargs: use_reentrant=True is not supported; Zhyper's "
                             "checkpointing is non-reentrant (pass nothing or use_reentrant=False)")
        return enable_gradient_checkpointing(self)

    # ------------------------------------------------------------------ generation and export
    @torch.no_grad()
    def generate(self, prompts: Sequence[str] | str, descriptions, system: str = "", description_in_prompt: bool = False,
                 weights=None, combine: str = "modulation", **gen_kwargs) -> list[str]:
        """Answer ``prompts`` (chat template applied), each conditioned on its description; left padding.

        An entry of ``descriptions`` may be a list of descriptions, with ``weights``:
        ``model.generate(prompts, [[a, b], c], weights=[[0.5, 1.0], [1.0]])`` (``zhyper.compose``).
        """
        from zhyper.generation import generate

        return generate(self, prompts, descriptions, system=system, description_in_prompt=description_in_prompt,
                        weights=weights, combine=combine, **gen_kwargs)

    def modulation(self, descriptions, weights=None, combine: str = "modulation", check_finite: bool = False):
        """The conditioning interface, step 2: the modulation of each entry of ``descriptions`` (a string,
        or a list combined by ``combine``), or of each row of an (n, d_c) tensor from ``embed``.

        ``weights`` scale each description's modulation (the strength dial: 0 is the base model, 1 as
        trained, above 1 stronger); see ``zhyper.compose``. Eval mode, no gradients (training runs
        ``forward``, which goes through ``conditioned`` too).
        """
        if isinstance(descriptions, torch.Tensor):
            if weights is not None:
                raise ValueError("weights: apply to descriptions, not to embeddings (pass the descriptions)")
            return self._hypernet_eval(descriptions if descriptions.dim() == 2 else descriptions[None])
        from zhyper import compose

        return compose.modulation(self, descriptions, weights, combine, check_finite)

    @contextmanager
    def conditioned(self, modulation) -> Iterator[None]:
        """The conditioning interface, step 3, and the only place a modulation is installed: run the base
        inside the block with ``modulation`` (one row per batch row, or one for all). Training
        (``forward``), generation, evaluation and the server's engine all enter it."""
        with modulate(self.base, self.layout, modulation):
            yield

    def export_peft(self, description, out_dir: str | os.PathLike, weights=None, combine: str = "modulation") -> Path:
        """A standard PEFT LoRA folder whose function is this model's function for ``description``.

        ``description`` may be a list of descriptions combined with ``weights`` / ``combine``.

        Other files in ``out_dir`` are kept. Refused before anything is written: a NaN/inf in the
        trained tensors or the modulation (named), and the checkpoint or base folder this model was
        read from (or a folder inside either).
        """
        from zhyper.export import export_peft

        return export_peft(self, description, out_dir, weights, combine)

    def merge(self, description: str, out_dir: str | os.PathLike | None = None) -> nn.Module:
        """A plain HF model with the adapter for ``description`` merged (saved to ``out_dir`` if given).

        Same checks as ``export_peft``; a merged weight that overflows its dtype is refused too.
        """
        from zhyper.export import merge

        return merge(self, description, out_dir)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds: ``hypernet.*`` and ``base.<module>.lora_A`` / ``lora_B``."""
        out = {f"hypernet.{k}": v for k, v in self.hypernet.state_dict().items()}
        for m in self.layout:
            layer = self.base.get_submodule(m.name)
            if layer.lora_A is not None:
                out[f"base.{m.name}.lora_A"] = layer.lora_A
                out[f"base.{m.name}.lora_B"] = layer.lora_B
        return out
