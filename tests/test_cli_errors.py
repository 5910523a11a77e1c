"""What the CLI answers to bad input (issue 31): one line ``zhyper <command>: error: ...`` and exit status 2,
never a traceback, an empty answer or a NaN adapter with exit status 0. Each refusal has a twin that passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.serving.conftest import CONTEXT_LENGTH, make_checkpoint
from tests.test_cli import _user_error
from zhyper.cli import main

DESC = "Answer in all capital letters."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli_errors"), mode="square")


@pytest.fixture(scope="module")
def full_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli_errors_full"), mode="full")


def _usage_error(argv, capsys) -> str:
    """An option argparse refuses: SystemExit(2) and its ``error: argument ...`` line, nothing loaded."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------- a weight that overflows the model
@pytest.mark.parametrize("command", [["chat", "--max-new-tokens", "3", "hi"], ["generate", "--out", "OUT"],
                                     ["generate", "--format", "zhyper", "--out", "OUT"]])
def test_a_weight_of_1e30_is_an_error_not_an_empty_answer_or_adapter(ckpt, tmp_path, capsys, command):
    def argv(weight):
        return [command[0], "--checkpoint", str(ckpt), "--description", DESC, "--weight", weight,
                *[str(tmp_path / f"out{weight}") if a == "OUT" else a for a in command[1:]]]

    line = _user_error(argv("1e30"), capsys)
    assert "weight(s) [1e+30]" in line and repr(DESC) in line and "use a smaller weight" in line, line
    assert not (tmp_path / "out1e30").exists()
    assert main(argv("2")) == 0  # the twin: a strong but sane weight
    assert capsys.readouterr().out.strip()


def test_chat_max_new_tokens_is_bounded_by_the_context_length(ckpt, capsys):
    line = _user_error(["chat", "--checkpoint", str(ckpt), "--description", DESC, "--max-new-tokens", "1100",
                        "hi"], capsys)
    assert f"this model's maximum context length is {CONTEXT_LENGTH} tokens" in line, line
    assert "1100 in the answer" in line, line
    assert main(["chat", "--checkpoint", str(ckpt), "--description", DESC, "--max-new-tokens", "3", "hi"]) == 0


def test_chat_default_answer_length_is_capped_by_what_the_context_leaves(ckpt):
    from zhyper import ZhyperModel
    from zhyper.generation import format_prompts, max_new_tokens_for

    model = ZhyperModel.from_pretrained(ckpt)
    long = "word " * 980
    [text] = format_prompts(model.tokenizer, [long], ["none"])
    n = len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert CONTEXT_LENGTH - 128 < n < CONTEXT_LENGTH
    assert max_new_tokens_for(model, [long], None) == CONTEXT_LENGTH - n  # capped, as the server caps its default
    assert max_new_tokens_for(model, ["hi"], None) == 128  # the twin: a short prompt keeps the default
    with pytest.raises(ValueError, match=rf"needs {n + 128} \({n} in the longest prompt, 128 in the answer\)"):
        max_new_tokens_for(model, [long], 128)  # given explicitly: refused, not silently shortened


# ---------------------------------------------------------------- one line and exit 2
def test_serve_port_out_of_range_is_refused_before_loading(tmp_path, capsys):
    missing = str(tmp_path / "no-checkpoint")  # never read: the port is checked while parsing
    line = _usage_error(["serve", "--checkpoint", missing, "--port", "99999"], capsys)
    assert line.endswith("argument --port: expected an integer in [0, 65535], got '99999'"), line
    line = _user_error(["serve", "--checkpoint", missing, "--port", "65535"], capsys)  # twin: accepted, then
    assert "no-checkpoint" in line  # the checkpoint is what fails


def test_params_rank_beyond_the_hidden_size_is_one_line(capsys):
    line = _user_error(["params", "--rank", "99999999999999999999"], capsys)
    assert "--rank: expected an integer in [1, 4096] (the hidden size of mistral-7b), got 99999999999999999999" \
        in line
    assert "expected an integer in [1, 1048576]" in _usage_error(["params", "--head-in", "9" * 20], capsys)
    assert main(["params", "--rank", "4096"]) == 0  # twin: the largest meaningful rank


