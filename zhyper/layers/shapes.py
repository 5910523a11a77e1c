"""The modes of a Zhyper update and the shape of one context's modulation; plain Python, no torch.

The lowest floor's vocabulary: ``zhyper.hyper`` and ``zhyper.config`` read ``MODES`` from here,
so a run config can be validated before torch is imported.
"""

from __future__ import annotations

MODES = ("diag", "square", "full")


def modulation_shape(mode: str, rank: int, in_features: int, out_features: int) -> tuple[int, ...]:
    """Shape of one context's modulation for a layer: (r,), (r, r) or (r*in + out*r,)."""
    if mode == "diag":
        return (rank,)
    if mode == "square":
        return (rank, rank)
    if mode == "full":
        return (rank * in_features + out_features * rank,)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
