"""zhyper.io: atomic files and folders that keep what zhyper did not write, and the inter-process lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch

from zhyper.io import atomic_folder, atomic_write, file_lock, replaced_folder, same_folder, try_lock


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "latest"
    atomic_write(target, "step2")
    atomic_write(target, b"step4")
    assert target.read_text() == "step4"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    atomic_write(target, "old")
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_folder_keeps_files_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    (out / "model.safetensors").write_text("old weights")
    with atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_text("new weights")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.json").write_text("{}")
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "model.safetensors").read_text() == "new weights" and (out / "sub" / "x.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_atomic_folder_error_changes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("1")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_folder(out) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("half-way")
    assert (out / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_folder_refuses_a_file_in_its_place(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        with atomic_folder(tmp_path / "out"):
            pass
    assert (tmp_path / "out").read_text() == "a file"


def test_same_folder_sees_through_links_and_nesting(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert same_folder(tmp_path / "a", tmp_path / "link")
    assert same_folder(tmp_path / "a", tmp_path / "link" / "b")  # inside it
    assert not same_folder(tmp_path / "a" / "b", tmp_path / "a")


def test_file_lock_times_out_naming_the_lock_while_another_process_holds_it(tmp_path):
    lock = tmp_path / "x.lock"
    code = ("import sys, time; from zhyper.io import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=r"x\.lock"):
            with file_lock(lock, timeout=0.2, what="the test resource"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(lock, timeout=5):  # released when its holder died
        pass


def test_replaced_folder_takes_the_place_of_the_old_one_whole(tmp_path):
    target = tmp_path / "conv"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with replaced_folder(target) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]  # unlike atomic_folder: whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv"]  # no temporary or old folder left


def test_replaced_folder_error_changes_nothing(tmp_path):
    target = tmp_path / "conv"
    target.mkdir()
    (target / "keep.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with replaced_folder(target) as tmp:
            (tmp / "half.bin").write_text("x")
            raise RuntimeError("conversion failed")
    assert sorted(p.name for p in target.iterdir()) == ["keep.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv"]


def test_try_lock_gives_none_while_another_process_holds_it(tmp_path):
    lock_file = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
        "print('held', flush=True); time.sleep(30)"), str(lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_lock(lock_file) is None
    finally:
        holder.kill()
        holder.wait()
    lock = try_lock(lock_file)  # the twin: free again, taken at once
    assert lock is not None and lock.is_locked
    lock.release()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_permissions_a_plain_open_gives(tmp_path, umask):
    """Weights (safetensors writes them private) get the mode of the JSON beside them: 0o666 less the umask."""
    from safetensors.torch import save_file

    from tests.conftest import tiny_llama
    from tests.model_helpers import small_config
    from zhyper import ZhyperModel
    old = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "out") as tmp:
            save_file({"t": torch.zeros(2)}, str(tmp / "w.safetensors"))
            (tmp / "c.json").write_text("{}")
        atomic_write(tmp_path / "out" / "a.txt", "x")
        ZhyperModel.from_base(tiny_llama(), small_config()).save_pretrained(tmp_path / "ckpt")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    modes = {p.relative_to(tmp_path): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {p: expected for p in modes}, modes
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask  # twin: folders get the x bits