def test_non_utf8_argument_is_one_line(tmp_path):
    """The console script in a fresh process, given raw bytes that are not UTF-8 (as a shell can pass them)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-m", "zhyper", "chat", "--checkpoint", str(tmp_path), "--description",
                           b"caf\xe9", "hi"], capture_output=True, timeout=120, env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        "zhyper chat: error: argument 5 (b'caf\\xe9') is not valid UTF-8; expected UTF-8 text (a terminal or script "
        "in another encoding: convert it, e.g. with iconv, or use a UTF-8 locale)"]
    twin = subprocess.run([sys.executable, "-m", "zhyper", "chat", "--checkpoint", str(tmp_path), "--description",
                           "café".encode(), "hi"], capture_output=True, timeout=120, env=env)
    assert twin.returncode == 2 and b"is not a zhyper checkpoint folder" in twin.stderr  # got past the arguments


def _serve(folder, tmp_path) -> list[str]:
    """``zhyper serve`` on ``folder`` that fails fast at the model load (a missing --base) should the contexts
    check it is about pass: never a server left running by a test."""
    return ["serve", "--checkpoint", str(folder), "--port", "0", "--base", str(tmp_path / "no-base")]


def _copy(ckpt, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(ckpt, out)
    return out


def test_contexts_json_not_utf8_names_the_file(ckpt, tmp_path, capsys):
    copy = _copy(ckpt, tmp_path)
    (copy / "contexts.json").write_bytes(b'{"caf\xe9": ["Answer in French."]}')
    line = _user_error(_serve(copy, tmp_path), capsys)
    assert f"contexts file {copy / 'contexts.json'} is not UTF-8 text (byte 5: b'\\xe9')" in line, line
    from zhyper.serving.contexts import read_contexts_file

    (copy / "contexts.json").write_bytes('{"café": ["Answer in French."]}'.encode())
    assert read_contexts_file(copy) == {"café": ["Answer in French."]}  # the twin: the same in UTF-8


@pytest.mark.parametrize("name", ["contexts.json", "zhyper_config.json", "model.safetensors"])
def test_a_directory_where_a_file_is_expected_says_so(ckpt, tmp_path, capsys, name):
    copy = _copy(ckpt, tmp_path)
    (copy / name).unlink()
    (copy / name).mkdir()
    argv = (_serve(copy, tmp_path) if name == "contexts.json"
            else ["chat", "--checkpoint", str(copy), "--description", DESC, "hi"])
    line = _user_error(argv, capsys)
    assert f"{copy / name} is a directory; expected" in line and "not found" not in line, line


def test_a_file_given_as_checkpoint_folder_says_so(ckpt, capsys):
    line = _user_error(["chat", "--checkpoint", str(ckpt / "model.safetensors"), "--description", DESC, "hi"], capsys)
    assert f"{ckpt / 'model.safetensors'} is a file; expected a zhyper checkpoint folder" in line, line


def test_base_that_does_not_exist_is_named_without_circular_advice(ckpt, tmp_path, capsys):
    missing = tmp_path / "no-such-base"
    line = _user_error(["chat", "--checkpoint", str(ckpt), "--base", str(missing), "--description", DESC, "hi"],
                       capsys)
    assert f"base model {missing} (base_model= / --base) does not exist" in line, line
    assert "pass base_model=" not in line and "Repo id" not in line
    assert main(["chat", "--checkpoint", str(ckpt), "--base", str(ckpt.parent / "base"), "--description", DESC,
                 "--max-new-tokens", "2", "hi"]) == 0  # twin: the real base


def test_plan_missing_config_and_malformed_ds_config_exit_2(tmp_path, capsys):
    from tests.conftest import REPO

    configs = REPO / "launch" / "configs"
    line = _user_error(["plan", "--config", str(tmp_path / "none.yaml"), "--ds_config", str(configs / "zero2.json")],
                       capsys)
    assert f"run config {tmp_path / 'none.yaml'} does not exist" in line
    bad = tmp_path / "ds.json"
    for data, says in ((b"\xff\xfe{}", f"--ds_config {bad} is not UTF-8 text (byte 0"),
                       (b"{not json", f"--ds_config {bad}: malformed JSON at line 1")):
        bad.write_bytes(data)
        line = _user_error(["plan", "--config", str(configs / "cpu-tiny.yaml"), "--ds_config", str(bad),
                            "--device", "cpu"], capsys)
        assert says in line, line
    line = _user_error(["plan", "--config", str(tmp_path), "--ds_config", str(configs / "zero2.json")], capsys)
    assert f"run config {tmp_path} is a directory; expected a file" in line
    assert main(["plan", "--config", str(configs / "cpu-tiny.yaml"), "--ds_config", str(configs / "zero2.json"),
                 "--device", "cpu"]) == 0  # twin


# ---------------------------------------------------------------- full mode: one message, advice that works
def test_full_mode_weights_advice_is_the_librarys_and_not_circular(full_ckpt, capsys):
    from zhyper import compose

    expected = compose.full_mode_refusal(compose.entries([DESC], [0.5]))
    for combine in ("modulation", "text"):
        line = _user_error(["chat", "--checkpoint", str(full_ckpt), "--description", DESC, "--weight", "0.5",
                            "--combine", combine, "hi"], capsys)
        assert line.startswith(f"zhyper chat: error: {expected}"), line
        assert "combine='text'" not in line and "drop the weights" in line
    line = _user_error(["chat", "--checkpoint", str(full_ckpt), "--description", DESC, "--description", "Be brief.",
                        "hi"], capsys)
    assert "join them with combine='text'" in line
    assert main(["chat", "--checkpoint", str(full_ckpt), "--description", DESC, "--description", "Be brief.",
                 "--combine", "text", "--max-new-tokens", "2", "hi"]) == 0  # the advice works


# ---------------------------------------------------------------- named contexts
def test_a_context_name_with_plus_is_refused_when_loaded(ckpt, tmp_path, capsys):
    from zhyper.serving.contexts import read_contexts_file, save_contexts

    copy = _copy(ckpt, tmp_path)
    (copy / "contexts.json").write_text(json.dumps({"pirate+formal": ["Talk like a formal pirate."]}))
    with pytest.raises(ValueError, match=r"context name 'pirate\+formal' contains '\+'.*'zhyper:a\+b' combines"):
        read_contexts_file(copy)
    line = _user_error(_serve(copy, tmp_path), capsys)
    assert "'pirate+formal'" in line and "expected a name without '+', e.g. 'pirate_formal'" in line
    with pytest.raises(ValueError, match=r"'a\+b' contains '\+'"):
        save_contexts(copy, {"a+b": "x"})
    save_contexts(copy, {"pirate_formal": "Talk like a formal pirate."})  # the twin
    assert read_contexts_file(copy) == {"pirate_formal": ["Talk like a formal pirate."]}
