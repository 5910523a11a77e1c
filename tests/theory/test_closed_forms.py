"""Closed-form sups equal brute-force maximisation over the class, for every σ of tiny problems."""

from __future__ import annotations

import math

import pytest
import torch

from tests.theory._problems import F64, DiagClass, FullClass, SquareClass, box_vertices, tiny, values_at
from zhyper.theory import all_sigmas, inf_to_one_norm, rademacher


def _sigmas(cls, n):
    """Every σ for scalar output (2^N), or every σ of (N, d_out) for the vector output (N·d_out <= 12)."""
    shape = cls.sigma_shape(n)
    return all_sigmas(math.prod(shape), F64).reshape(-1, *shape)


@pytest.mark.parametrize("vector", [False, True])
def test_diag_linf_equals_max_over_vertices(vector):
    x, a, b, u = tiny(n=5, r=3)
    cls = DiagClass(a, b, radius=0.7, norm="linf", scaling=1.5, readout=None if vector else u)
    sigma = _sigmas(cls, 5)
    brute = values_at(cls, [box_vertices((3,), 0.7)], sigma, x).amax(1)  # linear: max at a vertex
    torch.testing.assert_close(cls.sup(sigma, x), brute, rtol=1e-12, atol=1e-12)
    other = DiagClass(a, b, radius=0.7, norm="l2", scaling=1.5, readout=cls.readout).sup(sigma, x)
    assert (other < brute - 1e-6).any()  # the ℓ2 ball is strictly smaller: the comparison can fail


@pytest.mark.parametrize("vector", [False, True])
def test_diag_l2_equals_dense_circle(vector):
    x, a, b, u = tiny(n=4, r=2)
    cls = DiagClass(a, b, radius=2.0, norm="l2", readout=None if vector else u)
    sigma = _sigmas(cls, 4)
    theta = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    z = 2.0 * torch.stack([theta.cos(), theta.sin()], 1)
    brute = values_at(cls, [z], sigma, x).amax(1)
    closed = cls.sup(sigma, x)
    assert (brute <= closed + 1e-12).all()
    torch.testing.assert_close(brute, closed, rtol=1e-7, atol=1e-12)


def test_square_frobenius_equals_dense_sphere():
    x, a, b, _ = tiny(n=3, d_out=2, r=2)
    cls = SquareClass(a, b, radius=1.0, norm="frobenius")  # vector output: G is r×r, not rank one
    sigma = _sigmas(cls, 3)
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(200_000, 4, generator=g, dtype=F64), dim=1).reshape(-1, 2, 2)
    brute = values_at(cls, [z], sigma, x).amax(1)
    closed = cls.sup(sigma, x)
    assert (brute <= closed + 1e-12).all()
    torch.testing.assert_close(brute, closed, rtol=2e-3, atol=1e-12)


def test_square_spectral_equals_max_over_orthogonal_matrices():
    """Extreme points of the spectral ball of radius ρ in R^{2×2} are ρ·O(2): rotations and reflections."""
    x, a, b, _ = tiny(n=3, d_out=2, r=2, seed=3)
    cls = SquareClass(a, b, radius=1.5, norm="spectral")
    sigma = _sigmas(cls, 3)
    t = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    rot = torch.stack([torch.stack([t.cos(), -t.sin()], -1), torch.stack([t.sin(), t.cos()], -1)], 1)
    z = 1.5 * torch.cat([rot, rot @ torch.diag(torch.tensor([1.0, -1.0], dtype=F64))])
    brute = values_at(cls, [z], sigma, x).amax(1)
    closed = cls.sup(sigma, x)
    assert (brute <= closed + 1e-12).all()
    torch.testing.assert_close(brute, closed, rtol=1e-7, atol=1e-12)
    fro = SquareClass(a, b, radius=1.5, norm="frobenius").sup(sigma, x)
    assert (fro < closed - 1e-6).any()  # nuclear vs Frobenius dual: they differ for vector output


def test_square_scalar_frobenius_equals_spectral():
    """Scalar output: G = (s/N) b cᵀ has rank one, so the two balls give the same sup."""
    x, a, b, u = tiny(n=6, r=3)
    sigma = all_sigmas(6, F64)
    fro = SquareClass(a, b, 1.0, "frobenius", readout=u).sup(sigma, x)
    spec = SquareClass(a, b, 1.0, "spectral", readout=u).sup(sigma, x)
    torch.testing.assert_close(fro, spec)
    z = torch.randn(64, 3, 3, dtype=F64)
    spec_cls = SquareClass(a, b, 1.0, "spectral", readout=u)
    values = values_at(spec_cls, spec_cls.project_([z]), sigma, x)
    assert (values.amax(1) <= spec + 1e-12).all()


