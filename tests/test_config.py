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


class _Layout:
    """The two facts HyperNetConfig.from_layout reads from an AdapterLayout."""

    n_layers, module_types = 3, ("q_proj", "v_proj")

    def features_of(self, module_type):
        return {"q_proj": (12, 12), "v_proj": (12, 4)}[module_type]


def test_hypernet_config_takes_every_setting_from_the_model_config():
    from zhyper.hyper.spec import SETTING_FIELDS

    cfg = ZhyperConfig(mode="square", rank=4, latent_dim=32, head_in=24, n_blocks=1, mlp_ratio=2, dropout=0.2,
                       hyper_dropout=0.1, z_init="identity", contrast=True, position_embeddings=False)
    hcfg = cfg.hypernet_config(_Layout(), context_dim=6)
    got = {name: getattr(hcfg, name) for name in SETTING_FIELDS}
    assert got == dict(mode="square", rank=4, latent_dim=32, head_in=24, n_blocks=1, mlp_ratio=2, dropout=0.1,
                       z_init="identity", contrast=True, position_embeddings=False)
    assert (hcfg.n_layers, hcfg.module_types, hcfg.features["v_proj"]) == (3, ("q_proj", "v_proj"), (12, 4))


def test_hypernet_config_twin_a_different_setting_shows():
    """The twin: the mapping is not constant (LoRA's dropout is not the hypernetwork's; contrast only where it applies)."""
    plain = ZhyperConfig().hypernet_config(_Layout(), context_dim=6)
    other = ZhyperConfig(dropout=0.3, mode="full").hypernet_config(_Layout(), context_dim=6)
    assert plain.dropout == other.dropout == 0.05
    assert (plain.contrast, other.contrast) == (True, False) and plain != other


def test_hypernet_config_has_no_defaults_of_its_own():
    """One home for the defaults: a HyperNetConfig without its settings names what is missing."""
    from zhyper.hyper.spec import HyperNetConfig

    with pytest.raises(TypeError, match="missing 10 required positional arguments: 'mode', 'rank'"):
        HyperNetConfig(context_dim=6, n_layers=3, module_types=("q_proj",), features={"q_proj": (12, 12)})


# zhyper_config.json as the code before the configs were unified wrote it (every ZhyperConfig field, flat)
OLD_CHECKPOINT_CONFIG = {
    "mode": "square", "rank": 4, "alpha": 8.0, "rslora": False, "dropout": 0.0, "target_modules": ["q_proj"],
    "encoder": "all-MiniLM-L6-v2", "encoder_pooling": None, "context_dim": None, "z_init": "identity",
    "contrast": True, "latent_dim": 64, "head_in": 128, "n_blocks": 1, "mlp_ratio": 2, "hyper_dropout": 0.0,
}


def test_old_checkpoint_config_loads_and_writes_the_same_json():
    cfg = ZhyperConfig.from_dict(OLD_CHECKPOINT_CONFIG)
    assert cfg.to_dict() == OLD_CHECKPOINT_CONFIG
    assert cfg.hypernet_config(_Layout(), context_dim=384).latent_dim == 64


def test_old_checkpoint_config_twin_a_changed_file_differs():
    changed = ZhyperConfig.from_dict({**OLD_CHECKPOINT_CONFIG, "latent_dim": 32})
    assert changed.to_dict() != OLD_CHECKPOINT_CONFIG
