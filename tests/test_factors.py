"""model.freeze_factors_from: the shared A/B taken from a trained PEFT LoRA and frozen (the paper's ablation)."""

from __future__ import annotations

import pytest
import torch

from zhyper.testing import small_config, tiny_llama


def _trained_lora(folder, **overrides):
    """A PEFT LoRA on the tiny Llama with random (non-zero) factors, saved as an adapter folder."""
    from zhyper.baselines import LoRABaseline

    lora = LoRABaseline.from_base(tiny_llama(seed=0), small_config(**overrides))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in lora.base.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    lora.save_pretrained(folder)
    return lora


def _zhyper(**overrides):
    from zhyper.model import ZhyperModel

    return ZhyperModel.from_base(tiny_llama(seed=0), small_config(**overrides)).eval()


def test_frozen_factors_make_the_centre_context_the_trained_lora(tmp_path):
    """With zero heads z = 1 for every description: the model is exactly the LoRA whose factors it took."""
    from zhyper.factors import load_frozen_factors

    lora = _trained_lora(tmp_path / "lora").eval()
    model = _zhyper()
    ids = torch.randint(0, 97, (2, 9))
    emb = torch.randn(2, model.context_dim)
    with torch.no_grad():
        before = model(input_ids=ids, context_embeddings=emb).logits
        assert load_frozen_factors(model, str(tmp_path / "lora")) == len(model.layout)
        after = model(input_ids=ids, context_embeddings=emb).logits
        expected = lora.base(input_ids=ids).logits
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert (before - expected).abs().max() > 1e-3  # the twin: the model's own (B = 0) factors are not the LoRA's
    frozen = [n for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B"))]
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    assert all(p.requires_grad for p in model.hypernet.parameters())  # only the hypernetwork trains


@pytest.mark.parametrize("overrides, message", [
    (dict(rank=2), "has r=4, the model r=2"),
    (dict(alpha=8.0), "has lora_alpha=16"),
    (dict(target_modules=["q_proj", "k_proj"]), r"no factors for \['k_proj'\]"),
    (dict(mode="full"), "mode 'full' generates A and B per context"),
])
def test_an_adapter_that_does_not_fit_is_refused_naming_the_key(tmp_path, overrides, message):
    from zhyper.factors import check_factor_source

    _trained_lora(tmp_path / "lora")
    with pytest.raises(ValueError, match=f"model.freeze_factors_from: .*{message}"):
        check_factor_source(str(tmp_path / "lora"), small_config(**overrides))


def test_a_fitting_adapter_passes_the_check(tmp_path):
    """The twin of the refusals: the same settings as the adapter are accepted, and its record comes back."""
    from zhyper.factors import check_factor_source

    _trained_lora(tmp_path / "lora")
    assert check_factor_source(str(tmp_path / "lora"), small_config())["r"] == 4


def test_run_config_refuses_a_folder_that_is_no_adapter(tmp_path):
    from zhyper.training.config import build_config

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model.freeze_factors_from: .* has no adapter_config.json"):
        build_config({}, [f"model.freeze_factors_from={tmp_path / 'empty'}"])
    with pytest.raises(ValueError, match="model.freeze_factors_from: .* is not a folder"):
        build_config({}, [f"model.freeze_factors_from={tmp_path / 'missing'}"])
    with pytest.raises(ValueError, match="method 'lora' has none"):
        build_config({}, ["method=lora", "train.contrast_weight=0", f"model.freeze_factors_from={tmp_path}"])


def test_position_embeddings_switch_is_validated_with_its_key():
    from zhyper.training.config import build_config

    with pytest.raises(ValueError, match="model.position_embeddings"):
        build_config({}, ["model.position_embeddings=maybe"])
    with pytest.raises(ValueError, match="model.position_embeddings: false .* needs mode diag or square"):
        build_config({}, ["model.mode=full", "model.position_embeddings=false"])
    assert build_config({}, ["model.position_embeddings=false"]).model.position_embeddings is False


def test_new_fields_at_their_defaults_keep_the_checkpoint_json():
    """A default model's zhyper_config.json is what earlier versions wrote; a switched one records the switch."""
    assert "position_embeddings" not in small_config().to_dict()
    assert small_config(position_embeddings=False).to_dict()["position_embeddings"] is False
