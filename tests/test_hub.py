"""Checkpoints by hub id (zhyper/hub.py), offline, from a hub cache laid out as huggingface_hub itself lays it out.

No network and no stand-ins: ``tests/hub_cache.py`` writes the cache with huggingface_hub's own helpers
(blobs, snapshot symlinks, refs, the commit's tree listing), ``scan_cache_dir`` confirms it is a real
cache, and ``ZhyperModel.from_pretrained("org/name")`` goes through the real ``snapshot_download``
with HF_HUB_OFFLINE=1 (tests/conftest.py). ``push_to_hub`` is tested where no network is needed: the
offline refusal, and that what it would upload is exactly what ``save_pretrained`` writes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_llama
from tests.hub_cache import blob_of, cache_repo, commit_of
from tests.model_helpers import perturb, small_config
from zhyper import ZhyperModel
from zhyper.pretrained import CONFIG_FILE, WEIGHTS_FILE

REPO = "zhyper-test/tiny-diag"


def trained(seed: int):
    return perturb(ZhyperModel.from_base(tiny_llama(), small_config()), seed=seed).eval()


def same(a, b) -> bool:
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def hub(tmp_path):
    """Two checkpoints of REPO in a hub cache: model a at ``main``, model b at the tag ``v2``."""
    a, b = trained(1), trained(2)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    cache = tmp_path / "hub"
    main = cache_repo(cache, REPO, tmp_path / "a")
    v2 = cache_repo(cache, REPO, tmp_path / "b", revision="v2")
    return {"a": a, "b": b, "cache": cache, "main": main, "v2": v2, "tmp": tmp_path}


def load(source, hub, **kwargs):
    return ZhyperModel.from_pretrained(source, base_model=tiny_llama(), cache_dir=hub["cache"], **kwargs)


def test_the_test_cache_is_huggingface_hubs_own_layout(hub):
    from huggingface_hub import scan_cache_dir, snapshot_download

    info = scan_cache_dir(hub["cache"])
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    refs = {ref: rev.commit_hash for rev in repo.revisions for ref in rev.refs}
    assert refs == {"main": hub["main"].name, "v2": hub["v2"].name}
    files = {f.file_name for rev in repo.revisions for f in rev.files}
    assert {CONFIG_FILE, WEIGHTS_FILE, "README.md"} <= files
    assert (hub["main"] / WEIGHTS_FILE).is_symlink()
    assert snapshot_download(REPO, cache_dir=hub["cache"]) == str(hub["main"])  # offline: the cache answers


def test_a_hub_id_loads_from_the_cache_and_the_revision_picks_the_commit(hub):
    model = load(REPO, hub)
    assert same(model, hub["a"])
    assert model.checkpoint_folder == hub["main"].resolve()
    assert model.checkpoint_hub == {"repo_id": REPO, "revision": "main", "commit": hub["main"].name,
                                    "storage": hub["main"].parents[1].resolve()}
    tagged = load(REPO, hub, revision="v2")  # twin: another revision, the other weights
    assert same(tagged, hub["b"]) and not same(tagged, hub["a"])
    assert tagged.checkpoint_hub["commit"] == hub["v2"].name
    assert same(load(REPO, hub, revision=hub["v2"].name), hub["b"])  # a commit id works too


def test_an_id_neither_cached_nor_reachable_is_named_at_once(hub):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"hub checkpoint 'zhyper-test/absent' \(revision 'main'\): not a local "
                                                r"folder, not in the hub cache .*hub.*, and the hub cannot be reached "
                                                r"\(HF_HUB_OFFLINE is set\); download it once"):
        load("zhyper-test/absent", hub)
    with pytest.raises(FileNotFoundError, match=rf"hub checkpoint '{REPO}' \(revision 'v9'\): not a local folder"):
        load(REPO, hub, revision="v9")
    assert time.monotonic() - start < 10  # offline: no connection attempt, no wait


@pytest.mark.parametrize("source, error, message", [
    ("org/na me", ValueError, r"'org/na me' is not a valid hub id 'org/name': Repo id must use alphanumeric chars"),
    ("org/name.", ValueError, r"'org/name\.' is not a valid hub id"),
    ("runs/x/final", FileNotFoundError, r"runs/x/final not found: no such checkpoint folder \(and not a hub id "
                                        r"'org/name'\)"),
    ("./ckpt", FileNotFoundError, r"\./ckpt not found: no such checkpoint folder"),
    ("ckpt", FileNotFoundError, r"ckpt not found: no such checkpoint folder; a hub id has the form 'org/name'"),
    (42, TypeError, r"expected a checkpoint folder or a hub id 'org/name', got 42"),
])
def test_a_malformed_id_is_named_with_the_expected_form(hub, monkeypatch, source, error, message):
    monkeypatch.chdir(hub["tmp"])
    with pytest.raises(error, match=message):
        load(source, hub)


@pytest.mark.parametrize("revision", ["", "  ", 3])
def test_a_bad_revision_is_named(hub, revision):
    with pytest.raises(ValueError, match=r"revision: expected a branch, tag or commit .* got"):
        load(REPO, hub, revision=revision)


def test_a_local_folder_of_that_name_keeps_priority(hub, monkeypatch, caplog):
    monkeypatch.chdir(hub["tmp"])
    shutil.copytree(hub["tmp"] / "b", hub["tmp"] / REPO)
    local = load(REPO, hub, revision="v7")
    assert same(local, hub["b"]) and getattr(local, "checkpoint_hub", None) is None
    assert "is a local folder: it is loaded, and revision='v7' (for hub ids) is ignored" in caplog.text
    shutil.rmtree(hub["tmp"] / REPO)  # twin: without the folder, the id is the hub's
    assert same(load(REPO, hub), hub["a"])


def test_a_hub_snapshot_gets_the_checks_of_a_local_folder(hub):
    blob = blob_of(hub["main"], WEIGHTS_FILE)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last tensor's values: same tensors, same shapes
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"hub checkpoint '{REPO}' \(revision 'main'\), commit {hub['main'].name}: "
                                         rf".*{WEIGHTS_FILE}: its SHA-256 .* differs"):
        load(REPO, hub)
    assert not same(load(REPO, hub, verify=False), hub["a"])  # twin: opted out, it loads (the changed weights)
    config = blob_of(hub["main"], CONFIG_FILE)
    config.write_text(config.read_text()[:100])
    with pytest.raises(ValueError, match=rf"hub checkpoint '{REPO}' .*{CONFIG_FILE}: malformed JSON at line"):
        load(REPO, hub)


def test_a_partial_snapshot_is_named(hub):
    cache_repo(hub["cache"], "zhyper-test/partial", hub["tmp"] / "a", files=[CONFIG_FILE, "README.md"])
    with pytest.raises(FileNotFoundError, match=r"hub checkpoint 'zhyper-test/partial' \(revision 'main'\): its "
                                                r"snapshot in the hub cache .* is incomplete \(1 file\(s\) are missing "
                                                r"\(model.safetensors\)\)"):
        load("zhyper-test/partial", hub)
    cache_repo(hub["cache"], "zhyper-test/partial", hub["tmp"] / "a")  # twin: completed, it loads
    assert same(load("zhyper-test/partial", hub), hub["a"])


def test_nothing_is_written_into_the_hub_cache(hub):
    model = load(REPO, hub)
    storage = hub["main"].parents[1]
    before = {p: p.read_bytes() for p in storage.rglob("*") if p.is_file()}
    for out in (hub["main"], storage / "exports"):
        with pytest.raises(ValueError, match=rf"save_pretrained: output folder {out} is in the hub cache of {REPO}"):
            model.save_pretrained(out)
    with pytest.raises(ValueError, match=rf"output folder .* is in the hub cache of {REPO}"):
        model.export_peft("Answer like a pirate.", storage / "adapter")
    assert {p: p.read_bytes() for p in storage.rglob("*") if p.is_file()} == before
    model.save_pretrained(hub["tmp"] / "elsewhere")  # twin: outside the cache
    assert same(ZhyperModel.from_pretrained(hub["tmp"] / "elsewhere", base_model=tiny_llama()), hub["a"])


# ---------------------------------------------------------------- push_to_hub
def test_push_offline_fails_at_once_and_writes_nothing(hub, monkeypatch):
    spool = hub["tmp"] / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where a push would stage its folder
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"push_to_hub\('zhyper-test/up'\): the hub is offline here "
                                              r"\(HF_HUB_OFFLINE=1\), so nothing was uploaded"):
        hub["a"].push_to_hub("zhyper-test/up")
    assert time.monotonic() - start < 2 and list(spool.iterdir()) == []
    with pytest.raises(ValueError, match=r"push_to_hub: 'a/b/c' is not a hub id: expected 'org/name'"):
        hub["a"].push_to_hub("a/b/c")
    with pytest.raises(ValueError, match=r"license: expected a license id of the Hugging Face hub .* got 'MIT "
                                         r"License'"):
        hub["a"].push_to_hub("zhyper-test/up", license="MIT License")


def _upload_listing(folder: Path) -> list[str]:
    """The files ``HfApi.upload_folder`` sends from ``folder`` with zhyper's patterns (its own filter and defaults)."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    from zhyper.hub import checkpoint_files

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(filter_repo_objects(files, allow_patterns=checkpoint_files(),
                                      ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)))


