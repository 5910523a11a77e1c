"""The Zhyper hypernetwork: one batched MLP call -> the modulation of every adapted layer.

For each context c (a sentence embedding), adapted layer l and module type t::

    c (b, d_c) ─Linear─LN──────────► (b, latent/2) ─┐
    l ─Embedding─LN────────────────► (L, latent/4) ──┼─ concat, broadcast ─► x (b, L, T, latent)
    t ─Embedding─LN────────────────► (T, latent/4) ─┘
    x ─mixer MLP─► n_blocks × (x + MLP(LN x)) ─► LN─MLP─► h (b, L, T, head_in)
    h[:, :, t] ─head_t─► diag (b, L, r) | square (b, L, r, r) | full (b, L, r·in_t + out_t·r)

MLPs are Linear ─ SiLU ─ dropout ─ Linear ─ SiLU (hidden = mlp_ratio × latent). One head per
module type (types may differ in in/out features, which only matters for full mode).

Parametrisation of the output (``z_init``):
  - ``"identity"`` (default): z = 1 + head(h), Z = I + head(h), head weight and bias zero-initialised,
    so at initialisation every layer runs plain LoRA (B · A) and the trained z is the exported z.
  - ``"paper"``: the raw head output with nn.Linear's default initialisation.
Full mode always starts as LoRA (bias hyper-init): head weight zero, bias = (A Kaiming-uniform, B zero).

Contrast (``contrast=True``, diag/square with identity init; ``ZhyperModel``'s default)::

    z(c) = 1 + head(h(c) - h(centre))        Z(c) = I + head(h(c) - h(centre))

The heads read how a context's trunk features differ from the centre's (the mean training
context, see below), so at the centre every layer runs the shared LoRA B·diag(1 + bias)·A: the
shared A/B carry what all contexts have in common and the hypernetwork only how they differ.
Without it the heads' input is dominated by features every context shares, and Adam spends
the heads' updates on that common part. Cost: one extra row in the batched trunk call.

Context centring: the input embedding is shifted by ``context_center`` (a buffer, zero until
``set_context_center`` is called with the training descriptions' embeddings; saved with the
checkpoint). Sentence embeddings of instructions share a large common direction (cosine 0.2–0.9
between unrelated formatting rules with all-MiniLM-L6-v2), so uncentred inputs reach the heads as
nearly collinear features and the hypernetwork learns one modulation for every context. With the
mean removed the same run separates contexts (see docs/training.md for the measurement).

Without position embeddings (``position_embeddings=False``, an ablation): no layer or type embedding,
the description's projection fills the whole width, the trunk runs once per context and one head emits
one z (or Z) that every layer and module type shares; the output keeps its (b, L, T, *shape) form.

Output: a tensor (b, L, T, *shape) for diag / square; for full mode (per-type sizes differ) a dict
{module_type: (b, L, r·in + out·r)}. Both are what ``zhyper.layers.modulate`` accepts.

ZeRO-3: every parameter is used only inside the forward of the module that owns it (embeddings
through ``nn.Embedding.__call__``), and no metadata is read from parameter shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from zhyper.layers.zlinear import init_lora_a_

from .spec import HyperNetConfig

__all__ = ["GridEmbedding", "HyperNetConfig", "HyperNetwork", "ResidualBlock"]


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out), nn.SiLU(), nn.Dropout(dropout))


class ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x)), width kept."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, hidden, dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class GridEmbedding(nn.Module):
    """Learned embedding of every index 0..n-1 followed by LayerNorm: returns (n, dim)."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.n = n
        self.embedding = nn.Embedding(n, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, device: torch.device) -> torch.Tensor:
        return self.norm(self.embedding(torch.arange(self.n, device=device)))


