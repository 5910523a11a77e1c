"""The realised (finite) class against ZLinear's own forward, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from tests.theory._problems import DiagClass, FullClass, SquareClass, tiny
from zhyper.layers import ZLinear
from zhyper.theory import RealisedClass, VerifyConfig, all_sigmas, load_tensor_file, monte_carlo_rademacher, rademacher


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
@pytest.mark.parametrize("vector", [False, True])
def test_realised_sup_equals_max_over_layer_outputs(mode, vector):
    layer = ZLinear(4, 3, rank=2, mode=mode, alpha=4.0)
    if layer.lora_B is not None:
        torch.nn.init.normal_(layer.lora_B)
    mods = torch.randn(5, *layer.modulation_shape)
    x = torch.randn(6, 4)
    u = None if vector else torch.randn(3)
    cls = RealisedClass(layer, mods, readout=u)
    with torch.no_grad():
        base = torch.nn.functional.linear(x, layer.weight, layer.bias)
        outs = torch.stack([layer(x, modulation=m) - base for m in mods])  # (C, N, 3), through forward
    if u is not None:
        outs = outs @ u
    sigma = all_sigmas(6).reshape(-1, *cls.sigma_shape(6)) if u is not None else \
        torch.randint(0, 2, (200, 6, 3)).float() * 2 - 1
    brute = (sigma.reshape(sigma.shape[0], -1) @ outs.reshape(5, -1).T).amax(1) / 6
    torch.testing.assert_close(cls.sup(sigma, x), brute, rtol=1e-5, atol=1e-6)
    single = RealisedClass(layer, mods[:1], readout=u)
    assert single.bound(x) == 0.0  # one function: R̂ = 0 exactly
    if u is not None:
        assert rademacher(single, x, sigma=all_sigmas(6)).value == pytest.approx(0.0, abs=1e-6)
        assert rademacher(cls, x, sigma=all_sigmas(6)).value <= cls.bound(x) + 1e-6


def test_from_layer_uses_the_layer_factors_and_scaling():
    layer = ZLinear(5, 4, rank=3, mode="diag", alpha=6.0)  # s = 2
    torch.nn.init.normal_(layer.lora_B)
    x, u = torch.randn(7, 5), torch.randn(4)
    cls = DiagClass.from_layer(layer, radius=1.0, norm="linf", readout=u)
    assert cls.scaling == 2.0 and cls.rank == 3
    z = torch.tensor([[1.0, -1.0, 1.0]])
    with torch.no_grad():
        delta = layer(x, modulation=z[0]) - torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(cls.outputs([z], x)[0], delta @ u, rtol=1e-5, atol=1e-5)
    doubled = DiagClass.from_layer(layer, readout=u).outputs([2 * z], x)[0]
    assert (doubled - delta @ u).abs().max() > 1e-4, "another modulation must give other outputs"
    with pytest.raises(ValueError, match="needs a diag/square ZLinear with shared factors, got mode 'full'"):
        SquareClass.from_layer(ZLinear(5, 4, rank=3, mode="full"))


def test_bad_inputs_give_clear_errors():
    x, a, b, u = tiny()
    cls = DiagClass(a, b, readout=u)
    with pytest.raises(ValueError, match=r"at least one sample \(N >= 1\), got shape \(0, 3\)"):
        rademacher(cls, torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"inputs have 4 features \(shape \(5, 4\)\); the class expects in_features = 3"):
        cls.sup(torch.ones(2, 5), torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"radius must be a finite number >= 0, got -1.0"):
        DiagClass(a, b, radius=-1.0)
    with pytest.raises(ValueError, match=r"radius_b must be a finite number >= 0, got -0.5"):
        FullClass(2, 3, 2, radius_b=-0.5)
    with pytest.raises(ValueError, match=r"lora_B has shape \(2, 3\); expected dim 1 = 2"):
        DiagClass(a, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"readout has shape \(3,\); expected \(2,\)"):
        SquareClass(a, b, readout=torch.zeros(3))
    with pytest.raises(ValueError, match=r"norm must be one of \('l2', 'linf'\), got 'frobenius'"):
        DiagClass(a, b, norm="frobenius")
    with pytest.raises(ValueError, match=r"sigma has shape \(4, 6\); expected \(S, 5\)"):
        cls.sup(torch.ones(4, 6), x)
    with pytest.raises(ValueError, match=r"sigma has shape \(4, 5\); expected \(S, 5, 2\)"):
        DiagClass(a, b).sup(torch.ones(4, 5), x)
    with pytest.raises(ValueError, match="n_draws must be a positive int, got 0"):
        rademacher(cls, x, n_draws=0)
    with pytest.raises(ValueError, match="restarts must be a positive int, got 0"):
        monte_carlo_rademacher(cls, x, restarts=0)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 20\], got 0"):
        all_sigmas(0)
    with pytest.raises(ValueError, match="rank must be a positive int, got 0"):
        FullClass(0, 3, 2)
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        cls.sup(torch.ones(1, 5), x.tolist())
    layer = ZLinear(3, 2, rank=2)
    with pytest.raises(ValueError, match=r"modulations have shape \(4, 3\); expected \(C, \*\(2,\)\)"):
        RealisedClass(layer, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"classes must be a non-empty subset of .*got \('diag',\)"):
        VerifyConfig(classes=("diag",))
    with pytest.raises(ValueError, match=r"n_values: expected a non-empty list of integers >= 1, got \(0, 10\)"):
        VerifyConfig(n_values=(0, 10))


def test_load_tensor_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"acts": torch.randn(2, 5, 8)}, str(tmp_path / "one.safetensors"))
    assert load_tensor_file(tmp_path / "one.safetensors").shape == (10, 8)
    save_file({"a": torch.randn(3, 4), "b": torch.randn(5)}, str(tmp_path / "two.safetensors"))
    assert load_tensor_file(tmp_path / "two.safetensors", key="a").shape == (3, 4)
    with pytest.raises(ValueError, match=r"holds 2 tensors \['a', 'b'\]; choose one with key="):
        load_tensor_file(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"tensor 'b' .* must have shape \(N, d\)"):
        load_tensor_file(tmp_path / "two.safetensors", key="b")
    with pytest.raises(FileNotFoundError, match="inputs file not found"):
        load_tensor_file(tmp_path / "missing.safetensors")
