"""Sweep N, r, d_in, d_out for each class: estimate R̂, check it against the bound, fit log-log slopes.

The synthetic problem at a point (N, r, d_in, d_out), all slices of one set of tensors drawn once
from ``seed`` (common random numbers, so the sweeps are smooth)::

    x_i ~ N(0, I_{d_in})         (or rows of real layer inputs, then d_in is fixed)
    A   = G_A[:r, :d_in] with rows scaled to unit norm (G_A entries N(0, 1)) -> (A x)_j ~ N(0, 1)
    u   = g_u[:d_out] (entries N(0, 1)) rescaled to ‖u‖_2 = sqrt(d_out) exactly
    B   = G_B[:d_out, :r] with columns scaled to unit norm, then (scalar output only) shifted along u so that
          Bᵀu = 1_r exactly (B += u (1 - Bᵀu)ᵀ / ‖u‖²): removes the χ²_r noise of ‖Bᵀu‖
    s = 1; radii: z, Z, A, B balls of radius 1; entry-wise boxes a = 1/sqrt(d_in), b = 1/sqrt(d_out)
    diag-finite: 64 z's on the unit ℓ2 sphere through a diag ZLinear with these A, B (a finite
                 subset of diag-l2, the kind of class a trained hypernetwork realises)

Under this normalisation the scalar closed forms give (up to constants) diag-l2 ≈ sqrt(r/N),
diag-linf ≈ square ≈ r/sqrt(N), full-fro ≈ sqrt(d_in d_out / N) (no r), full-box ≈
r sqrt(d_in d_out / N), diag-finite ≈ sqrt(2 ln 64 / N): the ``EXPECTED`` slopes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .classes import DiagClass, SquareClass
from .estimators import rademacher
from .full import FullClass
from .realised import RealisedClass

logger = logging.getLogger(__name__)

CLASS_NAMES = ("diag-l2", "diag-linf", "square-fro", "square-spec", "full-fro", "full-box", "diag-finite")
SWEEPS = ("n", "r", "d_in", "d_out")
N_FINITE = 64

# Expected log-log slope per (output, class, sweep variable): a number (checked to ± tolerance) or an
# interval (lo, hi). diag-finite in r: C = 64 fixed directions in R^r behave like the whole diag-l2
# ball while 2^r << C (slope 0.5) and like C independent functions once r >> log C (slope 0).
_GROWS = (0.0, math.inf)
_SCALAR = {"diag-l2": (-0.5, 0.5, 0.0, 0.0), "diag-linf": (-0.5, 1.0, 0.0, 0.0), "square-fro": (-0.5, 1.0, 0.0, 0.0),
           "square-spec": (-0.5, 1.0, 0.0, 0.0), "full-fro": (-0.5, 0.0, 0.5, 0.5),
           "full-box": (-0.5, 1.0, 0.5, 0.5), "diag-finite": (-0.5, (0.0, 0.5), 0.0, 0.0)}
_VECTOR = {**_SCALAR, "square-spec": (-0.5, 1.5, 0.0, 0.0), "full-fro": (-0.5, 0.0, _GROWS, _GROWS),
           "full-box": (-0.5, 1.0, _GROWS, _GROWS)}
EXPECTED = {"scalar": {c: dict(zip(SWEEPS, v)) for c, v in _SCALAR.items()},
            "vector": {c: dict(zip(SWEEPS, v)) for c, v in _VECTOR.items()}}


@dataclass
class VerifyConfig:
    """What ``zhyper theory verify`` sweeps. Grids are swept one at a time around the base point."""

    n_values: tuple[int, ...] = (125, 250, 500, 1000, 2000, 4000)  # sample sizes N
    r_values: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # ranks r
    d_values: tuple[int, ...] = (32, 64, 128, 256, 512)  # d_in and d_out grids
    base_n: int = 1000
    base_r: int = 8
    base_d: int = 256  # base d_in and d_out
    n_draws: int = 200  # σ draws per point
    classes: tuple[str, ...] = CLASS_NAMES
    sweeps: tuple[str, ...] = SWEEPS
    output: str = "scalar"  # "scalar" (readout u) or "vector" (σ per output)
    seed: int = 0
    confidence: float = 0.95
    tolerance: float = 0.15  # allowed |measured - expected| slope
    inputs: torch.Tensor | None = field(default=None, repr=False)  # real layer inputs (M, d), or None

    def __post_init__(self) -> None:
        from zhyper import validate

        self.n_values = validate.positive_ints("n_values", self.n_values)
        self.r_values = validate.positive_ints("r_values", self.r_values)
        self.d_values = validate.positive_ints("d_values", self.d_values)
        for name in ("base_n", "base_r", "base_d", "n_draws"):
            validate.positive_int(name, getattr(self, name))
        validate.positive("tolerance", self.tolerance)
        validate.in_range("confidence", self.confidence, 0.0, 1.0, low_open=True, high_open=True)
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {CLASS_NAMES}, got {tuple(self.classes)!r}")
        bad = [s for s in self.sweeps if s not in SWEEPS]
        if bad or not self.sweeps:
            raise ValueError(f"sweeps must be a non-empty subset of {SWEEPS}, got {tuple(self.sweeps)!r}")
        if self.output not in ("scalar", "vector"):
            raise ValueError(f"output must be 'scalar' or 'vector', got {self.output!r}")
        if self.inputs is not None:
            if not isinstance(self.inputs, torch.Tensor) or self.inputs.dim() != 2 or self.inputs.shape[0] < 2:
                shape = tuple(self.inputs.shape) if isinstance(self.inputs, torch.Tensor) else type(self.inputs)
                raise ValueError(f"inputs must be a tensor of shape (N, d) with N >= 2, got {shape}")
            self.inputs = self.inputs.float()

    @classmethod
    def for_output(cls, output: str = "scalar", **kwargs) -> "VerifyConfig":
        """The default sweep for an output variant; the vector one is smaller (σ has N·d_out entries)."""
        base = {} if output == "scalar" else dict(n_values=(125, 250, 500, 1000, 2000), d_values=(16, 32, 64, 128),
                                                  base_n=500, base_d=64, n_draws=100)
        return cls(**{**base, "output": output, **kwargs})

    @classmethod
    def quick(cls, **kwargs) -> "VerifyConfig":
        """A small sweep for tests and smoke runs (about a second)."""
        base = dict(n_values=(100, 200, 400, 800), r_values=(2, 4, 8, 16), d_values=(16, 32, 64), base_n=200,
                    base_r=4, base_d=32, n_draws=200)
        return cls(**{**base, **kwargs})


@dataclass(frozen=True)
class Row:
    sweep: str
    cls: str
    n: int
    r: int
    d_in: int
    d_out: int
    estimate: float
    ci_low: float
    ci_high: float
    bound: float
    holds: bool  # the bound is not rejected: ci_low <= bound
    exact_sup: bool  # False: sup by search (under-estimate)
    paper_rate: float  # sqrt(r/N) (diag classes) or sqrt(r (d_in + d_out)/N) (full); nan otherwise


@dataclass(frozen=True)
class Slope:
    cls: str
    sweep: str
    measured: float
    expected: float | tuple[float, float]  # a value (± tolerance) or an interval (lo, hi)
    ok: bool


class _Problem:
    """The tensors every point slices (see the module docstring)."""

    def __init__(self, cfg: VerifyConfig):
        gen = torch.Generator().manual_seed(cfg.seed)
        self.cfg = cfg
        d_in_max = cfg.inputs.shape[1] if cfg.inputs is not None else max(max(cfg.d_values), cfg.base_d)
        d_out_max = max(max(cfg.d_values), cfg.base_d)
        r_max = max(max(cfg.r_values), cfg.base_r)
        if cfg.inputs is not None:
            self.x = cfg.inputs[torch.randperm(cfg.inputs.shape[0], generator=gen)]
        else:
            self.x = torch.randn(max(max(cfg.n_values), cfg.base_n), d_in_max, generator=gen)
        self.g_a = torch.randn(r_max, d_in_max, generator=gen)
        self.g_b = torch.randn(d_out_max, r_max, generator=gen)
        self.g_u = torch.randn(d_out_max, generator=gen)
        self.z_finite = torch.randn(N_FINITE, r_max, generator=gen)

    def tensors(self, n: int, r: int, d_in: int, d_out: int):
        x = self.x[:n, :d_in]
        a = torch.nn.functional.normalize(self.g_a[:r, :d_in], dim=1)  # unit rows: (A x)_j ~ N(0, 1)
        b = torch.nn.functional.normalize(self.g_b[:d_out, :r], dim=0)  # unit columns
        u = torch.nn.functional.normalize(self.g_u[:d_out], dim=0) * math.sqrt(d_out)  # ‖u‖² = d_out exactly
        if self.cfg.output == "scalar":
            b = b + torch.outer(u, 1.0 - b.T @ u) / u.dot(u)
            return x, a, b, u
        return x, a, b, None

    def make(self, name: str, n: int, r: int, d_in: int, d_out: int):
        x, a, b, u = self.tensors(n, r, d_in, d_out)
        if name == "diag-l2":
            return x, DiagClass(a, b, 1.0, "l2", readout=u)
        if name == "diag-linf":
            return x, DiagClass(a, b, 1.0, "linf", readout=u)
        if name == "square-fro":
            return x, SquareClass(a, b, 1.0, "frobenius", readout=u)
        if name == "square-spec":
            return x, SquareClass(a, b, 1.0, "spectral", readout=u)
        if name == "full-fro":
            return x, FullClass(r, d_in, d_out, 1.0, 1.0, "frobenius", readout=u)
        if name == "full-box":
            return x, FullClass(r, d_in, d_out, 1 / math.sqrt(d_in), 1 / math.sqrt(d_out), "entrywise", readout=u)
        from zhyper.layers.zlinear import ZLinear

        layer = ZLinear(d_in, d_out, rank=r, mode="diag", alpha=float(r), bias=False)  # s = alpha / r = 1
        with torch.no_grad():
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
        z = torch.nn.functional.normalize(self.z_finite[:, :r], dim=1)  # on the unit ℓ2 sphere
        return x, RealisedClass(layer, z, readout=u)


def _points(cfg: VerifyConfig, sweep: str, n_rows: int | None, d_in_real: int | None):
    base = dict(n=cfg.base_n, r=cfg.base_r, d_in=d_in_real or cfg.base_d, d_out=cfg.base_d)
    if n_rows is not None:
        base["n"] = min(base["n"], n_rows)
    grid = {"n": cfg.n_values, "r": cfg.r_values, "d_in": cfg.d_values, "d_out": cfg.d_values}[sweep]
    for value in grid:
        if sweep == "n" and n_rows is not None and value > n_rows:
            continue
        yield {**base, sweep: value}


def _paper_rate(name: str, n: int, r: int, d_in: int, d_out: int) -> float:
    from .bounds import paper_rate_diag, paper_rate_full

    if name.startswith("diag"):
        return paper_rate_diag(n, r)
    if name.startswith("full"):
        return paper_rate_full(n, r, d_in, d_out)
    return float("nan")


def run_sweep(cfg: VerifyConfig) -> list[Row]:
    """Every (sweep, class, grid point): estimate, CI, bound. d_in is not swept on real inputs."""
    problem = _Problem(cfg)
    n_rows = cfg.inputs.shape[0] if cfg.inputs is not None else None
    d_in_real = cfg.inputs.shape[1] if cfg.inputs is not None else None
    rows = []
    for sweep in cfg.sweeps:
        if sweep == "d_in" and cfg.inputs is not None:
            logger.info("skipping the d_in sweep: real inputs fix d_in = %d", d_in_real)
            continue
        for point in _points(cfg, sweep, n_rows, d_in_real):
            for name in cfg.classes:
                x, cls = problem.make(name, **point)
                est = rademacher(cls, x, n_draws=cfg.n_draws, seed=cfg.seed, confidence=cfg.confidence)
                bound = cls.bound(x)
                rows.append(Row(sweep, name, point["n"], point["r"], point["d_in"], point["d_out"], est.value,
                                est.ci_low, est.ci_high, bound, est.ci_low <= bound * (1 + 1e-9),
                                cls.sup_is_exact, _paper_rate(name, **point)))
            logger.debug("sweep %s at %s done", sweep, point)
    return rows


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x); nan with fewer than two distinct x or y <= 0."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pairs}) < 2:
        return float("nan")
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / sxx


def slopes(rows: list[Row], cfg: VerifyConfig) -> list[Slope]:
    """One fitted slope per (class, sweep), compared with ``EXPECTED``."""
    out = []
    for sweep in SWEEPS:
        for name in cfg.classes:
            sel = [r for r in rows if r.sweep == sweep and r.cls == name]
            if len(sel) < 2:
                continue
            measured = fit_slope([getattr(r, sweep) for r in sel], [r.estimate for r in sel])
            expected = EXPECTED[cfg.output][name][sweep]
            if isinstance(expected, tuple):
                ok = expected[0] + cfg.tolerance <= measured <= expected[1] + cfg.tolerance
            else:
                ok = abs(measured - expected) <= cfg.tolerance
            out.append(Slope(name, sweep, measured, expected, bool(ok)))
    return out
