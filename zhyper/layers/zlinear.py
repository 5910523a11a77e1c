"""ZLinear: a frozen linear layer plus a context-modulated low-rank update.

Zhyper (arXiv 2510.19733) keeps the LoRA factors A and B shared across contexts and lets a
hypernetwork emit only a small modulation per context and layer::

    diag    ΔW = s · B · diag(z) · A        z ∈ R^r        (shared A, B trained)
    square  ΔW = s · B · Z · A              Z ∈ R^{r×r}    (shared A, B trained)
    full    ΔW = s · B_c · A_c              A_c, B_c generated (Text-to-LoRA baseline)

with s = alpha / r (LoRA) or alpha / sqrt(r) (rsLoRA), and PEFT's layout (A: r×in, B: out×r).

Shapes of the forward pass (b = batch, t = tokens, any number of middle dims)::

    x (b, t, in) ──W──────────────────────────────► (b, t, out) ─┐
        │                                                         + ──► y (b, t, out)
        └─dropout─A─► h (b, t, r) ─⊙ s·z_b / ·(s·Z_b)ᵀ─► (b, t, r) ─B─┘

The per-sample modulation touches only the rank-r activations h: no per-sample or per-token
copy of any weight is made. The diag/square update runs as one autograd function
(``lowrank.modulated_lowrank``) that keeps only h for backward. The base path keeps the input
dtype (e.g. bf16); the adapter runs in the adapter's dtype (fp32 by default), is added to the
base output in that dtype and the sum is rounded once back to the input dtype (as PEFT does).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .lowrank import modulated_lowrank
from .shapes import MODES, modulation_shape

__all__ = ["MODES", "ZLinear", "init_lora_a_", "lora_scaling", "modulation_shape", "split_full"]


def lora_scaling(alpha: float, rank: int, rslora: bool = False) -> float:
    """LoRA's s = alpha / r, or rsLoRA's s = alpha / sqrt(r) (Kalajdzievski, 2023)."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def init_lora_a_(weight: torch.Tensor) -> torch.Tensor:
    """Kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT initialise lora_A."""
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


def split_full(modulation: torch.Tensor, rank: int, in_features: int, out_features: int):
    """Split a flat full-mode modulation (..., r*in + out*r) into A_c (..., r, in), B_c (..., out, r)."""
    lead = modulation.shape[:-1]
    n_a = rank * in_features
    a = modulation[..., :n_a].reshape(*lead, rank, in_features)
    b = modulation[..., n_a:].reshape(*lead, out_features, rank)
    return a, b


