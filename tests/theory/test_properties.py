"""Hypothesis property tests: sups dominate every feasible point, class inclusions, bounds hold."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.theory._problems import F64, DiagClass, FullClass, SquareClass, values_at
from zhyper.layers import ZLinear
from zhyper.theory import RealisedClass, all_sigmas, rademacher, rademacher_signs

shapes = st.tuples(st.integers(1, 7), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4),
                   st.integers(0, 10_000), st.booleans())


def _problem(n, d_in, d_out, r, seed, vector):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=F64)
    a = torch.randn(r, d_in, generator=g, dtype=F64)
    b = torch.randn(d_out, r, generator=g, dtype=F64)
    u = None if vector else torch.randn(d_out, generator=g, dtype=F64)
    return g, x, a, b, u


@settings(max_examples=40, deadline=None)
@given(shapes, st.floats(0.1, 3.0))
def test_sup_dominates_feasible_points(shape, radius):
    g, x, a, b, u = _problem(*shape)
    n, d_in, d_out, r = shape[:4]
    classes = [DiagClass(a, b, radius, "l2", readout=u), DiagClass(a, b, radius, "linf", readout=u),
               SquareClass(a, b, radius, "frobenius", readout=u), SquareClass(a, b, radius, "spectral", readout=u),
               FullClass(r, d_in, d_out, radius, 1.0, "frobenius", readout=u),
               FullClass(r, d_in, d_out, radius, 1.0, "entrywise", readout=u)]
    for cls in classes:
        sigma = rademacher_signs((8, *cls.sigma_shape(n)), g, F64)
        params = cls.init_params(64, g, F64)
        assert (values_at(cls, params, sigma, x).amax(1) <= cls.sup(sigma, x) + 1e-9).all(), cls


@settings(max_examples=40, deadline=None)
@given(shapes, st.floats(0.1, 3.0))
def test_inclusions_diag_in_square(shape, radius):
    """diag(ℓ2, ρ) ⊆ square(Frobenius, ρ); diag(ℓ∞, ρ) ⊆ square(spectral, ρ): sups ordered per σ."""
    g, x, a, b, u = _problem(*shape)
    d2, dinf = DiagClass(a, b, radius, "l2", readout=u), DiagClass(a, b, radius, "linf", readout=u)
    sf, ss = SquareClass(a, b, radius, "frobenius", readout=u), SquareClass(a, b, radius, "spectral", readout=u)
    sigma = rademacher_signs((16, *d2.sigma_shape(shape[0])), g, F64)
    assert (d2.sup(sigma, x) <= sf.sup(sigma, x) * (1 + 1e-9) + 1e-12).all()
    assert (dinf.sup(sigma, x) <= ss.sup(sigma, x) * (1 + 1e-9) + 1e-12).all()
    assert (d2.sup(sigma, x) <= dinf.sup(sigma, x) * (1 + 1e-9) + 1e-12).all()  # ℓ2 ball ⊆ ℓ∞ ball
    assert (sf.sup(sigma, x) <= ss.sup(sigma, x) * (1 + 1e-9) + 1e-12).all()


def test_inclusions_can_be_strict():
    g, x, a, b, u = _problem(6, 4, 3, 3, 0, True)
    sigma = rademacher_signs((64, 6, 3), g, F64)
    strict = DiagClass(a, b, 1.0, "l2").sup(sigma, x) < SquareClass(a, b, 1.0, "frobenius").sup(sigma, x) - 1e-6
    assert strict.all()


@settings(max_examples=25, deadline=None)
@given(shapes)
def test_exact_complexity_below_bound(shape):
    n = shape[0]
    _, x, a, b, u = _problem(*shape)
    if u is None:
        return  # enumerating σ of (N, d_out) is covered by the tiny-case tests
    d_in, d_out, r = shape[1:4]
    for cls in (DiagClass(a, b, 1.0, "l2", readout=u), DiagClass(a, b, 1.0, "linf", readout=u),
                SquareClass(a, b, 1.0, "frobenius", readout=u), FullClass(r, d_in, d_out, readout=u),
                FullClass(r, d_in, d_out, norm="entrywise", readout=u)):
        est = rademacher(cls, x, sigma=all_sigmas(n, F64))
        assert est.exact and est.value <= cls.bound(x) * (1 + 1e-9) + 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 12), st.integers(0, 1000), st.booleans())
def test_realised_class_is_a_subset_of_the_diag_ball(n, r, c, seed, vector):
    """A trained hypernetwork's finite class with ‖z_c‖_2 <= ρ never exceeds the diag ℓ2 sup."""
    torch.manual_seed(seed)
    layer = ZLinear(4, 3, rank=r, mode="diag", alpha=2.0)
    torch.nn.init.normal_(layer.lora_B)
    z = torch.nn.functional.normalize(torch.randn(c, r), dim=1) * 0.8
    u = None if vector else torch.randn(3)
    x = torch.randn(n, 4)
    realised = RealisedClass(layer, z, readout=u)
    diag = DiagClass.from_layer(layer, radius=0.8, norm="l2", readout=u)
    sigma = rademacher_signs((32, *diag.sigma_shape(n)), torch.Generator().manual_seed(seed))
    assert (realised.sup(sigma, x) <= diag.sup(sigma, x) + 1e-5).all()