@pytest.mark.parametrize("vector,r,d_in,d_out", [(False, 1, 3, 2), (False, 2, 2, 2), (True, 1, 3, 2), (True, 2, 2, 2)])
def test_full_entrywise_equals_max_over_vertices(vector, r, d_in, d_out):
    """A bilinear function over a product of boxes attains its max at a vertex."""
    x, _, _, u = tiny(n=4, d_in=d_in, d_out=d_out)
    cls = FullClass(r, d_in, d_out, radius_a=0.5, radius_b=2.0, norm="entrywise", scaling=0.7,
                    readout=None if vector else u)
    sigma = _sigmas(cls, 4)
    va = box_vertices((r, d_in), 0.5)
    vb = box_vertices((d_out, r), 2.0)
    pa = va.repeat_interleave(vb.shape[0], 0)
    pb = vb.repeat(va.shape[0], 1, 1)
    brute = values_at(cls, [pa, pb], sigma, x).amax(1)
    torch.testing.assert_close(cls.sup(sigma, x), brute, rtol=1e-12, atol=1e-12)
    assert cls.sup_is_exact


def test_full_frobenius_equals_dense_search():
    """r = 1, d_in = d_out = 2: A and B on circles (bilinear and homogeneous: the sup is on the spheres)."""
    x, _, _, u = tiny(n=4, d_in=2, d_out=2)
    for readout in (u, None):
        cls = FullClass(1, 2, 2, radius_a=1.5, radius_b=0.5, norm="frobenius", readout=readout)
        sigma = _sigmas(cls, 4)[::3]
        t = torch.linspace(0, 2 * math.pi, 301, dtype=F64)
        circle = torch.stack([t.cos(), t.sin()], 1)
        pa = (1.5 * circle).reshape(-1, 1, 2).repeat_interleave(301, 0)
        pb = (0.5 * circle).reshape(-1, 2, 1).repeat(301, 1, 1)
        brute = values_at(cls, [pa, pb], sigma, x).amax(1)
        closed = cls.sup(sigma, x)
        assert (brute <= closed + 1e-12).all()
        torch.testing.assert_close(brute, closed, rtol=1e-3, atol=1e-12)


def test_full_frobenius_does_not_depend_on_rank():
    x, _, _, u = tiny(n=8, d_in=4, d_out=3)
    sigma = all_sigmas(8, F64)
    values = [FullClass(r, 4, 3, readout=u).sup(sigma, x) for r in (1, 2, 5)]
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(values[0], values[2])
    box = [FullClass(r, 4, 3, norm="entrywise", readout=u).sup(sigma, x) for r in (1, 2)]
    torch.testing.assert_close(box[1], 2 * box[0])  # entry-wise boxes do pay for the rank


def test_inf_to_one_norm_exact_and_ascent():
    g = torch.randn(5, 6, 14, dtype=F64)
    exact, is_exact = inf_to_one_norm(g)
    assert is_exact
    betas = box_vertices((6,), 1.0)  # (64, 6)
    alphas = box_vertices((14,), 1.0)
    brute = torch.einsum("km,smn,ln->skl", betas, g, alphas).flatten(1).amax(1)
    torch.testing.assert_close(exact, brute)
    transposed, _ = inf_to_one_norm(g.transpose(1, 2))  # ‖G‖_{∞→1} = ‖Gᵀ‖_{∞→1}
    torch.testing.assert_close(transposed, exact)
    ascent, is_exact = inf_to_one_norm(g, exact_limit=2, restarts=16, generator=torch.Generator().manual_seed(0))
    assert not is_exact
    assert (ascent <= exact + 1e-12).all() and (ascent >= 0.97 * exact).all()


def test_enumerated_sigma_gives_exact_estimate_below_bound():
    x, a, b, u = tiny(n=8, r=3)
    for cls in (DiagClass(a, b, 1.0, "l2", readout=u), DiagClass(a, b, 1.0, "linf", readout=u),
                SquareClass(a, b, 1.0, "frobenius", readout=u), FullClass(3, 3, 2, norm="entrywise", readout=u),
                FullClass(3, 3, 2, readout=u)):
        est = rademacher(cls, x, sigma=all_sigmas(8, F64))
        assert est.exact and est.ci_low == est.ci_high == est.value
        assert 0 < est.value <= cls.bound(x) + 1e-12
    est = rademacher(DiagClass(a, b, 1.0, "l2", readout=u), x, sigma=all_sigmas(8, F64)[:100])
    assert not est.exact and est.ci_low < est.ci_high
