"""Failure signatures of a trained hypernetwork, read from its modulations across many descriptions.

Two ways a hypernetwork of this kind fails while its loss still looks fine:

- **collapse to the mean**: z hardly changes with the description, every context behaves alike;
- **context ignorance**: what changes in z is driven by the layer / module-type embeddings, not by
  the description.

For n descriptions and every grid position p = (layer, module type), with z_cp the modulation
flattened (diag: r values, square: r², full: the generated factors), z̄_p its mean over the
descriptions and z̄ the mean of z̄_p over the positions of one type::

    spread_p          = sqrt(mean_c ||z_cp - z̄_p||²) / ||z̄_p||     (relative spread; collapse: near 0)
    description share = SS_desc / (SS_desc + SS_pos),  SS_desc = Σ_cp ||z_cp - z̄_p||²,
                                                         SS_pos  = n Σ_p ||z̄_p - z̄||²
    effective rank    = exp(entropy of σ_i / Σ σ)  of the (n, P·k) matrix z - z̄_p  (Roy & Vetterli 2007)

The share splits all the variation of z over the (description, position) grid into the part
that moves with the description (within each position) and the part fixed by the position; the
effective rank counts how many independent directions the descriptions span (at most n - 1).
A run is flagged collapsed when the median spread is under ``COLLAPSE_SPREAD`` and context-ignorant
when the description share is under ``IGNORANCE_SHARE``; docs/results.md shows the measured runs
these thresholds separate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

COLLAPSE_SPREAD = 0.01  # median relative spread below this: every description gets nearly the same z
IGNORANCE_SHARE = 0.05  # below this share of z's variation moves with the description: the positions drive z


@dataclass
class Diagnostics:
    """The failure-signature figures of one set of modulations (see the module docstring)."""

    n_descriptions: int
    spread_median: float
    spread_min: float
    spread_max: float
    description_share: float
    effective_rank: float
    spread_by_type: dict[str, float] = field(default_factory=dict)  # median over the layers of each module type
    spread_by_layer: list[float] = field(default_factory=list)  # median over the types of each layer

    @property
    def collapsed(self) -> bool:
        return not self.spread_median >= COLLAPSE_SPREAD  # NaN (no variation measurable) counts as collapsed

    @property
    def ignores_descriptions(self) -> bool:
        return not self.description_share >= IGNORANCE_SHARE

    def warnings(self) -> list[str]:
        """One sentence per failure regime the figures fall in (empty when healthy)."""
        out = []
        if self.collapsed:
            out.append(f"collapse to the mean: the modulations of {self.n_descriptions} descriptions differ by a "
                       f"median {self.spread_median:.4f} of their size (healthy runs: >= {COLLAPSE_SPREAD}); every "
                       "context behaves alike. Check the hypernetwork's weight decay and learning rate, "
                       "model.contrast, and that the training descriptions differ")
        if self.ignores_descriptions:
            out.append(f"context ignorance: only {self.description_share:.3f} of the modulations' variation moves "
                       f"with the description (healthy runs: >= {IGNORANCE_SHARE}); the layer and type embeddings "
                       "drive z. Check train.contrast_weight and the number of distinct training contexts")
        return out

    def metrics(self) -> dict[str, float]:
        """Flat figures for eval.json and MLflow (``diagnostics.*``)."""
        out = {f"diagnostics.{k}": float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}
        out.update({f"diagnostics.spread.{t}": v for t, v in self.spread_by_type.items()})
        out["diagnostics.collapsed"] = float(self.collapsed)
        out["diagnostics.ignores_descriptions"] = float(self.ignores_descriptions)
        return out

    def markdown(self) -> str:
        verdict = "; ".join(self.warnings()) or "healthy: neither collapsed nor ignoring the descriptions"
        by_type = ", ".join(f"{t} {v:.4f}" for t, v in self.spread_by_type.items())
        return "\n".join([
            f"| figure | value | flagged below |", "|---|---|---|",
            f"| descriptions | {self.n_descriptions} | |",
            f"| relative spread across descriptions, median (min, max) over layers x types | "
            f"{self.spread_median:.4f} ({self.spread_min:.4f}, {self.spread_max:.4f}) | {COLLAPSE_SPREAD} |",
            f"| relative spread by module type | {by_type} | |",
            f"| share of variation that moves with the description | {self.description_share:.3f} | "
            f"{IGNORANCE_SHARE} |",
            f"| effective rank across descriptions (at most {max(self.n_descriptions - 1, 0)}) | "
            f"{self.effective_rank:.2f} | |", "", f"Verdict: {verdict}."])


def _flat(modulation, module_types) -> list[torch.Tensor]:
    """One (n, L, k_t) float64 tensor per module type, from a hypernetwork's output."""
    if isinstance(modulation, dict):  # full mode: {type: (n, L, r·in + out·r)}
        return [modulation[t].detach().double() for t in module_types]
    n, n_l, n_t = modulation.shape[:3]
    grid = modulation.detach().double().reshape(n, n_l, n_t, -1)
    return [grid[:, :, i] for i in range(n_t)]


