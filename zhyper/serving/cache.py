"""Per-row modulations for a serving batch, and an LRU cache from description text to modulation.

A modulation row is what ``ZhyperModel.modulation_for`` emits for one description with batch size
1: a tensor ``(1, n_layers, n_types, *shape)`` (diag / square) or a dict ``{module type: (1,
n_layers, r·in + out·r)}`` (full). Rows are concatenated into the batch's modulation and selected
again when rows leave (``cat_rows``, ``select_rows``).

A request without a description gets ``zero_row``: z = 0 (diag / square) or A_c = B_c = 0 (full)
makes every update exactly 0, so the row computes exactly the base model (``y + 0 = y`` in the
adapter's dtype, then the same rounding). Note that z = 1 would *not* be the base model: it is the
shared LoRA B·A.
"""

from __future__ import annotations

import threading
from typing import Sequence

import torch

from .logsafe import safe_logger

logger = safe_logger(__name__)


def cat_rows(rows: Sequence):
    """Concatenate modulation rows (tensors or dicts of tensors) along the batch dimension."""
    if not rows:
        raise ValueError("cat_rows: expected at least one modulation row, got none")
    if isinstance(rows[0], torch.Tensor):
        return torch.cat(list(rows), dim=0)
    return {t: torch.cat([r[t] for r in rows], dim=0) for t in rows[0]}


def select_rows(modulation, index: torch.Tensor):
    """Keep the batch rows ``index`` (a 1-D long tensor) of a modulation."""
    if isinstance(modulation, torch.Tensor):
        return modulation.index_select(0, index.to(modulation.device))
    return {t: m.index_select(0, index.to(m.device)) for t, m in modulation.items()}


def zero_row(model):
    """The modulation row that makes every ZLinear compute exactly its base layer (see module docstring)."""
    layout, mode = model.layout, model.config.mode
    param = next(iter(model.hypernet.parameters()))
    kw = dict(device=param.device, dtype=param.dtype)
    if mode == "full":
        return {t: torch.zeros(1, layout.n_layers, *layout.shape_of(t), **kw) for t in layout.module_types}
    return torch.zeros(1, layout.n_layers, len(layout.module_types), *layout.shape_of(layout.module_types[0]), **kw)


class ModulationCache:
    """LRU from description text to modulation row; a repeated description never re-runs the encoder
    or the hypernetwork while it stays among the ``size`` most recently used.

    ``rows(descriptions)`` returns one row per description (None -> ``zero_row``); the misses of one
    call go through the encoder and the hypernetwork in one batch. ``size=0`` disables caching.
    Counters: ``hits``, ``misses`` (descriptions computed), ``hypernet_calls``.
    """

    def __init__(self, model, size: int = 1024):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"cache size: expected an int >= 0 (0 disables the cache), got {size!r}")
        from cachetools import LRUCache

        self.model, self.size = model, size
        self._lru = LRUCache(maxsize=size) if size > 0 else None
        self._lock = threading.Lock()
        self._zero = zero_row(model)
        self.hits = self.misses = self.hypernet_calls = 0
        self.entry_bytes = sum(t.numel() * t.element_size() for t in
                               ([self._zero] if isinstance(self._zero, torch.Tensor) else self._zero.values()))
        logger.info("modulation cache: up to %d descriptions x %.1f KiB", size, self.entry_bytes / 1024)

    def __len__(self) -> int:
        return 0 if self._lru is None else len(self._lru)

    def __contains__(self, description: str) -> bool:
        return self._lru is not None and description in self._lru

    def stats(self) -> dict:
        return {"size": self.size, "entries": len(self), "entry_bytes": self.entry_bytes, "hits": self.hits,
                "misses": self.misses,
                "hypernet_calls": self.hypernet_calls}

    def rows(self, descriptions: Sequence[str | None], skip_non_finite: bool = False) -> list:
        """One modulation row per description, in order (None: the base model's zero row).

        A row holding NaN or inf is never cached: with ``skip_non_finite`` its place holds None,
        otherwise ``NonFiniteModulation`` is raised naming the descriptions.
        """
        out: list = [None] * len(descriptions)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, d in enumerate(descriptions):
                if d is None:
                    out[i] = self._zero
                elif self._lru is not None and d in self._lru:
                    out[i] = self._lru[d]
                    self.hits += 1
                else:
                    missing.setdefault(d, []).append(i)
            if missing:
                texts = list(missing)
                modulation = self.model.modulation_for(texts)  # encoder + hypernetwork, one batch
                self.hypernet_calls += 1
                self.misses += len(texts)
                bad = []
                for j, text in enumerate(texts):
                    row = select_rows(modulation, torch.tensor([j])).clone() if isinstance(modulation, torch.Tensor) \
                        else {t: m[j:j + 1].clone() for t, m in modulation.items()}
                    if not _finite(row):
                        bad.append(text)
                        row = None
                    elif self._lru is not None:
                        self._lru[text] = row
                    for i in missing[text]:
                        out[i] = row
                if bad and not skip_non_finite:
                    raise NonFiniteModulation(bad)
        return out


class NonFiniteModulation(FloatingPointError):
    """The hypernetwork's modulation for some descriptions holds NaN or inf."""

    def __init__(self, descriptions: Sequence[str]):
        super().__init__(f"the modulation for description(s) {list(descriptions)!r} holds NaN or inf")
        self.descriptions = list(descriptions)


def _finite(row) -> bool:
    tensors = [row] if isinstance(row, torch.Tensor) else list(row.values())
    return all(bool(torch.isfinite(t).all()) for t in tensors)
