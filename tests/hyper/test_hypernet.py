"""HyperNetwork: shapes for every mode, identity / LoRA initialisation, batching, validation, gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zhyper.config import ZhyperConfig
from zhyper.hyper.hypernet import HyperNetConfig, HyperNetwork
from zhyper.layers.zlinear import split_full

FEATURES = {"q_proj": (12, 12), "v_proj": (12, 4), "down_proj": (20, 12)}
# HyperNetConfig has no defaults of its own: the settings of a default ZhyperConfig, contrast off
SETTINGS = {**ZhyperConfig().hypernet_fields(), "contrast": False}


def make(mode="diag", n_layers=3, types=("q_proj", "v_proj"), rank=2, **kw) -> HyperNetwork:
    settings = {**SETTINGS, "mode": mode, "rank": rank, "latent_dim": 16, "head_in": 16, "dropout": 0.0, **kw}
    cfg = HyperNetConfig(context_dim=6, n_layers=n_layers, module_types=types,
                         features={t: FEATURES[t] for t in types}, **settings)
    return HyperNetwork(cfg).eval()


def randomize_heads(net: HyperNetwork, scale: float = 0.5) -> HyperNetwork:
    with torch.no_grad():
        for head in net.heads.values():
            head.weight.normal_(0, scale)
            head.bias.normal_(0, scale)
    return net


grid = dict(b=st.integers(1, 4), n_layers=st.integers(1, 5), rank=st.integers(1, 4),
            types=st.sampled_from([("q_proj",), ("q_proj", "v_proj"), ("v_proj", "down_proj", "q_proj")]))


@settings(max_examples=25, deadline=None)
@given(**grid, mode=st.sampled_from(["diag", "square"]))
def test_grid_shape_and_identity_init(b, n_layers, rank, types, mode):
    net = make(mode, n_layers, types, rank)
    out = net(torch.randn(b, 6))
    shape = (rank,) if mode == "diag" else (rank, rank)
    assert out.shape == (b, n_layers, len(types), *shape)
    expected = torch.ones(shape) if mode == "diag" else torch.eye(rank)
    assert torch.equal(out, expected.expand_as(out))  # z = 1 / Z = I: training starts as plain LoRA
    randomize_heads(net)
    moved = (net(torch.randn(b, 6)) - expected.expand_as(out)).abs().max()
    assert moved > 1e-4, f"random heads must move the modulation away from the identity (moved {moved})"


@settings(max_examples=20, deadline=None)
@given(**grid)
def test_full_mode_per_type_mapping_starts_as_lora(b, n_layers, rank, types):
    net = make("full", n_layers, types, rank)
    out = net(torch.randn(b, 6))
    assert sorted(out) == sorted(types)
    for t, m in out.items():
        fin, fout = FEATURES[t]
        assert m.shape == (b, n_layers, rank * fin + fout * rank)
        a, bb = split_full(m, rank, fin, fout)
        assert torch.equal(bb, torch.zeros_like(bb))  # B_c = 0: ΔW = 0 at initialisation
        assert torch.equal(a, a[:1, :1].expand_as(a)) and a.abs().sum() > 0  # one Kaiming A for all rows
        bound = 1 / fin ** 0.5  # kaiming_uniform(a=sqrt(5)) on (r, in) has bound 1/sqrt(in)
        assert a.abs().max() <= bound


def test_paper_init_is_the_raw_head_output():
    net = make("diag", z_init="paper")
    c = torch.randn(3, 6)
    h = net.hidden(c)
    out = net(c)
    torch.testing.assert_close(out[:, :, 1], net.heads["v_proj"](h[:, :, 1]), rtol=1e-5, atol=1e-8)
    assert (out - torch.ones_like(out)).abs().max() > 1e-4, "the paper init is not the identity z = 1"


@settings(max_examples=20, deadline=None)
@given(b=st.integers(2, 5), mode=st.sampled_from(["diag", "square", "full"]), contrast=st.booleans())
def test_mixed_batch_equals_rows_alone(b, mode, contrast):
    net = randomize_heads(make(mode, contrast=contrast and mode != "full"))
    c = torch.randn(b, 6)
    batched = net(c)
    for i in range(b):
        alone = net(c[i:i + 1])
        if mode == "full":
            for t in batched:
                torch.testing.assert_close(batched[t][i:i + 1], alone[t], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-6)
    if mode != "full":
        assert (batched[0] - batched[1]).abs().max() > 1e-4, "different contexts must get different modulations"


def test_layers_and_types_get_different_modulations():
    net = randomize_heads(make("diag", n_layers=3, types=("q_proj", "v_proj")))
    out = net(torch.randn(1, 6))[0]  # (L, T, r)
    assert (out[0, 0] - out[1, 0]).abs().max() > 1e-4, "layers 0 and 1 must get different modulations"
    assert (out[0, 0] - out[0, 1]).abs().max() > 1e-4, "types 0 and 1 must get different modulations"


def test_gradients_reach_every_parameter():
    net = randomize_heads(make("square")).train()
    net(torch.randn(4, 6)).pow(2).sum().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_bad_context_shape_names_expected_shape():
    with pytest.raises(ValueError, match=r"expected \(batch, 6\)"):
        make()(torch.randn(2, 5))


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="low"), "mode: expected one of"),
    (dict(z_init="zero"), "z_init: expected one of"),
    (dict(rank=0), "rank: expected an int >= 1"),
    (dict(latent_dim=10), "latent_dim: expected a multiple of 4"),
    (dict(latent_dim=8), "latent_dim: expected a multiple of 4 and >= 16"),
    (dict(dropout=1.0), "dropout: expected a probability"),
    (dict(module_types=("q_proj", "q_proj")), "module_types: expected distinct names"),
    (dict(mode="full", contrast=True), "contrast: needs mode diag or square with z_init 'identity'"),
    (dict(z_init="paper", contrast=True), "got mode 'diag', z_init 'paper'"),
    (dict(module_types=("q_proj", "k_proj")), r"features: no \(in, out\) for module types \['k_proj'\]"),
])
def test_config_validation(kwargs, message):
    base = dict(context_dim=6, n_layers=2, module_types=("q_proj",), features=FEATURES, **SETTINGS)
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        HyperNetConfig(**base)


def test_built_on_meta_without_touching_data():
    """count_parameters builds it on the meta device: initialisation must not need real data."""
    with torch.device("meta"):
        net = HyperNetwork(make("full").config)
    assert all(p.is_meta for p in net.parameters())


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 4), n=st.integers(1, 6), shift=st.floats(-3, 3), mode=st.sampled_from(["diag", "square"]))
def test_centre_is_subtracted_from_the_input(b, n, shift, mode):
    """Centred on the mean m of some embeddings, net(c) equals the uncentred net at c - m."""
    net = randomize_heads(make(mode))
    fitted = torch.randn(n, 6) + shift
    c = torch.randn(b, 6)
    plain = net(c - fitted.mean(0))
    centre = net.set_context_center(fitted)
    torch.testing.assert_close(centre, fitted.double().mean(0).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net(c), plain, rtol=1e-5, atol=1e-5)
    net.context_center.zero_()
    torch.testing.assert_close(net(c - fitted.mean(0)), plain, rtol=1e-5, atol=1e-5)
    if fitted.mean(0).abs().max() > 1e-2:  # the centre changes the function: the two sides can differ
        assert (net(c) - plain).abs().max() > 1e-5, "without its centre the network must compute another function"


def test_centre_is_a_saved_buffer_not_a_parameter():
    net = make()
    net.set_context_center(torch.ones(3, 6))
    assert "context_center" in net.state_dict() and "context_center" not in dict(net.named_parameters())
    assert torch.equal(net.state_dict()["context_center"], torch.ones(6))


def test_centring_separates_similar_contexts():
    """Two embeddings sharing a large common part: the centred trunk features differ far more."""
    torch.manual_seed(0)
    common = torch.randn(6) * 5
    c = torch.stack([common + 0.3 * torch.randn(6), common + 0.3 * torch.randn(6)])
    net = make()
    before = net.hidden(c)
    net.set_context_center(c)
    after = net.hidden(c)
    assert (after[0] - after[1]).norm() > 2 * (before[0] - before[1]).norm()


@pytest.mark.parametrize("bad, message", [
    (torch.ones(3, 5), r"expected a \(n, 6\) tensor"),
    (torch.ones(6), r"expected a \(n, 6\) tensor"),
    ([[0.0] * 6], r"expected a \(n, 6\) tensor of context embeddings, got list"),
    (torch.ones(0, 6), "at least one row"),
    (torch.full((2, 6), float("nan")), "not finite"),
])
def test_set_context_center_rejects_bad_input(bad, message):
    net = make()
    with pytest.raises(ValueError, match=message):
        net.set_context_center(bad)
    assert torch.equal(net.context_center, torch.zeros(6))  # nothing half-set


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 4), mode=st.sampled_from(["diag", "square"]), shift=st.floats(-2, 2))
def test_contrast_emits_the_difference_from_the_centre(b, mode, shift):
    """z(c) = 1 + head(h(c) - h(centre)): at the centre every layer gets 1 + bias (Z: I + bias)."""
    net = randomize_heads(make(mode, contrast=True))
    net.set_context_center(torch.randn(5, 6) + shift)
    c = torch.randn(b, 6)
    h = net.hidden(c) - net.hidden(net.context_center[None])
    out = net(c)
    plain = make(mode)
    plain.load_state_dict(net.state_dict())  # same weights, no contrast
    for i, t in enumerate(net.config.module_types):
        want = net.heads[t](h[:, :, i]).view(out[:, :, i].shape)
        torch.testing.assert_close(out[:, :, i] - torch.ones(()) if mode == "diag" else out[:, :, i] - torch.eye(2),
                                   want, rtol=1e-5, atol=1e-5)
    at_centre = net(net.context_center[None])[0]  # (L, T, ...)
    for i, t in enumerate(net.config.module_types):
        bias = net.heads[t].bias.view(at_centre[0, i].shape)
        want = (bias + (1.0 if mode == "diag" else torch.eye(2))).expand_as(at_centre[:, i])  # every layer
        torch.testing.assert_close(at_centre[:, i], want, rtol=1e-5, atol=1e-5)
    assert (plain(c) - out).abs().max() > 1e-4, "the contrast must change the function"


def test_contrast_heads_get_no_common_gradient_at_the_centre():
    """A loss on the centre's modulation reaches the head biases only: the weights see h - h(centre) = 0."""
    net = randomize_heads(make("diag", contrast=True)).train()
    net(net.context_center[None]).sum().backward()
    for head in net.heads.values():
        assert torch.count_nonzero(head.weight.grad) == 0 and head.bias.grad.abs().sum() > 0
    plain = randomize_heads(make("diag")).train()
    plain(plain.context_center[None]).sum().backward()
    assert all(h.weight.grad.abs().sum() > 0 for h in plain.heads.values())
