"""Put ZLinear layers into any model and address them as a (layer, module type) grid.

``inject_zlinear(model, ["q_proj", "v_proj"], rank=8)`` replaces every ``nn.Linear`` whose
name ends in one of the given suffixes (or every linear but the LM head, with
``"all-linear"``) by a ``ZLinear`` that reuses its frozen weight, and returns an
``AdapterLayout``: the adapted modules in a deterministic order, each with its
layer index (the first integer in its dotted name, e.g. ``model.layers.3.self_attn.q_proj``
-> 3) and module type (its last name component, ``q_proj``). A hypernetwork emits one
tensor ``(batch, n_layers, n_types, *modulation_shape)`` and ``modulate(model, layout, m)``
hands every layer its slice for the duration of a ``with`` block.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from .zlinear import ZLinear

ALL_LINEAR = "all-linear"
_CONV1D_NAMES = {"Conv1D"}  # GPT-2-style transposed linears (transformers.pytorch_utils.Conv1D)


@dataclass(frozen=True)
class AdaptedModule:
    """One injected layer: its grid position, its module type and its dotted name in the model."""

    layer_index: int  # row in the modulation grid, 0..n_layers-1
    module_type: str  # e.g. "q_proj"
    name: str  # e.g. "model.layers.3.self_attn.q_proj"
    type_index: int  # column in the modulation grid, 0..n_types-1
    in_features: int
    out_features: int
    modulation_shape: tuple[int, ...]


@dataclass(frozen=True)
class AdapterLayout:
    """The ordered adapted modules of a model (sorted by layer index, then module type order)."""

    modules: tuple[AdaptedModule, ...]
    module_types: tuple[str, ...]
    n_layers: int

    def __iter__(self):
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, i):
        return self.modules[i]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    def shape_of(self, module_type: str) -> tuple[int, ...]:
        """The modulation shape shared by all modules of one type (raises if they differ)."""
        shapes = {m.modulation_shape for m in self.modules if m.module_type == module_type}
        if len(shapes) != 1:
            raise ValueError(f"module type {module_type!r} has modulation shapes {sorted(shapes)}; expected one")
        return shapes.pop()

    def slices(self, modulation) -> list[torch.Tensor]:
        """Each module's part of a modulation, in layout order: (batch, *modulation_shape) each.

        ``modulation``: a tensor (batch, n_layers, n_types, *shape), a mapping {module_type:
        (batch, n_layers, *shape)} (types whose shapes differ, e.g. full mode), or a mapping
        {module name: (batch, *shape)}.
        """
        if isinstance(modulation, torch.Tensor):
            grid = (self.n_layers, len(self.module_types))
            lead = modulation.shape[1:3] if modulation.dim() >= 3 else None
            if lead is None or tuple(lead) != grid:
                raise ValueError(f"modulation tensor has shape {tuple(modulation.shape)}; expected "
                                 f"(batch, {grid[0]}, {grid[1]}, *modulation_shape) for {grid[0]} layers x "
                                 f"types {list(self.module_types)}")
            return [modulation[:, m.layer_index, m.type_index] for m in self.modules]
        if isinstance(modulation, Mapping):
            unknown = set(modulation) - {m.name for m in self.modules} - set(self.module_types)
            if unknown:
                raise ValueError(f"modulation mapping has keys {sorted(unknown)[:8]} that are neither an adapted "
                                 f"module name nor a module type {list(self.module_types)}")
            out = []
            for m in self.modules:
                if m.name in modulation:
                    out.append(modulation[m.name])
                elif m.module_type in modulation:
                    out.append(modulation[m.module_type][:, m.layer_index])
                else:
                    raise ValueError(f"modulation mapping has no entry for {m.name!r} nor its type "
                                     f"{m.module_type!r}; keys given: {sorted(modulation)[:8]}")
            return out
        raise TypeError(f"modulation must be a tensor (batch, n_layers, n_types, ...) or a mapping, "
                        f"got {type(modulation).__name__}")

    def module_modulations(self, modulation, row: int = 0) -> dict[str, torch.Tensor]:
        """{module name: its modulation (``modulation_shape``)} for batch row ``row``."""
        return {m.name: z[row] for m, z in zip(self.modules, self.slices(modulation))}

    def features_of(self, module_type: str) -> tuple[int, int]:
        """(in_features, out_features) of one module type."""
        feats = {(m.in_features, m.out_features) for m in self.modules if m.module_type == module_type}
        if len(feats) != 1:
            raise ValueError(f"module type {module_type!r} has (in, out) features {sorted(feats)}; expected one")
        return feats.pop()


def _layer_index(name: str) -> int:
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return 0


def _matches(name: str, targets: Sequence[str]) -> str | None:
    for t in targets:
        if name == t or name.endswith("." + t):
            return t.split(".")[-1]
    return None


def _output_embedding_names(model: nn.Module) -> set[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {n for n, m in model.named_modules() if head is not None and m is head}
    return names | {n for n, _ in model.named_modules() if n.split(".")[-1] in {"lm_head", "embed_out"}}


def select_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[tuple[str, str]]:
    """(name, module_type) of every module to adapt; raises with candidates if nothing matches."""
    if isinstance(target_modules, str):
        target_modules = [target_modules] if target_modules == ALL_LINEAR else [t.strip() for t in target_modules.split(",")]
    target_modules = [t for t in target_modules if t]
    if not target_modules:
        raise ValueError("target_modules is empty; give module-name suffixes like ['q_proj', 'v_proj'] or 'all-linear'")
    all_linear = ALL_LINEAR in target_modules
    excluded = _output_embedding_names(model) if all_linear else set()
    found, linear_names = [], []
    for name, module in model.named_modules():
        is_linear = isinstance(module, nn.Linear) and not isinstance(module, ZLinear)
        if isinstance(module, ZLinear):
            raise ValueError(f"{name} is already a ZLinear; the model was injected before")
        if is_linear:
            linear_names.append(name)
        if all_linear and type(module).__name__ in _CONV1D_NAMES:
            raise TypeError(f"{name} is a GPT-2-style Conv1D (transposed weight); ZLinear adapts nn.Linear only. "
                            "Convert the model's Conv1D layers to nn.Linear first")
        if all_linear:
            if is_linear and name not in excluded:
                found.append((name, name.split(".")[-1]))
            continue
        mtype = _matches(name, target_modules)
        if mtype is None:
            continue
        if type(module).__name__ in _CONV1D_NAMES:
            raise TypeError(f"{name} is a GPT-2-style Conv1D (transposed weight); ZLinear adapts nn.Linear only. "
                            "Convert the model's Conv1D layers to nn.Linear first")
        if not is_linear:
            raise TypeError(f"target_modules entry {mtype!r} matched {name}, a {type(module).__name__}, not an "
                            "nn.Linear; name the linear layers inside it instead (e.g. their last name component)")
        found.append((name, mtype))
    if not found:
        examples = sorted({n.split(".")[-1] for n in linear_names})[:12]
        raise ValueError(f"no nn.Linear matched target_modules={list(target_modules)}; "
                         f"linear module names in this model end in: {examples}")
    return found


def inject_zlinear(model: nn.Module, target_modules: str | Sequence[str] = ("q_proj", "v_proj"), *,
                   rank: int = 8, mode: str = "diag", alpha: float = 16.0, rslora: bool = False,
                   dropout: float = 0.0, adapter_dtype: torch.dtype = torch.float32) -> AdapterLayout:
    """Replace the target linears of ``model`` in place by ZLinear; return their layout.

    The base weights are reused and frozen; new adapter parameters are created on the device
    of each base weight. Every other parameter of the model is left as it was (call
    ``model.requires_grad_(False)`` first if the whole base model must be frozen).
    """
    selected = select_targets(model, target_modules)
    type_order: list[str] = []
    for _, t in selected:
        if t not in type_order:
            type_order.append(t)
    raw_layers = sorted({_layer_index(n) for n, _ in selected})
    row = {li: i for i, li in enumerate(raw_layers)}
    cells = [(row[_layer_index(name)], type_order.index(mtype)) for name, mtype in selected]
    if len(set(cells)) != len(cells):  # checked before anything is replaced: no half-injected model
        dup = [name for (name, _), c in zip(selected, cells) if cells.count(c) > 1][:4]
        raise ValueError(f"several modules share one (layer, type) grid cell, e.g. {dup}; "
                         "give more specific target_modules suffixes")
    modules = []
    for (name, mtype), (li, ti) in zip(selected, cells):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        z = ZLinear.from_linear(getattr(parent, child), rank=rank, mode=mode, alpha=alpha, rslora=rslora,
                                dropout=dropout, adapter_dtype=adapter_dtype)
        setattr(parent, child, z)
        modules.append(AdaptedModule(li, mtype, name, ti, z.in_features, z.out_features, z.modulation_shape))
    modules.sort(key=lambda m: (m.layer_index, m.type_index, m.name))
    return AdapterLayout(tuple(modules), tuple(type_order), len(raw_layers))


def zlinear_modules(model: nn.Module, layout: AdapterLayout) -> list[ZLinear]:
    """The ZLinear objects of ``layout``, in layout order."""
    return [model.get_submodule(m.name) for m in layout]


@contextmanager
def modulate(model: nn.Module, layout: AdapterLayout, modulation) -> Iterator[None]:
    """Give every adapted layer its modulation for the block; restored on exit, even on error.

    ``modulation`` is a tensor ``(batch, n_layers, n_types, *shape)``, a mapping
    ``{module_type: (batch, n_layers, *shape)}`` (for types whose shapes differ, e.g. full
    mode), or a mapping ``{module name: (batch, *shape)}``.
    """
    layers = zlinear_modules(model, layout)
    slices = layout.slices(modulation)
    previous = [layer.modulation for layer in layers]
    try:
        for layer, z in zip(layers, slices):
            layer.modulation = z
        yield
    finally:
        for layer, z in zip(layers, previous):
            layer.modulation = z


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the plain base model: every ZLinear skips its update inside the block."""
    layers = [m for m in model.modules() if isinstance(m, ZLinear)]
    states = [layer.adapter_enabled for layer in layers]
    try:
        for layer in layers:
            layer.adapter_enabled = False
        yield
    finally:
        for layer, state in zip(layers, states):
            layer.adapter_enabled = state
