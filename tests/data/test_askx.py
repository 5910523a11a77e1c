"""AskX loader on a hand-written fixture folder and on ../shared/data/askx (skips when absent)."""

from __future__ import annotations

import collections
import csv
import shutil

import pytest

from zhyper.data import AskXSetting, load_askx
from zhyper.data.askx import read_rows


@pytest.fixture
def askx(fixtures):
    return fixtures / "askx"


def test_fixture_rows_splits_and_counts(askx):
    data = load_askx(askx, setting=askx / "setting.yaml")
    assert data.skipped == {"AskAtlantis.csv": 2, "AskLemuria.csv": 0}  # one 1-field row, one empty answer
    assert data.missing_data == ["cul_Mu"]
    assert data.seen_contexts == ["cul_Atlantis"] and data.unseen_contexts == ["cul_Lemuria"]
    counts = collections.Counter(zip(data.examples["culture"], data.examples["split"]))
    assert counts == {("cul_Atlantis", "train"): 9, ("cul_Atlantis", "validation"): 1, ("cul_Lemuria", "unseen"): 3}
    first = data.examples[0]
    assert first["question"] == "What do you eat for breakfast?"
    assert first["answer"] == first["response"] == "Fish, mostly.\nAnd seaweed tea."  # quoted newline kept
    assert first["system"] == "You are an Atlantean person. Answer with your own values."
    assert data.examples[2]["answer"] == 'Yes, we live underwater "mostly".'
    lemuria = data.split("unseen")[0]
    assert lemuria["prompt"] == "Question: How cold does it get?"  # the culture's own template
    assert data.examples["context"] == data.examples["culture"]


def test_descriptions_follow_the_setting(askx):
    data = load_askx(askx, setting=askx / "setting.yaml")
    assert data.heldout_descriptions["cul_Atlantis"] == ["From now on, you are an Atlantean."]
    train = data.descriptions["cul_Atlantis"]
    assert len(train) == 9 and len(set(train)) == 9  # the duplicate "Be an Atlantean." appears once
    assert "cul_Lemuria" not in data.descriptions
    assert data.heldout_descriptions["cul_Lemuria"][:2] == ["From now on, you are a Lemurian.", "Be Lemurian."]
    assert "Be a Lemurian." in data.heldout_descriptions["cul_Lemuria"]


def test_include_body_and_drop_system_message(askx):
    setting = AskXSetting(seen=("cul_Atlantis",))
    plain = load_askx(askx, setting=setting)
    full = load_askx(askx, setting=setting, include_body=True, drop_system_message=True)
    assert full.examples[0]["question"] == "What do you eat for breakfast?\n\nCurious, since I am\nvisiting soon."
    assert full.examples[0]["prompt"] == full.examples[0]["question"]
    assert plain.examples[0]["question"] != full.examples[0]["question"]
    assert set(full.examples["system"]) == {""} and set(plain.examples["system"]) != {""}
    # without eval descriptions a seeded fraction is held out, reproducibly
    assert len(plain.heldout_descriptions["cul_Atlantis"]) == 1
    assert load_askx(askx, setting=setting).descriptions == plain.descriptions


def test_csv_dir_option(askx, tmp_path):
    shutil.copytree(askx / "cultures", tmp_path / "cultures")
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(askx / "csv" / "AskLemuria.csv", other)
    data = load_askx(tmp_path, setting=AskXSetting(seen=("cul_Lemuria",), unseen=("cul_Atlantis",)), csv_dir=other)
    assert data.missing_data == ["cul_Atlantis"] and len(data.examples) == 3
    with pytest.raises(ValueError, match="root: none of the setting's cultures has a CSV"):
        load_askx(tmp_path, setting=AskXSetting(seen=("cul_Atlantis",)))


def test_errors_name_the_problem(askx, tmp_path):
    with pytest.raises(ValueError, match=r"setting: cultures \['cul_Narnia'\] are not in .*known cultures"):
        load_askx(askx, setting=askx / "bad_setting.yaml")
    with pytest.raises(ValueError, match=r"setting: 'countries' reads .*hyper_lora_align.yaml, which does not exist"):
        load_askx(askx, setting="countries")
    with pytest.raises(ValueError, match="setting: expected one of"):
        load_askx(askx, setting="continents")
    with pytest.raises(ValueError, match=r"seen/unseen: cultures \['cul_Mu'\] are in both"):
        AskXSetting(seen=("cul_Mu",), unseen=("cul_Mu",))
    with pytest.raises(ValueError, match="root: expected an AskX folder"):
        load_askx(tmp_path)
    shutil.copytree(askx, tmp_path / "a")
    meta = tmp_path / "a" / "cultures" / "cul_Mu" / "metadata.yaml"
    meta.write_text("descriptions: [unclosed\n")
    with pytest.raises(ValueError, match=r"cul_Mu/metadata.yaml: malformed YAML"):
        load_askx(tmp_path / "a", setting=AskXSetting(seen=("cul_Mu",)))
    meta.write_text("descriptions: []\nuser_prompt_template: '{question}'\nresponse_field: comment_body\n")
    with pytest.raises(ValueError, match=r"cul_Mu/metadata.yaml: descriptions: expected a non-empty list"):
        load_askx(tmp_path / "a", setting=AskXSetting(seen=("cul_Mu",)))
    meta = tmp_path / "a" / "cultures" / "cul_Atlantis" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("'{question}'", "'{question} ({flair})'"))
    with pytest.raises(ValueError, match=r"user_prompt_template uses unknown fields \['flair'\]"):
        load_askx(tmp_path / "a", setting=AskXSetting(seen=("cul_Atlantis",)))


