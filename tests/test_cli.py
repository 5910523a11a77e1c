"""The zhyper CLI: fast --help, the parameter table, generate / chat on a checkpoint, base-model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel
from zhyper.cli import main

HEAVY = ("torch", "transformers", "deepspeed", "sentence_transformers", "peft", "mlflow")


@pytest.mark.parametrize("argv", [["--help"], ["params", "--help"], ["generate", "--help"], ["chat", "--help"],
                                  ["base-model", "--help"]])
def test_help_imports_nothing_heavy(argv):
    code = ("import sys\nfrom zhyper.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, check=True)
    assert "usage: zhyper" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_params_table_for_mistral(capsys):
    assert main(["params", "--base", "mistral-7b"]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[2:]}
    assert rows == {"diag": "4,207,632", "square": "4,265,088", "full": "55,424,000", "lora": "3,407,872"}
    assert "Mistral-7B-Instruct-v0.2" in text and "d_c=1024" in text


def test_params_table_for_smollm2(capsys):
    assert main(["params", "--base", "smollm2", "--rank", "4"]) == 0
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["lora"] == f"{30 * 4 * ((576 + 576) + (576 + 192)):,}"


@pytest.fixture
def checkpoint(tmp_path):
    base = tiny_chat_base(tmp_path / "base")
    model = perturb(ZhyperModel.from_base(str(base), small_config(mode="square")), scale=2.0).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_generate_peft_and_zhyper_formats(checkpoint, tmp_path, capsys):
    model, ckpt = checkpoint
    desc = "Answer like a German."
    assert main(["generate", "--checkpoint", str(ckpt), "--description", desc, "--out", str(tmp_path / "a")]) == 0
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert main(["generate", "--checkpoint", str(ckpt), "--description", desc, "--out", str(tmp_path / "z"),
                 "--format", "zhyper"]) == 0
    from safetensors.torch import load_file

    z = load_file(str(tmp_path / "z" / "modulation.safetensors"))["modulation"]
    torch.testing.assert_close(z, model.modulation_for([desc])[0], rtol=1e-5, atol=1e-6)
    assert (z - model.modulation_for(["Reply in upper case."])[0]).abs().max() > 1e-3, \
        "another description must give another modulation"


def test_generate_keeps_the_users_files_in_out(checkpoint, tmp_path):
    _, ckpt = checkpoint
    for fmt in ("peft", "zhyper"):
        out = tmp_path / f"out-{fmt}"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "old").mkdir()
        (out / "old" / "adapter.bin").write_bytes(b"\x00\x01")
        for _ in range(2):
            assert main(["generate", "--checkpoint", str(ckpt), "--description", "Be brief.", "--out", str(out),
                         "--format", fmt]) == 0
        assert (out / "notes.txt").read_text() == "mine" and (out / "old" / "adapter.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "out-peft" / "adapter_config.json").is_file()
    assert (tmp_path / "out-zhyper" / "modulation.safetensors").is_file()


def _user_error(argv, capsys) -> str:
    """Run ``zhyper <argv>``: exit status 2 and one ``zhyper <cmd>: error: ...`` line, no traceback; returns it."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"zhyper {argv[0]}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("fmt", ["peft", "zhyper"])
def test_generate_refuses_to_write_into_the_folders_it_reads(checkpoint, tmp_path, fmt, capsys):
    _, ckpt = checkpoint
    base = tmp_path / "base"
    before = {p: p.read_bytes() for folder in (ckpt, base) for p in folder.rglob("*") if p.is_file()}
    for out in (ckpt, ckpt / "adapter"):
        line = _user_error(["generate", "--checkpoint", str(ckpt), "--description", "x", "--out", str(out),
                            "--format", fmt], capsys)
        assert f"--out {out} is the --checkpoint folder {ckpt} (or inside it): zhyper generate never writes into " \
               "a folder it reads from" in line
    line = _user_error(["generate", "--checkpoint", str(ckpt), "--base", str(base), "--description", "x",
                        "--out", str(base / "a"), "--format", fmt], capsys)
    assert f"--out {base / 'a'} is the --base folder {base} (or inside it)" in line
    # the base recorded in the checkpoint (not given with --base) is protected by the model itself
    line = _user_error(["generate", "--checkpoint", str(ckpt), "--description", "x", "--out", str(base),
                        "--format", fmt], capsys)
    assert f"output folder {base} is the base model's folder {base.resolve()}" in line
    assert {p: p.read_bytes() for folder in (ckpt, base) for p in folder.rglob("*") if p.is_file()} == before
    assert not (ckpt / "adapter").exists() and not (base / "a").exists()