def _files(folder: Path) -> dict:
    """A checkpoint folder's content, file by file: the JSON record, the tensors and the header metadata, the
    card's text; SHA-256 digests masked (safetensors writes its header's metadata in no fixed order, so two saves of
    one model differ in those bytes and in the digests of them)."""
    import json
    import re

    from safetensors import safe_open

    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name == WEIGHTS_FILE:
            with safe_open(str(path), framework="pt") as f:
                out[path.name] = (f.metadata(), {k: f.get_tensor(k).tolist() for k in f.keys()})
        else:
            text = re.sub(r"[0-9a-f]{64}", "<sha256>", path.read_text())
            out[path.name] = json.loads(text) if path.suffix == ".json" else text
    return out


def test_what_push_uploads_is_what_save_pretrained_writes(hub):
    from zhyper.hub import stage
    from zhyper.pretrained import save_checkpoint

    staged = stage(hub["a"], hub["tmp"] / "staged", "zhyper-test/up", license="mit")
    saved = save_checkpoint(hub["a"], hub["tmp"] / "saved", license="mit", repo_id="zhyper-test/up")
    assert _files(staged) == _files(saved)
    assert _upload_listing(staged) == sorted(_files(staged)) == ["README.md", WEIGHTS_FILE, CONFIG_FILE]
    assert 'ZhyperModel.from_pretrained("zhyper-test/up")' in (staged / "README.md").read_text()
    assert same(ZhyperModel.from_pretrained(staged, base_model=tiny_llama()), hub["a"])
    plain = hub["a"].save_pretrained(hub["tmp"] / "plain", license="mit")  # twin: no hub id, only the card differs
    assert {k: v for k, v in _files(plain).items() if k != "README.md"} == {
        k: v for k, v in _files(staged).items() if k != "README.md"}
    assert _files(plain)["README.md"] != _files(staged)["README.md"]
    (saved / "notes.txt").write_text("mine")  # a folder push sends only the checkpoint's files
    assert _upload_listing(saved) == ["README.md", WEIGHTS_FILE, CONFIG_FILE]