def test_real_askx_countries_and_regions(shared_data):
    root = shared_data / "askx"
    countries = load_askx(root, setting="countries")
    regions = load_askx(root, setting="regions")
    assert countries.skipped == regions.skipped == {"AskAChinese.csv": 1, "AskAnAfrican.csv": 0}
    assert countries.seen_contexts == ["cul_China"] and countries.unseen_contexts == ["cul_Africa"]
    assert regions.seen_contexts == ["cul_Africa"] and regions.unseen_contexts == ["cul_China"]
    assert len(countries.missing_data) == 17 and "cul_Germany" in countries.missing_data
    assert "cul_PH" not in countries.missing_data  # in neither of the paper's settings
    c = collections.Counter(zip(countries.examples["culture"], countries.examples["split"]))
    assert c == {("cul_China", "train"): 2702, ("cul_China", "validation"): 300, ("cul_Africa", "unseen"): 500}
    assert countries.heldout_descriptions["cul_China"][0] == "From now on, you are a Chinese person."
    assert len(countries.descriptions["cul_China"]) >= 250
    # row count agrees with an independent parse of the file
    with open(root / "csv" / "AskAChinese.csv", newline="", encoding="utf-8") as fh:
        n_fields = [len(r) for r in csv.reader(fh)]
    assert n_fields.count(14) - 1 == len(read_rows(root / "csv" / "AskAChinese.csv")[0]) == 3002
    assert any("\n" in a for a in countries.examples["answer"])


# ---------------------------------------------------------------- bad CSVs
def _copy(askx, tmp_path):
    shutil.copytree(askx, tmp_path / "a")
    return tmp_path / "a"


def _rewrite_csv(path, change):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    rows = change(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize("column", ["submission_title", "comment_body"])
def test_a_csv_without_a_needed_column_names_the_file_and_column(askx, tmp_path, column):
    root = _copy(askx, tmp_path)
    path = root / "csv" / "AskLemuria.csv"

    def drop(rows):
        i = rows[0].index(column)
        return [r[:i] + r[i + 1:] for r in rows]

    _rewrite_csv(path, drop)
    setting = AskXSetting(seen=("cul_Atlantis",), unseen=("cul_Lemuria",))
    with pytest.raises(ValueError, match=rf"AskLemuria.csv: no column '{column}' \(culture 'cul_Lemuria' needs "
                                         r"\['submission_title', 'comment_body'\]\); columns of the file: "):
        load_askx(root, setting=setting)
    data = load_askx(askx, setting=setting)  # twin: the intact file gives the culture its rows
    assert data.unseen_contexts == ["cul_Lemuria"] and data.examples["culture"].count("cul_Lemuria") == 3


def test_submission_text_is_needed_only_with_include_body(askx, tmp_path):
    root = _copy(askx, tmp_path)

    def drop(rows):
        i = rows[0].index("submission_text")
        return [r[:i] + r[i + 1:] for r in rows]

    _rewrite_csv(root / "csv" / "AskLemuria.csv", drop)
    setting = AskXSetting(seen=("cul_Lemuria",))
    assert len(load_askx(root, setting=setting).examples) == 3
    with pytest.raises(ValueError, match=r"AskLemuria.csv: no column 'submission_text'"):
        load_askx(root, setting=setting, include_body=True)


def test_a_culture_without_usable_rows_is_an_error(askx, tmp_path):
    root = _copy(askx, tmp_path)
    _rewrite_csv(root / "csv" / "AskLemuria.csv", lambda rows: [rows[0]] + [r[:-1] + [" "] for r in rows[1:]])
    with pytest.raises(ValueError, match=r"AskLemuria.csv: culture 'cul_Lemuria' has no usable row \(3 skipped: "
                                         r"line 2: empty comment_body; line 3: empty comment_body"):
        load_askx(root, setting=AskXSetting(seen=("cul_Atlantis",), unseen=("cul_Lemuria",)))
    _rewrite_csv(root / "csv" / "AskLemuria.csv", lambda rows: [rows[0]])
    with pytest.raises(ValueError, match=r"culture 'cul_Lemuria' has no usable row \(0 skipped: no data rows\)"):
        load_askx(root, setting=AskXSetting(seen=("cul_Lemuria",)))


def test_skipped_rows_are_logged_with_their_lines(askx, caplog):
    with caplog.at_level("WARNING", logger="zhyper.data.askx"):
        data = load_askx(askx, setting=AskXSetting(seen=("cul_Atlantis",)))
    assert data.skipped["AskAtlantis.csv"] == 2
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "AskAtlantis.csv: skipped 2 of 12 rows (line 7: 1 fields, but the header has 14; line 9: empty comment_body)" \
        in text


def test_invalid_utf8_in_a_csv_is_counted_and_reported(askx, tmp_path, caplog):
    root = _copy(askx, tmp_path)
    path = root / "csv" / "AskLemuria.csv"
    path.write_bytes(path.read_bytes().replace(b"Barley soup.", "Barley soup très bon.".encode("latin-1")))
    with caplog.at_level("WARNING", logger="zhyper.data.metadata"):
        data = load_askx(root, setting=AskXSetting(seen=("cul_Lemuria",)))
    assert data.decode_errors == {"AskLemuria.csv": 1}
    assert "Barley soup tr\ufffds bon." in data.examples["answer"]
    assert any("AskLemuria.csv: 1 bytes on 1 lines are not valid UTF-8" in r.getMessage() for r in caplog.records)
    assert load_askx(askx, setting=AskXSetting(seen=("cul_Lemuria",))).decode_errors == {}  # twin: clean file
