"""count_parameters: the reference Mistral-7B counts, and agreement with a really built model."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_llama
from tests.model_helpers import small_config
from zhyper import ZhyperConfig, ZhyperModel, count_parameters
from zhyper.bases import base_config
from zhyper.sizing.params import lora_parameters, parameter_table


def test_mistral_7b_matches_the_reference_counts():
    """Reference implementation, Mistral-7B-Instruct-v0.2, q/v, r=8, gte-large (1024-d), latent 128, head in 512."""
    cfg = ZhyperConfig(encoder="Alibaba-NLP/gte-large-en-v1.5")
    table = {row.method: row for row in parameter_table(cfg, base_config("mistral-7b"))}
    assert table["diag"].total == 4_207_632
    assert table["square"].total == 4_265_088
    assert table["full"].total == 55_424_000
    assert table["lora"].total == 32 * 8 * ((4096 + 4096) + (4096 + 1024)) == 3_407_872
    assert table["full"].shared == 0 and table["diag"].shared == table["lora"].total


def test_counts_change_with_the_config():
    """The count is computed, not looked up: rank and encoder size move it by the expected amounts."""
    base = base_config("mistral-7b")
    r8 = count_parameters(ZhyperConfig(context_dim=1024), base)
    r16 = count_parameters(ZhyperConfig(context_dim=1024, rank=16), base)
    assert r16.shared == 2 * r8.shared
    assert r16.hypernet - r8.hypernet == 2 * (512 + 1) * 8  # two diag heads, 8 more outputs each
    d384 = count_parameters(ZhyperConfig(context_dim=384), base)
    assert r8.total - d384.total == (1024 - 384) * 64  # context projection to latent/2 = 64


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
def test_count_equals_a_really_built_model(mode):
    cfg = small_config(mode=mode)
    model = ZhyperModel.from_base(tiny_llama(), cfg)
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_parameters(cfg, tiny_llama().config).total == built


def test_lora_count_equals_peft():
    from peft import LoraConfig, get_peft_model

    cfg = small_config(target_modules="all-linear")
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules="all-linear"))
    peft_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_parameters(cfg, tiny_llama().config).total == peft_count


def test_unknown_encoder_needs_context_dim():
    with pytest.raises(ValueError, match="context_dim: encoder 'my/encoder' is not a known one"):
        count_parameters(ZhyperConfig(encoder="my/encoder"), base_config("smollm2"))
    assert count_parameters(ZhyperConfig(encoder="my/encoder", context_dim=384), base_config("smollm2")).total > 0


def test_unknown_base_name():
    with pytest.raises(ValueError, match="base: expected one of"):
        base_config("llama-70b")
