"""zhyper chat / generate with several descriptions and weights: the same answers and adapters as the library."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from torch.testing import assert_close

from tests.serving.conftest import make_checkpoint
from zhyper import ZhyperModel
from zhyper.cli import main

A, B = "Answer in all capital letters.", "Wrap the whole answer in JSON."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli_compose"))


def _chat(capsys, ckpt, *flags):
    assert main(["chat", "--checkpoint", str(ckpt), *flags, "--max-new-tokens", "6", "Name a colour."]) == 0
    return capsys.readouterr().out.strip()


def test_chat_combines_descriptions_like_the_library(ckpt, capsys):
    model = ZhyperModel.from_pretrained(ckpt).eval()
    both = _chat(capsys, ckpt, "--description", A, "--description", B)
    assert both == model.generate(["Name a colour."], [[A, B]], max_new_tokens=6)[0].strip()
    assert _chat(capsys, ckpt, "--description", A, "--weight", "0") == \
        _chat(capsys, ckpt, "--description", B, "--weight", "0")  # weight 0: the base model, whatever the text
    assert _chat(capsys, ckpt, "--description", A) != _chat(capsys, ckpt, "--description", B)  # twin


def test_weights_must_match_the_descriptions(ckpt, capsys):
    code = main(["chat", "--checkpoint", str(ckpt), "--description", A, "--description", B, "--weight", "1",
                 "Hi"])
    assert code == 2
    assert "--weight: expected one per --description (2), got 1" in capsys.readouterr().err


def test_generate_exports_the_weighted_sum(ckpt, tmp_path):
    model = ZhyperModel.from_pretrained(ckpt).eval()
    assert main(["generate", "--checkpoint", str(ckpt), "--description", A, "--description", B,
                 "--weight", "0.5", "--weight", "1.5", "--format", "zhyper", "--out", str(tmp_path / "z")]) == 0
    z = load_file(str(tmp_path / "z" / "modulation.safetensors"))["modulation"]
    assert_close(z, 0.5 * model.modulation([A])[0] + 1.5 * model.modulation([B])[0])
    assert main(["generate", "--checkpoint", str(ckpt), "--description", A, "--description", B,
                 "--out", str(tmp_path / "peft")]) == 0
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