def diagnose(modulation, module_types) -> Diagnostics:
    """The figures of a hypernetwork's output for n >= 2 descriptions (``HyperNetwork.forward``'s form)."""
    per_type = _flat(modulation, module_types)
    n = per_type[0].shape[0]
    if n < 2:
        raise ValueError(f"descriptions: the diagnostics compare descriptions, expected at least 2, got {n}")
    spreads, ss_desc, ss_pos, centred = [], 0.0, 0.0, []
    for z in per_type:  # (n, L, k)
        mean = z.mean(0)  # (L, k)
        dev = z - mean
        centred.append(dev.reshape(n, -1))
        spreads.append(dev.pow(2).sum(-1).mean(0).sqrt() / mean.norm(dim=-1))  # (L,)
        ss_desc += float(dev.pow(2).sum())
        ss_pos += n * float((mean - mean.mean(0)).pow(2).sum())
    spread = torch.stack(spreads, 1)  # (L, T)
    total = ss_desc + ss_pos
    return Diagnostics(
        n_descriptions=n, spread_median=float(spread.flatten().quantile(0.5)), spread_min=float(spread.min()),
        spread_max=float(spread.max()), description_share=ss_desc / total if total > 0 else math.nan,
        effective_rank=effective_rank(torch.cat(centred, 1)),
        spread_by_type={t: float(spread[:, i].quantile(0.5)) for i, t in enumerate(module_types)},
        spread_by_layer=[float(v) for v in spread.quantile(0.5, dim=1)])


def effective_rank(matrix: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of ``matrix`` (0 for a zero matrix)."""
    s = torch.linalg.svdvals(matrix.double())
    if float(s.sum()) <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def diagnose_hypernet(hypernet, embeddings: torch.Tensor) -> Diagnostics:
    """Run ``hypernet`` (in eval mode, restored after) on (n, d_c) embeddings and diagnose its output."""
    was_training = hypernet.training
    hypernet.eval()
    try:
        param = next(hypernet.parameters())
        z = hypernet(embeddings.to(param.device, param.dtype))
    finally:
        hypernet.train(was_training)
    return diagnose(z, hypernet.config.module_types)


def load_hypernet(folder: str | Path):
    """(HyperNetwork with the checkpoint's trained weights, its ZhyperConfig), without loading the base model.

    The grid and features come from the layout the checkpoint records; only ``hypernet.*`` tensors are read.
    """
    from safetensors.torch import load_file

    from zhyper.config import ZhyperConfig
    from zhyper.hyper.hypernet import HyperNetwork
    from zhyper.hyper.spec import HyperNetConfig
    from zhyper.pretrained import check_weights_file, read_config

    folder = Path(folder)
    record = read_config(folder)
    config = ZhyperConfig.from_dict(record["config"])
    layout = record["layout"]
    features = {m["module_type"]: (m["in_features"], m["out_features"]) for m in layout["modules"]}
    hcfg = HyperNetConfig(context_dim=config.resolved_context_dim() or record["config"]["context_dim"],
                          n_layers=layout["n_layers"], module_types=tuple(layout["module_types"]),
                          features=features, **config.hypernet_fields())
    hypernet = HyperNetwork(hcfg)
    tensors = load_file(str(check_weights_file(folder, record)))
    state = {k[len("hypernet."):]: v for k, v in tensors.items() if k.startswith("hypernet.")}
    hypernet.load_state_dict(state, strict=True)
    return hypernet.eval(), config


def inspect_checkpoint(folder: str | Path, descriptions: list[str] | None = None) -> Diagnostics:
    """The diagnostics of a checkpoint on ``descriptions`` (default: every description of its contexts.json)."""
    from zhyper.hyper.encoder import ContextEncoder

    hypernet, config = load_hypernet(folder)
    if descriptions is None:
        descriptions = checkpoint_descriptions(folder)
    encoder = ContextEncoder(config.encoder, pooling=config.encoder_pooling)
    return diagnose_hypernet(hypernet, encoder.encode(descriptions))


def checkpoint_descriptions(folder: str | Path) -> list[str]:
    """Every description of the checkpoint's contexts.json, in order, each once; an error when it has none."""
    from zhyper.serving.contexts import read_contexts_file

    table = read_contexts_file(folder)
    found = list(dict.fromkeys(d for ds in table.values() for d in ds))
    if len(found) < 2:
        raise ValueError(f"{folder}: its contexts.json holds {len(found)} description(s); the diagnostics compare "
                         "at least 2: pass --descriptions FILE (one description per line)")
    return found
