"""Checkpoint folders (zhyper/pretrained.py): every bad input is named, and found before the base's weights load.

Several tests pass ``base_model=`` a folder that holds only the base's ``config.json``: loading its
weights would fail, so an error that names the checkpoint's problem proves the check ran first.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_llama, tiny_mistral
from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel
from zhyper.pretrained import CONFIG_FILE, WEIGHTS_FILE


def saved(tmp_path, mode="diag"):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config(mode=mode))).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def config_only_base(folder, **sizes):
    """A base folder with config.json and no weights (from_pretrained on it would fail)."""
    tiny_llama(**sizes).config.save_pretrained(folder)
    return folder


def edit_record(ckpt, change):
    path = ckpt / CONFIG_FILE
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_good_checkpoint_loads_and_records_its_folder(tmp_path):
    """The twin of every error below: the unmodified checkpoint loads onto the right base."""
    model, ckpt = saved(tmp_path)
    loaded = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    assert loaded.checkpoint_folder == ckpt.resolve()
    assert all(torch.equal(v, model.trainable_state_dict()[k]) for k, v in loaded.trainable_state_dict().items())


def test_malformed_json_names_the_file_and_the_position(tmp_path):
    _, ckpt = saved(tmp_path)
    text = (ckpt / CONFIG_FILE).read_text()
    (ckpt / CONFIG_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: malformed JSON at line \d+, column \d+"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    (ckpt / CONFIG_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: not UTF-8 text"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    (ckpt / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: expected a JSON object of checkpoint fields, got list"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())


def _drop(key):
    return lambda r: r.pop(key)


def _set(path, value):
    def change(record):
        *parents, last = path
        target = record
        for p in parents:
            target = target[p]
        target[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_drop("layout"), r"missing field 'layout' \(a zhyper checkpoint records"),
    (_drop("tensors"), r"missing field 'tensors'"),
    (_set(["format_version"], 7), r"field 'format_version' is 7, expected the supported 1"),
    (_set(["config"], "diag"), r"field 'config': expected a mapping of ZhyperConfig fields, got 'diag'"),
    (_set(["config", "rank"], 0), r"field 'config': rank: expected an int >= 1, got 0"),
    (_set(["config", "colour"], "red"), r"field 'config': unknown ZhyperConfig field\(s\) \['colour'\]"),
    (_set(["base_model"], "llama"), r"field 'base_model': expected a mapping"),
    (_set(["base_model", "model_type"], 3), r"field 'base_model.model_type': expected a string or null, got 3"),
    (_set(["layout", "n_layers"], "two"), r"field 'layout.n_layers': expected a positive int, got 'two'"),
    (_set(["layout", "modules"], []), r"field 'layout.modules': expected a non-empty list"),
    (_set(["layout", "modules", 1, "in_features"], "32"),
     r"field 'layout.modules\[1\].in_features': expected a positive int, got '32'"),
    (lambda r: r["layout"]["modules"][0].pop("name"), r"field layout.modules\[0\].name is missing"),
    (_set(["tensors", "hypernet.context_proj.0.weight"], "big"),
     r"field 'tensors.hypernet.context_proj.0.weight': expected a shape \(list of ints\), got 'big'"),
])
def test_bad_fields_name_the_file_and_the_field(tmp_path, change, message):
    _, ckpt = saved(tmp_path)
    edit_record(ckpt, change)
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: {message}"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(config_only_base(tmp_path / "base")))


@pytest.mark.parametrize("damage", ["truncated", "header", "empty"])
def test_a_damaged_weights_file_is_found_before_the_base_loads(tmp_path, damage):
    _, ckpt = saved(tmp_path)
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    (ckpt / WEIGHTS_FILE).write_bytes({"truncated": data[: len(data) - 100], "header": b"\x00" * 8 + data[8:],
                                       "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE} is truncated or corrupt \(.*\); the checkpoint cannot "
                                         "be loaded"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(config_only_base(tmp_path / "base")))


def test_weights_that_differ_from_the_record_name_the_tensor(tmp_path):
    _, ckpt = saved(tmp_path)
    tensors = load_file(str(ckpt / WEIGHTS_FILE))
    name = "base.model.layers.0.self_attn.q_proj.lora_A"
    save_file({k: v for k, v in tensors.items() if k != name}, str(ckpt / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE} does not hold the tensors .*{CONFIG_FILE} records: "
                                         rf"missing \['{name}'\]"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(config_only_base(tmp_path / "base")))
    save_file({**tensors, name: torch.zeros(5, 32)}, str(ckpt / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=rf"tensor {name} has shape \(5, 32\), but .*{CONFIG_FILE} records \(4, 32\)"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(config_only_base(tmp_path / "base")))


def test_non_finite_weights_in_the_file_name_the_tensor(tmp_path):
    _, ckpt = saved(tmp_path)
    tensors = load_file(str(ckpt / WEIGHTS_FILE))
    tensors["hypernet.context_proj.0.weight"][0, 0] = float("nan")
    save_file(tensors, str(ckpt / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE} has \d+ bytes, but .*{CONFIG_FILE} records"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())  # the file is not the one saved
    with pytest.raises(ValueError, match=r"tensor hypernet.context_proj.0.weight has 1 non-finite values \(NaN/inf\)"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama(), verify=False)  # edited on purpose: still checked


def test_another_model_type_is_refused_even_with_the_same_layout(tmp_path):
    _, ckpt = saved(tmp_path)
    with pytest.raises(ValueError, match=r"was trained on a 'llama' base model.* but the base model given "
                                         r"\(MistralForCausalLM\) is a 'mistral' model; pass base_model="):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_mistral())  # same q/v shapes: the layout alone fits
    tiny_mistral().config.save_pretrained(tmp_path / "mistral")
    with pytest.raises(ValueError, match=r"was trained on a 'llama' base model.* is a 'mistral' model"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(tmp_path / "mistral"))


def test_the_layout_is_checked_from_the_base_config_before_its_weights(tmp_path):
    _, ckpt = saved(tmp_path)
    base = config_only_base(tmp_path / "wide", hidden=48)
    with pytest.raises(ValueError, match=r"does not fit the base model '.*wide': module model\.layers\.0\.self_attn"
                                         r"\.q_proj: in_features is 32 in the checkpoint but 48 in this base model"):
        ZhyperModel.from_pretrained(ckpt, base_model=str(base))


def test_the_recorded_base_is_checked_before_its_weights_load(tmp_path):
    base = tiny_chat_base(tmp_path / "base")
    model = ZhyperModel.from_base(str(base), small_config())
    assert model.base_folder == base.resolve()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt")  # twin: the recorded base loads
    assert loaded.base_folder == base.resolve()
    # the recorded base folder is replaced by a deeper model's config, without weights
    (base / "model.safetensors").unlink()
    tiny_llama(n_layers=3).config.save_pretrained(base)
    with pytest.raises(ValueError, match=r"does not fit the base model .*: module model\.layers\.2\.self_attn\.q_proj "
                                         r"of this base model is not in the checkpoint"):
        ZhyperModel.from_pretrained(tmp_path / "ckpt")


def test_a_checkpoint_of_the_random_test_base_says_to_pass_base_model(tmp_path):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config()))
    model.base_model_id = "tiny-llama"  # what the training recipe records for its random test base
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"was trained on 'tiny-llama', the randomly initialised test base .* cannot "
                                         r"be reloaded from its recorded base\. Pass base_model="):
        ZhyperModel.from_pretrained(tmp_path / "ckpt")
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama())  # twin
    assert loaded.base_model_id == "tiny-llama"


def test_an_unreachable_recorded_base_says_to_pass_base_model(tmp_path):
    model = ZhyperModel.from_base(tiny_llama(), small_config())
    model.base_model_id = "no-such-org/no-such-model"
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"cannot read the config of the base model 'no-such-org/no-such-model' "
                                         r"\(.*\); pass base_model="):
        ZhyperModel.from_pretrained(tmp_path / "ckpt")


# ---------------------------------------------------------------- save_pretrained
def test_save_keeps_the_users_files_and_may_rewrite_its_own_checkpoint(tmp_path):
    model, ckpt = saved(tmp_path)
    (ckpt / "notes.txt").write_text("mine")
    (ckpt / "plots").mkdir()
    (ckpt / "plots" / "loss.png").write_bytes(b"png")
    loaded = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    with torch.no_grad():
        loaded.hypernet.context_center.fill_(0.5)
    loaded.save_pretrained(ckpt)  # the folder it was loaded from: its own two files are replaced
    assert (ckpt / "notes.txt").read_text() == "mine" and (ckpt / "plots" / "loss.png").read_bytes() == b"png"
    assert torch.all(load_file(str(ckpt / WEIGHTS_FILE))["hypernet.context_center"] == 0.5)


def test_save_refuses_non_finite_tensors_and_writes_nothing(tmp_path):
    model, _ = saved(tmp_path)
    with torch.no_grad():
        model.hypernet.heads["v_proj"].bias[1] = float("inf")
    with pytest.raises(ValueError, match=r"save_pretrained: nothing was written to .*new; the model: tensor "
                                         r"hypernet.heads.v_proj.bias has 1 non-finite values \(NaN/inf\)"):
        model.save_pretrained(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with torch.no_grad():
        model.hypernet.heads["v_proj"].bias[1] = 0.0
    model.save_pretrained(tmp_path / "new")  # twin: finite again, saved
    assert (tmp_path / "new" / WEIGHTS_FILE).is_file()


def test_save_refuses_the_base_models_folder(tmp_path):
    base = tiny_chat_base(tmp_path / "base")
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    model = ZhyperModel.from_base(str(base), small_config())
    for out in (base, base / "sub"):
        with pytest.raises(ValueError, match=rf"save_pretrained: output folder {out} is the base model's folder "
                                             rf"{base.resolve()} \(or inside it\)"):
            model.save_pretrained(out)
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before
    shutil.rmtree(tmp_path / "elsewhere", ignore_errors=True)
    model.save_pretrained(tmp_path / "elsewhere")  # twin
    assert (tmp_path / "elsewhere" / CONFIG_FILE).is_file()


def test_base_fingerprint_mismatch_warns_and_strict_refuses(tmp_path, caplog):
    """Same architecture and shapes, other weights (another seed): a warning naming the checkpoint; an error
    with strict_base; the twin (the base it was trained on) loads silently."""
    from zhyper.pretrained import load_checkpoint

    model, ckpt = saved(tmp_path)
    fingerprint = json.loads((ckpt / CONFIG_FILE).read_text())["base_model"]["fingerprint"]
    assert len(fingerprint["sha256"]) == 64 and len(fingerprint["tensors"]) == 3
    with caplog.at_level("WARNING", logger="zhyper.pretrained"):
        same = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama(seed=0))
    assert not [r for r in caplog.records if "weights differ" in r.getMessage()]
    torch.testing.assert_close(same.modulation_for(["x"]), model.modulation_for(["x"]))
    other = tiny_llama(seed=1)
    with caplog.at_level("WARNING", logger="zhyper.pretrained"):
        ZhyperModel.from_pretrained(ckpt, base_model=other)
    (warning,) = [r.getMessage() for r in caplog.records if "weights differ" in r.getMessage()]
    assert f"checkpoint {ckpt} was trained on a base model whose weights differ" in warning
    assert "strict_base=True makes this an error" in warning
    with pytest.raises(ValueError, match=r"weights differ from the one it is loaded on \(same shapes, other values"):
        load_checkpoint(ZhyperModel, ckpt, base_model=tiny_llama(seed=1), strict_base=True)
    load_checkpoint(ZhyperModel, ckpt, base_model=tiny_llama(seed=0), strict_base=True)  # the twin


def test_fingerprint_is_the_same_in_another_dtype(tmp_path):
    from zhyper.pretrained import base_fingerprint

    base = tiny_llama(seed=0)
    fp32 = base_fingerprint(ZhyperModel.from_base(base, small_config()))
    bf16 = base_fingerprint(ZhyperModel.from_base(tiny_llama(seed=0).to(torch.bfloat16), small_config()))
    assert fp32 == bf16
    assert base_fingerprint(ZhyperModel.from_base(tiny_llama(seed=2), small_config())) != fp32


def test_a_checkpoint_without_fingerprint_loads_but_strict_says_why(tmp_path):
    from zhyper.pretrained import load_checkpoint

    _, ckpt = saved(tmp_path)
    edit_record(ckpt, lambda r: r["base_model"].pop("fingerprint"))
    ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama(seed=1))  # older checkpoints keep loading
    with pytest.raises(ValueError, match="records no fingerprint of its base model"):
        load_checkpoint(ZhyperModel, ckpt, base_model=tiny_llama(seed=1), strict_base=True)


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file(tmp_path):
    model, ckpt = saved(tmp_path)
    ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())  # twin: the file as saved loads
    data = bytearray((ckpt / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0x10  # a bit of a tensor's value, not of the header: safetensors itself cannot see it
    (ckpt / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{ckpt / WEIGHTS_FILE}: its SHA-256 .* differs from the .* that "
                                         rf"{ckpt / CONFIG_FILE} records: the file was changed, or swapped in .*"
                                         "verify=False"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    edited = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama(), verify=False)  # the explicit opt-out
    assert any(not torch.equal(v, model.trainable_state_dict()[k]) for k, v in edited.trainable_state_dict().items())


def test_weights_swapped_in_from_another_checkpoint_are_refused(tmp_path, monkeypatch):
    _, ckpt = saved(tmp_path)
    other = perturb(ZhyperModel.from_base(tiny_llama(), small_config()), seed=7)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / WEIGHTS_FILE, ckpt / WEIGHTS_FILE)  # same tensors and shapes, other values
    with pytest.raises(ValueError, match=rf"{ckpt / WEIGHTS_FILE}: its SHA-256 .*swapped in from another checkpoint"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    monkeypatch.setenv("ZHYPER_VERIFY_CHECKSUMS", "0")  # the command line's opt-out
    ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    ZhyperModel.from_pretrained(tmp_path / "other", base_model=tiny_llama())  # twin: the other checkpoint as saved


def test_the_checksum_is_recorded_and_an_old_checkpoint_without_one_still_loads(tmp_path):
    import hashlib

    model, ckpt = saved(tmp_path)
    files = json.loads((ckpt / CONFIG_FILE).read_text())["files"]
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    assert files == {WEIGHTS_FILE: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    edit_record(ckpt, _drop("files"))  # a checkpoint written before checksums were recorded
    loaded = ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
    assert all(torch.equal(v, model.trainable_state_dict()[k]) for k, v in loaded.trainable_state_dict().items())
    edit_record(ckpt, _set(["files"], {WEIGHTS_FILE: {"bytes": "many"}}))  # twin: a malformed record is named
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: field 'files.{WEIGHTS_FILE}': expected"):
        ZhyperModel.from_pretrained(ckpt, base_model=tiny_llama())
