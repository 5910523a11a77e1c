"""HyperNetwork: shapes for every mode, identity / LoRA initialisation, batching, validation, gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zhyper.hyper.hypernet import HyperNetConfig, HyperNetwork
from zhyper.layers.zlinear import split_full

FEATURES = {"q_proj": (12, 12), "v_proj": (12, 4), "down_proj": (20, 12)}


def make(mode="diag", n_layers=3, types=("q_proj", "v_proj"), rank=2, **kw) -> HyperNetwork:
    cfg = HyperNetConfig(context_dim=6, n_layers=n_layers, module_types=types,
                         features={t: FEATURES[t] for t in types}, mode=mode, rank=rank, latent_dim=16,
                         head_in=16, dropout=0.0, **kw)
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
    assert not torch.allclose(net(torch.randn(b, 6)), expected.expand_as(out))  # the heads can move it


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
    assert torch.allclose(out[:, :, 1], net.heads["v_proj"](h[:, :, 1]))
    assert not torch.allclose(out, torch.ones_like(out))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(2, 5), mode=st.sampled_from(["diag", "square", "full"]))
def test_mixed_batch_equals_rows_alone(b, mode):
    net = randomize_heads(make(mode))
    c = torch.randn(b, 6)
    batched = net(c)
    for i in range(b):
        alone = net(c[i:i + 1])
        if mode == "full":
            for t in batched:
                assert torch.allclose(batched[t][i:i + 1], alone[t], atol=1e-6)
        else:
            assert torch.allclose(batched[i:i + 1], alone, atol=1e-6)
    if mode != "full":
        assert not torch.allclose(batched[0], batched[1])  # different contexts differ


def test_layers_and_types_get_different_modulations():
    net = randomize_heads(make("diag", n_layers=3, types=("q_proj", "v_proj")))
    out = net(torch.randn(1, 6))[0]  # (L, T, r)
    assert not torch.allclose(out[0, 0], out[1, 0]) and not torch.allclose(out[0, 0], out[0, 1])


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
    (dict(rank=0), "rank: expected a positive int"),
    (dict(latent_dim=10), "latent_dim: expected a multiple of 4"),
    (dict(latent_dim=8), "latent_dim: expected a multiple of 4 and >= 16"),
    (dict(dropout=1.0), "dropout: expected a probability"),
    (dict(module_types=("q_proj", "q_proj")), "module_types: expected distinct names"),
    (dict(module_types=("q_proj", "k_proj")), r"features: no \(in, out\) for module types \['k_proj'\]"),
])
def test_config_validation(kwargs, message):
    base = dict(context_dim=6, n_layers=2, module_types=("q_proj",), features=FEATURES)
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        HyperNetConfig(**base)


def test_built_on_meta_without_touching_data():
    """count_parameters builds it on the meta device: initialisation must not need real data."""
    with torch.device("meta"):
        net = HyperNetwork(make("full").config)
    assert all(p.is_meta for p in net.parameters())