def test_chat_answers_like_the_model(checkpoint, capsys):
    model, ckpt = checkpoint
    desc, prompt = "Answer like a German.", "What is the capital of France?"
    capsys.readouterr()
    assert main(["chat", "--checkpoint", str(ckpt), "--description", desc, "--max-new-tokens", "5", prompt]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == model.generate([prompt], [desc], max_new_tokens=5)[0].strip()


@pytest.mark.parametrize("command", [["chat", "hi"], ["generate", "--out", "OUT"]])
def test_missing_checkpoint_fails_clearly(tmp_path, capsys, command):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    argv = [command[0], "--checkpoint", str(ckpt), "--description", "x",
            *[str(tmp_path / "out") if a == "OUT" else a for a in command[1:]]]
    line = _user_error(argv, capsys)
    assert "is not a zhyper checkpoint folder" in line and str(ckpt) in line
    assert "-v shows the traceback" in line


def test_bad_checkpoint_traceback_only_with_verbose(tmp_path, capsys):
    """A malformed checkpoint: one line and exit 2; with -v (before or after the command) the traceback too."""
    (tmp_path / "zhyper_config.json").write_text("{not json")
    argv = ["chat", "--checkpoint", str(tmp_path), "--description", "x", "hi"]
    assert "malformed JSON at line 1" in _user_error(argv, capsys)
    for verbose in (["-v", *argv], [argv[0], "-v", *argv[1:]]):
        assert main(verbose) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "zhyper chat: error: " in err and "malformed JSON" in err


def test_user_error_from_the_console_script_is_one_line(tmp_path):
    """The real entry point (a fresh process): exit status 2, stderr one line, nothing on stdout."""
    proc = subprocess.run([sys.executable, "-m", "zhyper", "chat", "--checkpoint", str(tmp_path / "nope"),
                           "--description", "x", "hi"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"zhyper chat: error: {tmp_path / 'nope'} not found: no such checkpoint folder (and not a hub id 'org/name')"
        "  (-v shows the traceback)"]


@pytest.mark.parametrize("fmt", ["peft", "zhyper"])
def test_unwritable_out_names_the_users_path(checkpoint, tmp_path, capsys, fmt):
    """--out under a regular file: the error names the --out the user gave, not zhyper's hidden temporary folder."""
    _, ckpt = checkpoint
    (tmp_path / "a-file").write_text("mine")
    out = tmp_path / "a-file" / "adapter"
    line = _user_error(["generate", "--checkpoint", str(ckpt), "--description", "x", "--out", str(out),
                        "--format", fmt], capsys)
    assert f"cannot write {out}:" in line and ".tmp" not in line, line
    assert (tmp_path / "a-file").read_text() == "mine"
    # the twin: a writable --out next to it succeeds
    assert main(["generate", "--checkpoint", str(ckpt), "--description", "x", "--out", str(tmp_path / "ok"),
                 "--format", fmt]) == 0


def test_base_model_prints_the_cached_folder(capsys):
    from zhyper.base_model import smollm2_path

    assert main(["base-model"]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2_path())


@pytest.mark.slow
def test_chat_on_the_shipped_smollm2_offline(tmp_path):
    """End to end on the real model: a SmolLM2 checkpoint, then `zhyper chat` in a fresh process."""
    model = ZhyperModel.from_base("smollm2", small_config())
    model.save_pretrained(tmp_path / "ckpt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "zhyper", "chat", "--checkpoint", str(tmp_path / "ckpt"),
                          "--description", "Answer like a German.", "--max-new-tokens", "12",
                          "What is the capital of France?"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout  # identity init = the base model's own (sensible) answer


@pytest.fixture
def overflowing(checkpoint, tmp_path):
    """The checkpoint with its hypernetwork's output MLP scaled by 1e20 per layer: finite weights (saved as such)
    whose output overflows float32 (two layers: 1e40)."""
    model = ZhyperModel.from_pretrained(checkpoint[1])  # a copy: the fixture's own model stays as it is
    with torch.no_grad():
        for layer in model.hypernet.out.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(1e20)
    model.save_pretrained(tmp_path / "overflowing")
    return ZhyperModel.from_pretrained(tmp_path / "overflowing").eval(), tmp_path / "overflowing"


def test_overflowing_modulation_is_an_error_naming_description_and_checkpoint(overflowing, checkpoint):
    model, folder = overflowing
    with pytest.raises(FloatingPointError, match=rf"hypernetwork of checkpoint {folder.resolve()} gives a modulation "
                                                 r"holding NaN or inf for description\(s\) \['Be brief\.'\]"):
        model.modulation_for(["Be brief."], check_finite=True)
    raw = model.modulation_for(["Be brief."])  # a batch caller (the server) gets the rows and decides per row
    assert not torch.isfinite(raw if isinstance(raw, torch.Tensor) else torch.cat(list(raw.values()))).all()
    sane, _ = checkpoint  # the twin: the same check passes on the checkpoint before scaling
    assert torch.isfinite(sane.modulation_for(["Be brief."], check_finite=True)).all()


@pytest.mark.parametrize("command", [["chat", "hi"], ["generate", "--out", "OUT"],
                                     ["generate", "--format", "zhyper", "--out", "OUT"]])
def test_chat_and_generate_refuse_an_overflowing_checkpoint(overflowing, tmp_path, capsys, command):
    _, folder = overflowing
    argv = [command[0], "--checkpoint", str(folder), "--description", "Be brief.",
            *[str(tmp_path / "out") if a == "OUT" else a for a in command[1:]]]
    line = _user_error(argv, capsys)
    assert "'Be brief.'" in line and "NaN or inf" in line and str(folder.resolve()) in line
    assert not (tmp_path / "out").exists()
