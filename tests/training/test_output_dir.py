"""Which output folders a training run writes into (zhyper.training.output; no training: fast)."""

from __future__ import annotations

import pytest

from zhyper.training.output import MARKER, check_output_dir, mark_output_dir


def test_new_empty_and_own_folders_are_accepted(tmp_path):
    check_output_dir(tmp_path / "new")  # does not exist yet
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    own = tmp_path / "own"
    own.mkdir()
    mark_output_dir(own)
    (own / "eval.md").write_text("zhyper's report")
    (own / "final").mkdir()
    (own / "final" / "model.safetensors").write_bytes(b"x")
    check_output_dir(own)  # its own earlier run
    legacy = tmp_path / "legacy"  # a run from before the marker: its lock file says it is zhyper's
    legacy.mkdir()
    (legacy / ".zhyper-run.lock").write_text("")
    (legacy / "eval.md").write_text("report")
    check_output_dir(legacy)


def test_a_folder_of_the_users_files_is_refused_naming_them(tmp_path):
    (tmp_path / "eval.md").write_text("my notes")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(SystemExit) as err:
        check_output_dir(tmp_path)
    text = str(err.value)
    assert f"output_dir {tmp_path} holds files a zhyper training run did not write: data.csv, eval.md" in text
    assert "choose a new (or empty) output_dir=..., or pass --overwrite" in text
    check_output_dir(tmp_path, overwrite=True)  # the explicit flag lets it through
    assert (tmp_path / "eval.md").read_text() == "my notes"  # checking never touches a file


def test_users_files_in_final_of_an_own_run_are_refused(tmp_path):
    mark_output_dir(tmp_path)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model.safetensors").write_bytes(b"x")
    check_output_dir(tmp_path)  # the twin: only zhyper's own files there
    (tmp_path / "final" / "my-adapter.bin").write_bytes(b"mine")
    with pytest.raises(SystemExit, match=r"its checkpoint folders hold files zhyper did not write there: "
                                         r"final/my-adapter\.bin"):
        check_output_dir(tmp_path)


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(SystemExit, match="exists and is not a folder"):
        check_output_dir(tmp_path / "run")


def test_marker_is_written_once(tmp_path):
    mark_output_dir(tmp_path)
    first = (tmp_path / MARKER).read_text()
    mark_output_dir(tmp_path)
    assert (tmp_path / MARKER).read_text() == first and '"written_by": "zhyper launch/train.py"' in first
