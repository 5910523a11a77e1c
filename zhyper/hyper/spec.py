"""What the hypernetwork reads and emits, in plain Python (no torch): its vocabulary, checks and config.

The home of ``Z_INITS``, ``POOLINGS``, the known encoder sizes, the checks every hypernetwork
shape passes (``check_hypernet_fields``) and ``HyperNetConfig``. ``zhyper.config`` (one floor up)
reads them from here, so a run config is validated before torch loads; ``HyperNetConfig`` has no
defaults of its own for the fields a ``ZhyperConfig`` sets: ``ZhyperConfig.hypernet_fields`` is the
one place they are mapped (see docs/design.md, "Floors").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Mapping

from zhyper.layers.shapes import MODES, modulation_shape

Z_INITS = ("identity", "paper")
POOLINGS = ("cls", "mean", "max", "lasttoken")

# Output dimension of the encoders we know by name, so a model can be built (or its
# parameters counted) without loading the encoder.
KNOWN_ENCODER_DIMS = {
    "all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "Alibaba-NLP/gte-large-en-v1.5": 1024,
}


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")


def check_int(name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


def check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")


def check_hypernet_fields(mode: str, z_init: str, rank: int, latent_dim: int, head_in: int, n_blocks: int,
                          mlp_ratio: int, dropout: float, dropout_name: str = "dropout") -> None:
    """The checks every hypernetwork shape must pass (ZhyperConfig and HyperNetConfig run the same)."""
    check_choice("mode", mode, MODES)
    check_choice("z_init", z_init, Z_INITS)
    for name, value in (("rank", rank), ("latent_dim", latent_dim), ("head_in", head_in), ("mlp_ratio", mlp_ratio)):
        check_int(name, value, 1)
    check_int("n_blocks", n_blocks, 0)
    if latent_dim % 4 or latent_dim < 16:
        raise ValueError(f"latent_dim: expected a multiple of 4 and >= 16 (split 2:1:1 into context, layer and "
                         f"type embeddings, each LayerNorm-ed), got {latent_dim}")
    check_probability(dropout_name, dropout)


def check_position_embeddings(value: Any, mode: str, key: str = "position_embeddings") -> None:
    """A bool; ``False`` (one z shared by every layer and module type) needs a modulation of one shape."""
    if not isinstance(value, bool):
        raise TypeError(f"{key}: expected true or false, got {value!r}")
    if not value and mode == "full":
        raise ValueError(f"{key}: false shares one modulation across every layer and module type, which needs "
                         f"mode diag or square (full mode's generated factors differ in shape per type)")


def check_descriptions(value: object, argument: str = "descriptions", non_empty: bool = False) -> list[str]:
    """A list of non-empty description strings, or an error naming ``argument`` and the bad entry.

    TypeError for something that is not a list of strings; ValueError for an empty string (and for
    an empty list when ``non_empty``). Entries are returned as given.
    """
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{argument}: expected a list of strings, got {type(value).__name__} {str(value)[:80]!r}")
    if non_empty and not value:
        raise ValueError(f"{argument}: expected a non-empty list of descriptions, got an empty list")
    for i, d in enumerate(value):
        if not isinstance(d, str):
            raise TypeError(f"{argument}[{i}]: expected a string, got {type(d).__name__} ({d!r})")
        if not d.strip():
            raise ValueError(f"{argument}[{i}]: expected a non-empty description, got {d!r}")
    return list(value)


@dataclass(frozen=True)
class HyperNetConfig:
    """Shapes of one hypernetwork: context size, the (layer × type) grid, per-type features, widths.

    Every field is required: the widths, mode and initialisation come from a ``ZhyperConfig``
    (``ZhyperConfig.hypernet_config``), whose defaults are the only ones. ``contrast`` here is the
    effective switch (``ZhyperConfig.uses_contrast()``), so it must agree with ``mode`` and ``z_init``.
    """

    context_dim: int  # d_c, size of the sentence embedding
    n_layers: int  # L, rows of the modulation grid
    module_types: tuple[str, ...]  # T column names, e.g. ("q_proj", "v_proj")
    features: Mapping[str, tuple[int, int]]  # module type -> (in_features, out_features)
    mode: str
    rank: int
    latent_dim: int
    head_in: int
    n_blocks: int
    mlp_ratio: int
    dropout: float
    z_init: str
    contrast: bool
    position_embeddings: bool  # False: no layer/type embeddings, one z shared by every layer and type

    def __post_init__(self) -> None:
        check_hypernet_fields(self.mode, self.z_init, self.rank, self.latent_dim, self.head_in, self.n_blocks,
                              self.mlp_ratio, self.dropout)
        check_int("context_dim", self.context_dim, 1)
        check_int("n_layers", self.n_layers, 1)
        if not isinstance(self.contrast, bool):
            raise TypeError(f"contrast: expected a bool, got {type(self.contrast).__name__}")
        if self.contrast and (self.mode == "full" or self.z_init != "identity"):
            raise ValueError(f"contrast: needs mode diag or square with z_init 'identity' (shared A/B to carry the "
                             f"common part), got mode {self.mode!r}, z_init {self.z_init!r}")
        check_position_embeddings(self.position_embeddings, self.mode)
        types = tuple(self.module_types)
        if not types or len(set(types)) != len(types):
            raise ValueError(f"module_types: expected distinct names, got {types!r}")
        missing = [t for t in types if t not in self.features]
        if missing:
            raise ValueError(f"features: no (in, out) for module types {missing}; given {dict(self.features)}")
        object.__setattr__(self, "module_types", types)
        object.__setattr__(self, "features", {t: (int(self.features[t][0]), int(self.features[t][1])) for t in types})

    @classmethod
    def from_layout(cls, layout, context_dim: int, **kwargs) -> "HyperNetConfig":
        """The grid and features of an ``AdapterLayout``; widths and mode from ``kwargs``."""
        features = {t: layout.features_of(t) for t in layout.module_types}
        return cls(context_dim=context_dim, n_layers=layout.n_layers, module_types=tuple(layout.module_types),
                   features=features, **kwargs)

    def output_shape(self, module_type: str) -> tuple[int, ...]:
        """One context's modulation shape for one layer of ``module_type``."""
        fin, fout = self.features[module_type]
        return modulation_shape(self.mode, self.rank, fin, fout)


GRID_FIELDS = ("context_dim", "n_layers", "module_types", "features")  # set by the adapted model, not a ZhyperConfig
SETTING_FIELDS = tuple(f.name for f in fields(HyperNetConfig) if f.name not in GRID_FIELDS)