class ZLinear(nn.Module):
    """A frozen ``nn.Linear`` with a Zhyper low-rank update modulated per sample.

    Args:
        in_features: as ``nn.Linear`` (the frozen base).
        out_features: as ``nn.Linear``.
        rank: r, the rank of the update (> 0).
        mode: ``"diag"`` (z of shape (r,)), ``"square"`` (Z of shape (r, r)) or ``"full"``
            (generated A_c, B_c flattened into one vector; no shared factors).
        alpha: LoRA alpha; the update is scaled by alpha / r (alpha / sqrt(r) with rslora).
        rslora: use the rank-stabilised scaling alpha / sqrt(r).
        dropout: dropout probability on the adapter input only (the base path never drops).
        bias: as ``nn.Linear``.
        device: as ``nn.Linear``.
        dtype: as ``nn.Linear`` (of the frozen weight and bias).
        adapter_dtype: dtype of lora_A / lora_B and of the adapter math (fp32 default).

    The modulation is passed per call, ``layer(x, modulation=z)``, or set for a block of
    code with ``with layer.modulated(z): ...`` for models whose forward cannot be changed.
    z is either one context's modulation (``modulation_shape``), applied to every sample,
    or a batch ``(b, *modulation_shape)`` with one modulation per sample of x.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int = 8,
        mode: str = "diag",
        alpha: float = 16.0,
        rslora: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        device=None,
        dtype=None,
        adapter_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        if (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
                or alpha <= 0):
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not math.isfinite(dropout)
                or not 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.mode, self.alpha, self.rslora = rank, mode, float(alpha), bool(rslora)
        self.scaling = lora_scaling(self.alpha, rank, self.rslora)
        self.adapter_dtype = adapter_dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype), requires_grad=False)
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False) if bias else None
        )
        if mode == "full":  # the hypernetwork generates both factors; nothing shared is trained
            self.lora_A = self.lora_B = None
        else:
            self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=adapter_dtype))
            self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=adapter_dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._modulation: torch.Tensor | None = None
        self._merged: torch.Tensor | None = None  # an exact copy of the weight merge() overwrote, while merged
        self.adapter_enabled = True
        # While merged, weight holds W + ΔW: a state dict taken or loaded then would be silently wrong.
        self.register_state_dict_pre_hook(_refuse_while_merged)
        self.register_load_state_dict_pre_hook(_refuse_load_while_merged)
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_adapter()

    def reset_adapter(self) -> None:
        """lora_A Kaiming-uniform(a=sqrt(5)), lora_B zeros: the update starts at exactly 0."""
        if self.lora_A is not None:
            init_lora_a_(self.lora_A)
            nn.init.zeros_(self.lora_B)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int = 8, mode: str = "diag", **kwargs) -> "ZLinear":
        """Wrap an existing ``nn.Linear``: its weight and bias tensors are reused (not copied) and frozen."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, rank=rank, mode=mode, bias=linear.bias is not None,
                    device="meta", dtype=w.dtype, **kwargs)
        # The same Parameter objects, not copies: tied or ZeRO-3-partitioned weights stay what they were.
        layer.weight = w.requires_grad_(False)
        if linear.bias is not None:
            layer.bias = linear.bias.requires_grad_(False)
        if layer.lora_A is not None:
            device = w.device
            layer.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, device=device, dtype=layer.adapter_dtype))
            layer.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, device=device, dtype=layer.adapter_dtype))
            if device.type != "meta":
                layer.reset_adapter()
        return layer

    @property
    def modulation_shape(self) -> tuple[int, ...]:
        """One context's modulation: (r,) diag, (r, r) square, (r*in + out*r,) full."""
        return modulation_shape(self.mode, self.rank, self.in_features, self.out_features)

    @property
    def merged(self) -> bool:
        return self._merged is not None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"mode={self.mode!r}, scaling={self.scaling:g}, bias={self.bias is not None}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, modulation: torch.Tensor | None = None) -> torch.Tensor:
        """y = x·Wᵀ + b + ΔW(z_i)·x for each sample i.

        Args:
            x: (..., in); with a batched modulation its first dim is the batch b.
            modulation: ``modulation_shape`` (one context for all samples) or (b, *modulation_shape);
                None uses the one set by ``modulated`` (and raises if there is none).
        Returns:
            (..., out) in x's dtype.
        """
        if modulation is None:
            modulation = self._modulation
        if self._merged is not None:
            if modulation is not None:
                raise ValueError("ZLinear is merged; call unmerge() before running it with a modulation")
            if not self.adapter_enabled:
                raise ValueError("ZLinear is merged, so its base output is not available with the adapter "
                                 "disabled; call unmerge() first")
            return F.linear(x, self.weight, self.bias)
        if not self.adapter_enabled:
            return F.linear(x, self.weight, self.bias)
        if modulation is None:
            raise ValueError(
                f"ZLinear ({self.in_features}->{self.out_features}, mode={self.mode!r}) needs a modulation of shape "
                f"{self.modulation_shape} or (batch, *{self.modulation_shape}); got none. Pass modulation=..., "
                "use `with layer.modulated(z):`, or disable the adapter to run the base layer. In a gradient-"
                "checkpointing recompute: turn checkpointing on with ZhyperModel.gradient_checkpointing_enable() "
                "(zhyper.layers.checkpointing), not with the base model's own switch")
        z = self._check_modulation(modulation, x)  # (r,) | (r, r) | (n,), or with a leading batch dim
        y = F.linear(x, self.weight, self.bias)  # (..., out), base path in x's dtype
        xd = self.dropout(x) if self.training else x  # the adapter path only (dropout is the identity in eval)
        if self.mode == "full":
            a_c, b_c = split_full(z, self.rank, self.in_features, self.out_features)  # (b, r, in), (b, out, r)
            delta = _per_sample(xd.to(self.adapter_dtype), a_c, b_c) * self.scaling  # (..., out)
            return (y.to(delta.dtype) + delta).to(y.dtype)
        # h = x·Aᵀ (.., r) once for the batch, then ⊙ s·z_b or ·(s·Z_b)ᵀ per sample, then ·Bᵀ, added to y
        return modulated_lowrank(y, xd, self.lora_A, self.lora_B, z, self.scaling, self.mode == "square", into_y=True)

    def _check_modulation(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"modulation must be a torch.Tensor, got {type(z).__name__}")
        shape = self.modulation_shape
        # The adapter's dtype as it is now: a bf16 DeepSpeed engine casts lora_A/B to bf16.
        a = self.lora_A
        adt = self.adapter_dtype if a is None else a.dtype
        zshape = z.shape  # a torch.Size compares equal to the plain tuple
        if zshape != shape:
            if zshape[1:] != shape:
                raise ValueError(f"modulation has shape {tuple(zshape)}; expected {shape} (one context) or "
                                 f"(batch, *{shape}) for mode {self.mode!r}, rank {self.rank}")
            if x.dim() < 2 or zshape[0] != x.shape[0]:
                raise ValueError(f"modulation batch size {zshape[0]} does not match input batch size "
                                 f"{x.shape[0] if x.dim() >= 2 else 'none (x is 1-D)'} (x has shape {tuple(x.shape)})")
        return z if z.dtype == adt else z.to(adt)  # no no-op cast: a call at one decode row is mostly dispatch

    @property
    def modulation(self) -> torch.Tensor | None:
        """The modulation used when ``forward`` gets none (None: must be passed per call)."""
        return self._modulation

    @modulation.setter
    def modulation(self, value: torch.Tensor | None) -> None:
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"modulation must be a torch.Tensor or None, got {type(value).__name__}")
        self._modulation = value

    @contextmanager
    def modulated(self, modulation: torch.Tensor) -> Iterator["ZLinear"]:
        """Set the modulation for every forward inside the block; restored on exit, even on error."""
        previous = self._modulation
        self.modulation = modulation
        try:
            yield self
        finally:
            self._modulation = previous

    # ------------------------------------------------------------------ merge
    @torch.no_grad()
    def folded_factors(self, modulation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A' (r, in), B' (out, r)) in fp32 with one context's modulation folded in: ΔW = s · B' · A'.

        diag: A' = diag(z) · A, B' = B; square: A' = Z · A, B' = B; full: the generated A_c, B_c.
        This is what a PEFT LoRA adapter stores for the context (same r, alpha and scaling).
        """
        if tuple(modulation.shape) != self.modulation_shape:
            raise ValueError(f"merge, delta_weight and export take one context's modulation of shape "
                             f"{self.modulation_shape}, got {tuple(modulation.shape)}")
        z = modulation.detach().float()
        if self.mode == "full":
            return split_full(z, self.rank, self.in_features, self.out_features)
        a, b = self.lora_A.detach().float().to(z.device), self.lora_B.detach().float().to(z.device)
        return (z[:, None] * a if self.mode == "diag" else z @ a), b

    @torch.no_grad()
    def delta_weight(self, modulation: torch.Tensor) -> torch.Tensor:
        """ΔW (out, in) in fp32 for one context's modulation (shape ``modulation_shape``)."""
        a, b = self.folded_factors(modulation)
        return self.scaling * (b @ a)

    @torch.no_grad()
    def merge(self, modulation: torch.Tensor) -> None:
        """Fold one context's ΔW into the base weight (for serving that one context).

        The weight is changed in place (tied views see it too). Before it is touched, ΔW and the
        merged weight W + ΔW (rounded to W's dtype) are checked to be finite, as PEFT's
        ``safe_merge``: a NaN/inf raises ``ValueError`` and leaves the weight as it was.

        Memory: an exact copy of the overwritten weight is kept until ``unmerge`` (out x in in the
        weight's dtype: as much again as the weight itself, e.g. 2 bytes per weight in bf16), so
        that ``unmerge`` restores it bit for bit in every dtype. While merged, ``state_dict`` and
        ``load_state_dict`` raise: the weight then holds W + ΔW, not the base weight.
        """
        if self._merged is not None:
            raise ValueError("ZLinear is already merged; call unmerge() first")
        delta = self.delta_weight(modulation).to(self.weight.device)
        bad = int((~torch.isfinite(delta)).sum())
        if bad:
            raise ValueError(f"merge: ΔW of this ZLinear ({self.in_features}->{self.out_features}, "
                             f"mode={self.mode!r}) has {bad} non-finite values (NaN/inf) out of {delta.numel()}; "
                             "check the modulation and lora_A / lora_B. The base weight was left unchanged")
        merged = (self.weight.float() + delta).to(self.weight.dtype)
        bad = int((~torch.isfinite(merged)).sum())
        if bad:
            raise ValueError(f"merge: W + ΔW of this ZLinear ({self.in_features}->{self.out_features}) has {bad} "
                             f"non-finite values in {self.weight.dtype} (overflow); the base weight was left unchanged")
        original = self.weight.detach().clone()
        self.weight.copy_(merged)  # in place: tied views of the weight see it too
        self._merged = original

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the weight merge() overwrote, bit for bit (from the copy merge() kept)."""
        if self._merged is None:
            raise ValueError("ZLinear is not merged; nothing to unmerge")
        self.weight.copy_(self._merged)
        self._merged = None


def _refuse_while_merged(module: "ZLinear", prefix: str, keep_vars: bool) -> None:
    """state_dict pre-hook: a merged layer's weight is W + ΔW, which no checkpoint should take for W."""
    if module._merged is not None:
        raise RuntimeError(f"state_dict: ZLinear {prefix.rstrip('.') or '(root)'} is merged, so its weight holds "
                           "W + ΔW, not the base weight; call unmerge() before taking a state dict (or export the "
                           "merged model with ZhyperModel.merge)")


def _refuse_load_while_merged(module: "ZLinear", state_dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: loading into a merged layer would be undone (or corrupted) by unmerge()."""
    if module._merged is not None:
        raise RuntimeError(f"load_state_dict: ZLinear {prefix.rstrip('.') or '(root)'} is merged; call unmerge() "
                           "before loading weights into it")


def _per_sample(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (b, ..., in) through generated factors A_c (b|-, r, in), B_c (b|-, out, r)."""
    if a.dim() == 2:
        return F.linear(F.linear(x, a), b)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (b, n, in)
    h = torch.bmm(flat, a.transpose(1, 2))  # (b, n, r)
    out = torch.bmm(h, b.transpose(1, 2))  # (b, n, out)
    return out.reshape(*x.shape[:-1], b.shape[-2])
