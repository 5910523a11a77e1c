"""ZhyperConfig validation and round trip."""

from __future__ import annotations

import pytest

from zhyper import ZhyperConfig


def test_defaults_follow_the_paper():
    cfg = ZhyperConfig()
    assert (cfg.mode, cfg.rank, cfg.alpha, cfg.target_modules, cfg.latent_dim, cfg.head_in) == \
        ("diag", 8, 16.0, ["q_proj", "v_proj"], 128, 512)
    assert cfg.z_init == "identity" and cfg.resolved_context_dim() == 384


def test_round_trip_and_unknown_keys():
    cfg = ZhyperConfig(mode="square", rank=4, target_modules="all-linear")
    assert ZhyperConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown ZhyperConfig field\(s\) \['rnak'\]; known fields: \['mode'"):
        ZhyperConfig.from_dict({"rnak": 4})


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="lowrank"), ValueError, "mode: expected one of"),
    (dict(rank=0), ValueError, "rank: expected an int >= 1, got 0"),
    (dict(rank=2.0), ValueError, "rank: expected an int >= 1, got 2.0"),
    (dict(alpha=-1), ValueError, "alpha: expected a positive finite number"),
    (dict(rslora="yes"), TypeError, "rslora: expected a bool"),
    (dict(dropout=1.5), ValueError, r"dropout: expected a probability in \[0, 1\)"),
    (dict(target_modules=[]), ValueError, "target_modules: expected a non-empty list"),
    (dict(target_modules=3), TypeError, "target_modules: expected a list of names or 'all-linear'"),
    (dict(z_init="zeros"), ValueError, "z_init: expected one of"),
    (dict(latent_dim=130), ValueError, "latent_dim: expected a multiple of 4"),
    (dict(encoder_pooling="first"), ValueError, "encoder_pooling: expected None or one of"),
    (dict(context_dim=0), ValueError, "context_dim: expected None or a positive int"),
    (dict(encoder=""), ValueError, "encoder: expected a sentence-transformers name or path"),
    (dict(contrast=1), TypeError, "contrast: expected a bool, got int"),
])
def test_validation_names_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        ZhyperConfig(**kwargs)


@pytest.mark.parametrize("kwargs, uses", [
    ({}, True), (dict(mode="square"), True), (dict(contrast=False), False),
    (dict(mode="full"), False), (dict(z_init="paper"), False),
])
def test_contrast_applies_only_where_shared_factors_carry_the_common_part(kwargs, uses):
    assert ZhyperConfig(**kwargs).uses_contrast() is uses
