"""Smoke tests of the serving benchmarks (tiny sizes, a few seconds each): they stay runnable.

Each runs the benchmark's ``main`` in-process, as its command line would, on the tiny model: a real
uvicorn server on loopback and the official ``openai`` client for bench_load.py, the engine, HF
``generate`` and PEFT for bench_contexts.py. Nothing is asserted about speed, only about what the
benchmark reports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_smoke_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_load_runs_levels_chaos_and_ratios(tmp_path):
    out = load("bench_load").main(["--levels", "1", "4", "--requests", "12", "--max-tokens", "3", "--chaos", "0.5",
                                   "--distinct", "3", "--ratio-clients", "2", "--ratio-tokens", "2", "--reps", "2",
                                   "--out", str(tmp_path)])
    levels, ratios = out["levels"], out["ratios"]
    assert [r["clients"] for r in levels] == [1, 4]
    assert all(r["sent"] == 12 and r["skipped"] == 0 for r in levels)
    assert sum(r["chaos_sent"] for r in levels) > 0  # seeded: chaos requests were sent ...
    assert any(s >= 400 for r in levels for s in r["statuses"])  # ... and refused
    assert all(r["5xx_well_formed"] == 0 and r["wrong_answers"] == 0 for r in levels)
    assert all(r["steps"] > 0 and r["batch_mean"] >= 1 for r in levels)  # /metrics was parsed
    assert len(ratios) == 1 and ratios[0]["ci_lo"] <= ratios[0]["median"] <= ratios[0]["ci_hi"]
    assert "| 4 | 12 |" in (tmp_path / "load.md").read_text()
    assert (tmp_path / "load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_load_chaos_kinds_are_known_and_summarised():
    bench = load("bench_load")
    kinds = bench.plan(200, 0.1, 4, seed=0)
    assert 5 <= sum(k != "ok" for k, _ in kinds) <= 40 and {j for k, j in kinds if k == "ok"} == {0, 1, 2, 3}
    assert all(bench.chaotic(k, 4) != bench.well_formed(0, 4) for k in bench.CHAOS)
    results = [{"status": 200, "ttft": 0.1, "latency": 0.2, "text": "a", "tokens": 4},
               {"status": 200, "ttft": 0.1, "latency": 0.2, "text": "b", "tokens": 4},  # wrong answer
               {"status": 500, "ttft": None, "latency": 0.1, "text": "", "tokens": 0}]
    row = bench.summarise(3, [("ok", 0), ("ok", 0), ("ok", 0)], results, 1.0, {0: "a"})
    assert row["wrong_answers"] == 2 and row["5xx_well_formed"] == 1 and row["tok_s"] == 8.0


@pytest.mark.slow
def test_bench_contexts_runs_and_reports_where_peft_stops(tmp_path):
    rows = load("bench_contexts").main(["--sizes", "2", "4", "--tokens", "2", "--reps", "1", "--peft-budget-s", "0",
                                        "--out", str(tmp_path)])
    assert [r["n"] for r in rows] == [2, 4]
    for r in rows:  # a zero budget: PEFT stops after its first adapter, and the table says so
        assert r["vs_base"] > 0 and r["vs_peft"] is None and "stopped at 1 adapters" in r["peft"]
        assert r["cold_hit_rate"] == 0 and r["warm_hit_rate"] == 1 and r["peak_rss_gib"] > 0
    assert "not run: stopped at 1 adapters" in (tmp_path / "contexts.md").read_text()


@pytest.mark.slow
def test_bench_contexts_measures_peft_within_budget():
    rows = load("bench_contexts").main(["--sizes", "3", "--tokens", "2", "--reps", "1"])
    assert rows[0]["vs_peft"] is not None and rows[0]["peft"] is None and rows[0]["peft_tok_s"] > 0


@pytest.mark.slow
def test_bench_engine_pairs_every_repetition(tmp_path):
    rows = load("bench_engine").main(["--tiny", "--cases", "2x3", "1x2", "--reps", "2", "--out", str(tmp_path)])
    assert [(r["contexts"], r["tokens"]) for r in rows] == [(2, 3), (1, 2)]
    for r in rows:  # one ratio per repetition, the median among them
        assert len(r["ratios"]) == 2 and r["low"] <= r["median"] <= r["high"] and r["engine_tok_s"] > 0
    assert "| 2 x 3 |" in (tmp_path / "engine.md").read_text()
