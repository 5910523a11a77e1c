"""ZhyperConfig: every choice that defines a Zhyper model on top of a base LM, validated on construction.

The model's vocabulary lives on the floors below and is re-exported here: ``MODES`` in
``zhyper.layers.shapes``, ``Z_INITS``, ``POOLINGS`` and the checks of the hypernetwork's shape fields
(``check_hypernet_fields``) in ``zhyper.hyper.spec``, next to ``HyperNetConfig``. This class holds the
only defaults of the hypernetwork's fields; ``hypernet_fields`` is the one place they are mapped to a
``HyperNetConfig``. It imports nothing heavy: a run config can be validated before torch loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from zhyper.hyper.spec import (KNOWN_ENCODER_DIMS, POOLINGS, SETTING_FIELDS, Z_INITS, HyperNetConfig, check_choice,
                               check_hypernet_fields, check_int, check_position_embeddings, check_probability)
from zhyper.layers.shapes import MODES

__all__ = ["KNOWN_ENCODER_DIMS", "MODES", "POOLINGS", "Z_INITS", "ZhyperConfig", "check_choice", "check_hypernet_fields",
           "check_int", "check_probability"]


# fields added after the first checkpoint format, left out of to_dict() at these values
OMITTED_AT_DEFAULT = {"position_embeddings": True, "freeze_factors_from": None}


@dataclass
class ZhyperConfig:
    """What the hypernetwork emits, where it is applied and how it is built.

    The defaults follow the paper's reference setting (rank 8 on q_proj / v_proj, latent 128,
    head input 512) with the identity parametrisation (training starts as plain LoRA).
    """

    mode: str = field(default="diag", metadata={
        "help": "diag: z in R^r per layer; square: Z in R^{r x r}; full: generated A_c, B_c (T2L baseline)"})
    rank: int = field(default=8, metadata={"help": "r, rank of the low-rank update"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha; the update is scaled by alpha / r"})
    rslora: bool = field(default=False, metadata={"help": "scale by alpha / sqrt(r) (rsLoRA) instead"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input (LoRA dropout)"})
    target_modules: Any = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={
        "help": "suffixes of the nn.Linear names to adapt (list[str]), or 'all-linear'"})
    encoder: str = field(default="all-MiniLM-L6-v2", metadata={
        "help": "sentence-transformers model that embeds descriptions (name, path or hub id)"})
    encoder_pooling: str | None = field(default=None, metadata={
        "help": "override the encoder's pooling: cls | mean | max | lasttoken (None: the model's own)"})
    context_dim: int | None = field(default=None, metadata={
        "help": "encoder output size; None: looked up for known encoders, else read from the encoder"})
    z_init: str = field(default="identity", metadata={
        "help": "identity: z = 1 + head(h), Z = I + head(h) with zero head (starts as LoRA); paper: raw head output"})
    contrast: bool = field(default=True, metadata={
        "help": "z = 1 + head(h(c) - h(centre)): the hypernetwork emits how a context differs from the mean "
                "training context (diag/square with identity init; full mode and z_init='paper' ignore it)"})
    latent_dim: int = field(default=128, metadata={
        "help": "hypernetwork width: context latent/2 + layer emb latent/4 + type emb latent/4"})
    head_in: int = field(default=512, metadata={"help": "width of the last hidden layer, input of the heads"})
    n_blocks: int = field(default=2, metadata={"help": "residual MLP blocks after the mixer"})
    mlp_ratio: int = field(default=4, metadata={"help": "hidden width of every MLP = mlp_ratio x latent_dim"})
    hyper_dropout: float = field(default=0.05, metadata={"help": "dropout inside the hypernetwork"})
    position_embeddings: bool = field(default=True, metadata={
        "help": "the hypernetwork reads layer and module-type embeddings beside the description; false: it reads "
                "the description only and emits one modulation shared by every layer and type (diag/square)"})
    freeze_factors_from: str | None = field(default=None, metadata={
        "help": "training only: a PEFT LoRA adapter folder (a multi-task LoRA run's final/) whose lora_A / lora_B "
                "become the shared A and B, frozen: only the hypernetwork trains. Same rank, alpha and targets"})

    def __post_init__(self) -> None:
        check_hypernet_fields(self.mode, self.z_init, self.rank, self.latent_dim, self.head_in, self.n_blocks,
                              self.mlp_ratio, self.hyper_dropout, "hyper_dropout")
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha)
                or self.alpha <= 0):
            raise ValueError(f"alpha: expected a positive finite number, got {self.alpha!r}")
        self.alpha = float(self.alpha)
        if not isinstance(self.rslora, bool):
            raise TypeError(f"rslora: expected a bool, got {type(self.rslora).__name__}")
        if not isinstance(self.contrast, bool):
            raise TypeError(f"contrast: expected a bool, got {type(self.contrast).__name__}")
        check_probability("dropout", self.dropout)
        check_position_embeddings(self.position_embeddings, self.mode)
        if self.freeze_factors_from is not None and (not isinstance(self.freeze_factors_from, str)
                                                     or not self.freeze_factors_from.strip()):
            raise ValueError(f"freeze_factors_from: expected the path of a PEFT LoRA adapter folder or null, got "
                             f"{self.freeze_factors_from!r}")
        if not isinstance(self.target_modules, str) and isinstance(self.target_modules, Sequence):
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"target_modules: expected a non-empty list of names, got {self.target_modules!r}")
            self.target_modules = list(self.target_modules)
        elif not isinstance(self.target_modules, str) or not self.target_modules:
            raise TypeError(f"target_modules: expected a list of names or 'all-linear', got {self.target_modules!r}")
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ValueError(f"encoder: expected a sentence-transformers name or path, got {self.encoder!r}")
        if self.encoder_pooling is not None and self.encoder_pooling not in POOLINGS:
            raise ValueError(f"encoder_pooling: expected None or one of {POOLINGS}, got {self.encoder_pooling!r}")
        if self.context_dim is not None and (not isinstance(self.context_dim, int) or isinstance(self.context_dim, bool)
                                             or self.context_dim < 1):
            raise ValueError(f"context_dim: expected None or a positive int, got {self.context_dim!r}")

    def uses_contrast(self) -> bool:
        """Whether the hypernetwork emits the contrast form (``contrast`` where it applies)."""
        return self.contrast and self.mode != "full" and self.z_init == "identity"

    def resolved_context_dim(self) -> int | None:
        """context_dim if set, else the known dimension of ``encoder``, else None (must load it)."""
        return self.context_dim if self.context_dim is not None else KNOWN_ENCODER_DIMS.get(self.encoder)

    def hypernet_fields(self) -> dict[str, Any]:
        """The hypernetwork's settings as ``HyperNetConfig`` names them (the one place the fields are mapped).

        ``dropout`` there is ``hyper_dropout`` here (``dropout`` here is LoRA's); ``contrast`` there is
        whether it applies (``uses_contrast``). Every other name is the same.
        """
        mapped = {"dropout": self.hyper_dropout, "contrast": self.uses_contrast()}
        return {name: mapped[name] if name in mapped else getattr(self, name) for name in SETTING_FIELDS}

    def hypernet_config(self, layout, context_dim: int) -> HyperNetConfig:
        """The HyperNetConfig of this model on an ``AdapterLayout``."""
        return HyperNetConfig.from_layout(layout, context_dim, **self.hypernet_fields())

    def to_dict(self) -> dict[str, Any]:
        """Every field, except the later additions at their defaults (``OMITTED_AT_DEFAULT``): a checkpoint of a
        default model keeps the JSON that earlier versions of zhyper write and read."""
        return {k: v for k, v in asdict(self).items() if k not in OMITTED_AT_DEFAULT or v != OMITTED_AT_DEFAULT[k]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZhyperConfig":
        """Build from a plain dict; unknown keys are an error that lists the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown ZhyperConfig field(s) {unknown}; known fields: {known}")
        return cls(**data)
