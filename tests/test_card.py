"""The model card of a checkpoint folder (zhyper/card.py, written by zhyper/pretrained.py).

The metadata block is read back with huggingface_hub's own parser (``ModelCard.load``), as the hub
reads it. A README.md zhyper did not write (or a card of zhyper's that someone edited) is never replaced.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import tiny_llama
from tests.model_helpers import perturb, small_config
from zhyper import ZhyperModel
from zhyper.card import is_own_card
from zhyper.pretrained import CONFIG_FILE, WEIGHTS_FILE, card_after_evaluation

# an eval.json as zhyper.training.report.write_report writes it (its sections and key forms; fewer contexts)
REPORT = {
    "method": "zhyper", "mode": "diag",
    "final": {"val_seen_loss": 1.8136, "val_seen_wrong_loss": 2.8794, "seen_gap": -1.0659, "seen_gap_se": 0.0743,
              "seen_gap/upper_case": -1.6276, "seen_gap_se/upper_case": 0.1923, "unseen_gap": -0.2010,
              "unseen_gap_se": 0.0580},
    "step_time_s": 2.06, "tokens_per_s_per_rank": 57.1, "train_time_s": 824.2, "n_trainable": 1219536,
    "compliance": {"compliance_heldout_seen": 0.61, "compliance_heldout_seen_se": 0.04,
                   "compliance_heldout.upper_case": 0.9, "control_random.upper_case": 0.1},
    "retention": {"retention/upper_case": 0.8, "retention/mean": 0.75, "retention/worst": 0.5},
    "diagnostics": {"diagnostics.spread_median": 0.0015, "diagnostics.spread.q_proj": 0.0011,
                    "diagnostics.collapsed": 1.0, "warnings": ["the modulations of 2 contexts nearly coincide"]},
}


def model_on(base_id=None):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config())).eval()
    model.base_model_id = base_id
    return model


def card(folder):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def test_save_pretrained_writes_a_card_the_hub_can_read(tmp_path):
    model_on("smollm2").save_pretrained(tmp_path / "ckpt")
    c = card(tmp_path / "ckpt")
    assert c.data.library_name == "zhyper" and c.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert c.data.license == "apache-2.0" and {"zhyper", "hypernetwork", "lora", "zhyper-diag"} <= set(c.data.tags)
    for part in ("`HuggingFaceTB/SmolLM2-135M-Instruct` (recorded as `smollm2`)", "| context encoder | "
                 "`all-MiniLM-L6-v2` (embedding size 384) |", "| mode | `diag` |", "| rank / alpha | 4 / 16.0 |",
                 "`q_proj`, `v_proj` (4 modules in 2 layers)", "the base model's license",
                 'ZhyperModel.from_pretrained("path/to/this/folder")', "zhyper chat --checkpoint path/to/this/folder",
                 "No training run is recorded", "No evaluation is recorded"):
        assert part in c.text, part
    assert is_own_card(tmp_path / "ckpt" / "README.md")
    model_on(None).save_pretrained(tmp_path / "anon")  # twin: no recorded base, no hub base, no known license
    c = card(tmp_path / "anon")
    assert c.data.base_model is None and c.data.license == "other"
    assert "not recorded (pass `base_model=` when loading)" in c.text and "Not given (`other`)" in c.text


def test_a_local_or_random_base_is_not_given_as_a_hub_model(tmp_path):
    for base_id, shown in ((str(tmp_path), f"`{tmp_path}` (not a hub model"), ("tiny-llama", "`tiny-llama` (not a hub "
                                                                                           "model")):
        model_on(base_id).save_pretrained(tmp_path / "ckpt")
        c = card(tmp_path / "ckpt")
        assert c.data.base_model is None and shown in c.text
    model_on("org/some-base").save_pretrained(tmp_path / "ckpt")  # twin: a hub id that is no local folder
    assert card(tmp_path / "ckpt").data.base_model == "org/some-base"


def test_the_license_is_recorded_and_kept_and_a_bad_one_is_named(tmp_path):
    model_on("smollm2").save_pretrained(tmp_path / "ckpt", license="mit")
    assert card(tmp_path / "ckpt").data.license == "mit"
    assert json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())["license"] == "mit"
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama())
    loaded.save_pretrained(tmp_path / "again")  # re-saved: the license stays
    assert card(tmp_path / "again").data.license == "mit"
    with pytest.raises(ValueError, match=r"license: expected a license id of the Hugging Face hub \(lower case, e.g. "
                                         r"'apache-2.0', 'mit', 'cc-by-4.0', 'other'\), got 'Apache 2.0'"):
        loaded.save_pretrained(tmp_path / "bad", license="Apache 2.0")
    assert not (tmp_path / "bad").exists()


def test_the_run_config_is_recorded_and_shown(tmp_path):
    from zhyper.training.config import RunConfig

    model = model_on("smollm2")
    model.training_config = RunConfig().to_dict()  # what write_final sets
    model.save_pretrained(tmp_path / "ckpt")
    record = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert record["training"]["train"]["max_steps"] == 300 and record["training"]["method"] == "zhyper"
    text = card(tmp_path / "ckpt").text
    assert "```yaml\nmethod: zhyper\nbase_model: smollm2\n" in text and "  max_steps: 300\n" in text
    loaded = ZhyperModel.from_pretrained(tmp_path / "ckpt", base_model=tiny_llama())
    assert loaded.training_config == record["training"]
    model_on("smollm2").save_pretrained(tmp_path / "plain")  # twin: no run
    assert "training" not in json.loads((tmp_path / "plain" / CONFIG_FILE).read_text())


def test_the_card_of_a_run_gets_the_figures_of_its_eval_json(tmp_path):
    from zhyper.training.output import foreign_checkpoint_files

    run = tmp_path / "run"
    final = model_on("smollm2").save_pretrained(run / "final")
    assert card_after_evaluation(final, run / "eval.json") == final / "README.md"  # twin: no eval.json yet
    assert "No evaluation is recorded" in card(final).text
    (run / "eval.json").write_text(json.dumps(REPORT, indent=1))
    card_after_evaluation(final, run / "eval.json")
    text = card(final).text
    for row in ("| final | `seen_gap` | -1.066 (se 0.074) |", "| final | `val_seen_loss` | 1.814 |",
                "| compliance | `compliance_heldout_seen` | 0.61 (se 0.04) |", "| retention | `retention/mean` | 0.75 |",
                "| diagnostics | `diagnostics.spread_median` | 0.0015 |", "| diagnostics | `diagnostics.collapsed` | 1 |", "| speed | `train_time_s` | 824.2 |",
                "- the modulations of 2 contexts nearly coincide"):
        assert row in text, row
    for detail in ("seen_gap/upper_case", "retention/upper_case", "compliance_heldout.upper_case", "spread.q_proj"):
        assert detail not in text, detail  # the breakdowns stay in eval.json
    assert is_own_card(final / "README.md") and foreign_checkpoint_files(run) == []
    assert ZhyperModel.from_pretrained(final, base_model=tiny_llama()) is not None  # the card changes no checksum
    (run / "eval.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"eval.json: not the JSON report zhyper writes"):
        card_after_evaluation(final, run / "eval.json")
    (run / "lora").mkdir()  # the LoRA baseline's final/: no zhyper checkpoint, nothing written
    assert card_after_evaluation(run / "lora", run / "eval.json") is None and not any((run / "lora").iterdir())


@pytest.mark.parametrize("foreign", ["user", "edited", "symlink"])
def test_a_readme_zhyper_did_not_write_is_never_replaced(tmp_path, caplog, foreign):
    folder = tmp_path / "ckpt"
    model = model_on("smollm2")
    if foreign == "user":
        folder.mkdir()
        (folder / "README.md").write_text("# my notes\n")
    elif foreign == "edited":
        model.save_pretrained(folder)
        readme = folder / "README.md"
        readme.write_text(readme.read_text().replace("## License", "## License\n\nMy own words.", 1))
    else:
        folder.mkdir()
        (tmp_path / "elsewhere.md").write_text("# not yours\n")
        (folder / "README.md").symlink_to(tmp_path / "elsewhere.md")
    before = (folder / "README.md").read_text()
    with caplog.at_level(logging.WARNING):
        model.save_pretrained(folder, license="mit")
        assert card_after_evaluation(folder, tmp_path / "eval.json") is None
    assert (folder / "README.md").read_text() == before and (folder / WEIGHTS_FILE).is_file()
    assert "is not a model card zhyper wrote (or it was edited): kept as it is, no card written" in caplog.text
    assert not is_own_card(folder / "README.md")


def test_twin_zhypers_own_card_is_replaced(tmp_path):
    folder = model_on("smollm2").save_pretrained(tmp_path / "ckpt")
    model_on("smollm2").save_pretrained(folder, license="mit")
    assert card(folder).data.license == "mit" and is_own_card(folder / "README.md")