def test_push_folder_refuses_a_changed_checkpoint_before_any_upload(hub):
    from zhyper.hub import push_folder

    folder = hub["tmp"] / "a"
    with pytest.raises(ConnectionError, match=r"the hub is offline here"):  # twin: intact, it would go on to upload
        push_folder(folder, "zhyper-test/up")
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: its SHA-256 .* differs"):
        push_folder(folder, "zhyper-test/up")
    with pytest.raises(FileNotFoundError, match=r"is not a zhyper checkpoint folder"):
        push_folder(hub["tmp"], "zhyper-test/up")


def test_zhyper_chat_loads_a_hub_id_from_the_default_cache(tmp_path, monkeypatch, capsys):
    """End to end through the CLI: the default hub cache (no cache_dir=), the base recorded in the checkpoint."""
    from huggingface_hub import constants

    from zhyper.cli import main
    from zhyper.testing import make_checkpoint

    make_checkpoint(tmp_path / "made")
    cache = tmp_path / "hub"
    cache_repo(cache, "zhyper-test/chat", tmp_path / "made" / "ckpt", commit=commit_of("chat"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE=... sets at import
    monkeypatch.chdir(tmp_path)
    args = ["chat", "--checkpoint", "zhyper-test/chat", "--description", "Answer in upper case.",
            "--max-new-tokens", "3", "Hello"]
    assert main(args) == 0
    capsys.readouterr()
    args[2] = "zhyper-test/other"  # twin: an id that is not cached
    assert main(args) == 2
    assert "hub checkpoint 'zhyper-test/other' (revision 'main'): not a local folder" in capsys.readouterr().err