class HyperNetwork(nn.Module):
    """Context embeddings (b, d_c) -> modulation for all layers × module types, in one call."""

    def __init__(self, config: HyperNetConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.latent_dim
        hidden = cfg.mlp_ratio * d
        d_context = d // 2 if cfg.position_embeddings else d  # without positions the description fills the width
        self.context_proj = nn.Sequential(nn.Linear(cfg.context_dim, d_context), nn.LayerNorm(d_context))
        if cfg.position_embeddings:
            self.layer_embedding = GridEmbedding(cfg.n_layers, d // 4)
            self.type_embedding = GridEmbedding(len(cfg.module_types), d // 4)
        self.mixer = nn.Sequential(nn.Dropout(cfg.dropout), _mlp(d, hidden, d, cfg.dropout))
        self.blocks = nn.ModuleList(ResidualBlock(d, hidden, cfg.dropout) for _ in range(cfg.n_blocks))
        self.out = nn.Sequential(nn.LayerNorm(d), _mlp(d, hidden, cfg.head_in, cfg.dropout))
        head_types = cfg.module_types if cfg.position_embeddings else cfg.module_types[:1]  # one shared head
        self.heads = nn.ModuleDict({t: nn.Linear(cfg.head_in, _numel(cfg.output_shape(t))) for t in head_types})
        self.register_buffer("context_center", torch.zeros(cfg.context_dim))
        self.reset_heads()

    @torch.no_grad()
    def set_context_center(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Centre future inputs on the mean of ``embeddings`` (n, d_c), e.g. the training descriptions.

        Returns the stored centre (d_c,). Call before training; the centre is part of the function
        (saved, exported), so it must not change once the hypernetwork has learned against it.
        """
        d = self.config.context_dim
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != d:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings: expected a (n, {d}) tensor of context embeddings, got {shape}")
        if embeddings.shape[0] == 0:
            raise ValueError("embeddings: expected at least one row to average, got 0")
        center = embeddings.detach().to(self.context_center.device, torch.float64).mean(0)
        if not torch.isfinite(center).all():
            raise ValueError("embeddings: the mean is not finite (NaN or inf in the input)")
        self.context_center.copy_(center.to(self.context_center.dtype))
        return self.context_center

    @torch.no_grad()
    def reset_heads(self) -> None:
        """Initialise the heads so the first modulation is plain LoRA (see the module docstring)."""
        cfg = self.config
        for t, head in self.heads.items():
            if cfg.mode == "full":
                fin, fout = cfg.features[t]
                nn.init.zeros_(head.weight)
                a = init_lora_a_(torch.empty(cfg.rank, fin, device=head.bias.device, dtype=head.bias.dtype))
                head.bias.copy_(torch.cat([a.flatten(), head.bias.new_zeros(fout * cfg.rank)]))
            elif cfg.z_init == "identity":
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            else:
                head.reset_parameters()

    def _check(self, context: torch.Tensor) -> None:
        if context.dim() != 2 or context.shape[1] != self.config.context_dim:
            raise ValueError(f"context embeddings have shape {tuple(context.shape)}; expected (batch, "
                             f"{self.config.context_dim})")

    def hidden(self, context: torch.Tensor) -> torch.Tensor:
        """h (b, L, T, head_in): the shared trunk for every (context, layer, type); (b, 1, 1, head_in) without
        position embeddings (one row per context, shared by every layer and type)."""
        cfg = self.config
        self._check(context)
        b, n_l, n_t = context.shape[0], cfg.n_layers, len(cfg.module_types)
        context = context.to(self.context_proj[0].weight.dtype) - self.context_center.to(
            self.context_proj[0].weight.dtype)
        c = self.context_proj(context)  # (b, d/2), or (b, d) without position embeddings
        if not cfg.position_embeddings:
            x = self.mixer(c[:, None, None])
            for block in self.blocks:
                x = block(x)
            return self.out(x)
        layers = self.layer_embedding(context.device)  # (L, d/4)
        types = self.type_embedding(context.device)  # (T, d/4)
        x = torch.cat([c[:, None, None].expand(b, n_l, n_t, -1),
                       layers[None, :, None].expand(b, n_l, n_t, -1).to(c.dtype),
                       types[None, None].expand(b, n_l, n_t, -1).to(c.dtype)], dim=-1)  # (b, L, T, d)
        x = self.mixer(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)

    def head_inputs(self, context: torch.Tensor) -> torch.Tensor:
        """What the heads read, (b, L, T, head_in): h(c) - h(centre) in the contrast form, else h(c)."""
        if not self.config.contrast:
            return self.hidden(context)
        self._check(context)
        b = context.shape[0]
        h = self.hidden(torch.cat([context, self.context_center.to(context)[None]]))  # the centre: one more row
        return h[:b] - h[b:]

    def forward(self, context: torch.Tensor):
        """context (b, d_c) -> (b, L, T, *shape) for diag/square, {type: (b, L, r·in + out·r)} for full."""
        cfg = self.config
        h = self.head_inputs(context)  # (b, L, T, head_in)
        if cfg.position_embeddings:
            raw = {t: self.heads[t](h[:, :, i]) for i, t in enumerate(cfg.module_types)}  # each (b, L, n_out)
            if cfg.mode == "full":
                return raw
            grid = torch.stack([raw[t] for t in cfg.module_types], dim=2)  # (b, L, T, r | r*r)
        else:  # one head, one z per context, the same at every layer and type
            shared = next(iter(self.heads.values()))(h)  # (b, 1, 1, r | r*r)
            grid = shared.expand(-1, cfg.n_layers, len(cfg.module_types), -1)
        r = cfg.rank
        if cfg.mode == "diag":
            return grid + 1.0 if cfg.z_init == "identity" else grid
        grid = grid.reshape(*grid.shape[:3], r, r)  # (b, L, T, r, r)
        if cfg.z_init == "identity":
            grid = grid + torch.eye(r, device=grid.device, dtype=grid.dtype)
        return grid


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
