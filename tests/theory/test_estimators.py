"""Monte-Carlo estimator vs closed forms, confidence intervals, N-scaling, σ utilities."""

from __future__ import annotations

import math

import pytest
import torch

from tests.theory._problems import F64, DiagClass, FullClass, SquareClass, tiny
from zhyper.theory import all_sigmas, fit_slope, monte_carlo_rademacher, rademacher, rademacher_signs
from zhyper.theory.estimators import summarise


def _classes(vector: bool):
    x, a, b, u = tiny(n=12, d_in=5, d_out=4, r=3, seed=2)
    readout = None if vector else u
    return x, [DiagClass(a, b, 1.0, "l2", readout=readout), DiagClass(a, b, 0.5, "linf", readout=readout),
               SquareClass(a, b, 1.0, "frobenius", readout=readout), SquareClass(a, b, 1.0, "spectral", readout=readout),
               FullClass(3, 5, 4, 1.0, 2.0, "frobenius", readout=readout),
               FullClass(3, 5, 4, 0.3, 0.3, "entrywise", readout=readout)]


@pytest.mark.parametrize("vector", [False, True])
def test_monte_carlo_approaches_closed_form_from_below(vector):
    x, classes = _classes(vector)
    for cls in classes:
        sigma = rademacher_signs((24, *cls.sigma_shape(12)), torch.Generator().manual_seed(5), F64)
        mc = monte_carlo_rademacher(cls, x, sigma=sigma, restarts=4, steps=150)
        assert mc.lower_bound and not mc.exact
        exact = rademacher(cls, x, sigma=sigma).value
        assert mc.value <= exact + 1e-9, cls
        assert mc.value >= 0.97 * exact, (cls, mc.value, exact)


def test_monte_carlo_improves_with_steps():
    x, classes = _classes(False)
    cls = classes[5]  # the bilinear box
    few = monte_carlo_rademacher(cls, x, n_draws=16, restarts=1, steps=1)
    many = monte_carlo_rademacher(cls, x, n_draws=16, restarts=4, steps=150)
    exact = rademacher(cls, x, sigma=rademacher_signs((16, 12), torch.Generator().manual_seed(0), F64))
    assert few.value < many.value <= exact.value + 1e-9


def test_sampled_estimate_ci_covers_enumerated_value():
    x, a, b, u = tiny(n=10, r=3, seed=4)
    cls = DiagClass(a, b, 1.0, "l2", readout=u)
    exact = rademacher(cls, x, sigma=all_sigmas(10, F64)).value
    est = rademacher(cls, x, n_draws=4000, seed=1, confidence=0.99)
    assert est.ci_low <= exact <= est.ci_high
    assert est.half_width < 0.05 * exact
    small = rademacher(cls, x, n_draws=100, seed=1, confidence=0.99)
    assert small.half_width > est.half_width  # wider with fewer draws


def test_chunked_draws_equal_one_batch():
    x, a, b, u = tiny(n=30, r=3)
    cls = DiagClass(a, b, 1.0, "l2", readout=None)
    one = rademacher(cls, x, n_draws=50, seed=3)
    chunked = rademacher(cls, x, n_draws=50, seed=3, max_elements=7 * 30 * 2)
    assert one.value == pytest.approx(chunked.value, rel=1e-12)
    assert rademacher(cls, x, n_draws=50, seed=4).value != one.value


def test_scaling_in_n_on_a_fixed_seed():
    """R̂ ∝ N^{-1/2}: a 16x larger sample has a 4x smaller complexity (10% tolerance)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 64, generator=g)
    a = torch.nn.functional.normalize(torch.randn(8, 64, generator=g), dim=1)
    b = torch.randn(32, 8, generator=g)
    u = torch.randn(32, generator=g)
    for cls in (DiagClass(a, b, 1.0, "l2", readout=u), FullClass(8, 64, 32, readout=u)):
        small = rademacher(cls, x[:250], n_draws=400, seed=0).value
        large = rademacher(cls, x, n_draws=400, seed=0).value
        assert small / large == pytest.approx(4.0, rel=0.1)
    ns = [250, 500, 1000, 2000, 4000]
    values = [rademacher(DiagClass(a, b, 1.0, "l2", readout=u), x[:n], n_draws=400).value for n in ns]
    assert fit_slope(ns, values) == pytest.approx(-0.5, abs=0.06)


def test_sup_is_homogeneous_in_the_radius():
    x, a, b, u = tiny(n=6)
    sigma = all_sigmas(6, F64)
    one = DiagClass(a, b, 1.0, "l2", readout=u).sup(sigma, x)
    torch.testing.assert_close(DiagClass(a, b, 3.0, "l2", readout=u).sup(sigma, x), 3 * one)
    torch.testing.assert_close(FullClass(2, 3, 2, 2.0, 3.0, readout=u).sup(sigma, x),
                               6 * FullClass(2, 3, 2, 1.0, 1.0, readout=u).sup(sigma, x))


def test_all_sigmas_and_signs():
    s = all_sigmas(4)
    assert s.shape == (16, 4) and torch.unique(s, dim=0).shape[0] == 16 and set(s.unique().tolist()) == {-1.0, 1.0}
    r = rademacher_signs((2000, 3), torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) == {-1.0, 1.0} and r.mean().abs() < 0.05


def test_summarise():
    est = summarise(torch.tensor([1.0, 2.0, 3.0]), confidence=0.95)
    half = 1.959963984540054 * 1.0 / math.sqrt(3)
    assert est.value == 2.0 and est.ci_low == pytest.approx(2 - half) and est.ci_high == pytest.approx(2 + half)
    assert summarise(torch.tensor([1.0, 2.0]), exact=True).half_width == 0.0
