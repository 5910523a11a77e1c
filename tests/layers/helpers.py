"""Shared builders and comparisons for the ZLinear tests: random layers, fp32 references, tolerances."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from zhyper.layers.zlinear import ZLinear

# Modest example counts: each identity file runs in a few seconds on 2 cores.
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Case:
    """One drawn configuration of a layer, an input and a batch of modulations."""

    in_features: int
    out_features: int
    rank: int
    mode: str
    dtype: torch.dtype
    lead: tuple[int, ...]  # x is (*lead, in); lead[0] is the batch
    alpha: float
    rslora: bool
    bias: bool
    seed: int

    @property
    def batch(self) -> int:
        return self.lead[0]


@st.composite
def cases(draw, modes=("diag", "square"), dtypes=DTYPES, max_features: int = 24) -> Case:
    batch = draw(st.integers(1, 4))
    middle = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    return Case(in_features=draw(st.integers(1, max_features)), out_features=draw(st.integers(1, max_features)),
                rank=draw(st.integers(1, 8)), mode=draw(st.sampled_from(modes)), dtype=draw(st.sampled_from(dtypes)),
                lead=(batch, *middle), alpha=draw(st.sampled_from([1.0, 8.0, 16.0])), rslora=draw(st.booleans()),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def build(case: Case, mode: str | None = None) -> tuple[ZLinear, torch.Tensor, torch.Tensor]:
    """A ZLinear with random base and non-zero B, an input x (*lead, in) and modulations (b, *shape)."""
    g = torch.Generator().manual_seed(case.seed)
    mode = mode or case.mode
    layer = ZLinear(case.in_features, case.out_features, rank=case.rank, mode=mode, alpha=case.alpha,
                    rslora=case.rslora, bias=case.bias, dtype=case.dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / case.in_features**0.5)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
        if layer.lora_A is not None:
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) / case.in_features**0.5)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))
    x = torch.randn(*case.lead, case.in_features, generator=g).to(case.dtype)
    return layer, x, random_modulation(layer, case.batch, g)


def random_modulation(layer: ZLinear, batch: int, g: torch.Generator) -> torch.Tensor:
    """(batch, *modulation_shape) fp32: z around 1 (diag), Z around I (square), small A_c/B_c (full)."""
    shape = (batch, *layer.modulation_shape)
    noise = torch.randn(shape, generator=g)
    if layer.mode == "diag":
        return 1 + 0.5 * noise
    if layer.mode == "square":
        return torch.eye(layer.rank) + 0.3 * noise
    return 0.5 * noise


def reference(layer: ZLinear, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """fp32 math, one sample at a time: x_i · (W + ΔW(z_i))ᵀ + b, built from delta_weight."""
    w = layer.weight.detach().float()
    b = layer.bias.detach().float() if layer.bias is not None else None
    rows = [F.linear(x[i].float(), w + layer.delta_weight(z[i]), b) for i in range(x.shape[0])]
    return torch.stack(rows)


def base_output(layer: ZLinear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def tolerance(dtype: torch.dtype, expected: torch.Tensor) -> float:
    """Absolute tolerance for a comparison against ``expected``: fp32 rounding, or a few bf16 ulps."""
    scale = 1.0 + expected.detach().float().abs().max().item()
    return (1e-5 if dtype == torch.float32 else 3e-2) * scale


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert actual.shape == expected.shape
    diff, tol = max_diff(actual, expected), tolerance(dtype, expected)
    assert diff <= tol, f"max |diff| {diff:.3g} > tolerance {tol:.3g}"


def assert_differs(actual: torch.Tensor, other: torch.Tensor, dtype: torch.dtype,
                   reference_gap: float | None = None) -> None:
    """The guard twin of assert_close: the two differ by more than the tolerance used for equality.

    Inside a property test, pass ``reference_gap``, the size of the difference computed in fp32:
    drawn examples where even that is within a few tolerances (a near-zero random product) are
    discarded with ``assume`` instead of being reported as failures.
    """
    tol = tolerance(dtype, other)
    if reference_gap is not None:
        assume(reference_gap > 4 * tol)
    diff = max_diff(actual, other)
    assert diff > tol, f"expected a difference above {tol:.3g}, got {diff:.3g}"
