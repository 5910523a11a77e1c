"""The ablation rows of benchmarks/compare_methods.py are valid run configs, and the Pareto frontier is right.

Each row is a 20-60 minute run on this machine: a misspelt override must fail here, in a second,
not after the sweep reached it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
RECIPE = Path(__file__).resolve().parents[2] / "launch" / "configs" / "ifeval.yaml"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_ablate_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lora_folder(tmp_path: Path) -> Path:
    """A PEFT adapter folder fitting the IFEval recipe's model (rank 8, alpha 16, q/k/v/o), for the frozen row."""
    import json

    folder = tmp_path / "lora_description_in_prompt.seed0" / "final"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "lora_alpha": 16.0, "use_rslora": False, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return tmp_path


def test_every_method_row_builds_a_valid_run_config(tmp_path):
    import yaml

    from zhyper.training.config import build_config

    compare = load("compare_methods")
    out = _lora_folder(tmp_path)
    raw = yaml.safe_load(RECIPE.read_text())
    for name, flags in compare.METHODS.items():
        own = [f.replace("{out}", str(out)).replace("{seed}", "0") for f in flags]
        cfg = build_config(raw, [*own, "train.max_steps=200", "train.seed=0", "data.seed=0"])
        assert cfg.train.max_steps == 200, name
    assert set(compare.ABLATIONS) < set(compare.METHODS)
    assert not set(compare.ABLATIONS) & set(m for m in compare.METHODS if "pair" in m)


def test_a_misspelt_row_would_fail_here():
    """The twin: the check above can fail (an override the run config does not know)."""
    from zhyper.training.config import build_config

    with pytest.raises(ValueError, match="unknown key 'model.position_embedding'"):
        build_config({}, ["model.position_embedding=false"])


def test_pareto_frontier_keeps_only_undominated_methods():
    pareto = load("plot_pareto")
    pts = [("a", 100.0, 0.2, 0.1), ("b", 200.0, 0.5, 0.1), ("c", 300.0, 0.4, 0.1), ("d", 50.0, 0.1, 0.1),
           ("e", 200.0, 0.3, 0.1)]
    assert [p[0] for p in pareto.frontier(pts)] == ["d", "a", "b"]
    rows = {"x": [{"n_trainable": 10, "heldout_seen": 0.3, "heldout_seen_se": 0.05}],
            "Base model, description in prompt": [{"heldout_seen": 0.2}], "y": [{"n_trainable": 5}]}
    found, left = pareto.points(rows)
    assert [p[0] for p in found] == ["x"] and found[0][3] == pytest.approx(0.1)
    assert set(left) == {"Base model, description in prompt", "y"}


def test_every_method_row_falls_in_its_mode_family_and_only_ablations_are_hollow():
    pareto, methods = load("plot_pareto"), load("compare_methods").METHODS
    assert pareto.family("Zhyper square, rank 16") == ("square", False)
    assert pareto.family("LoRA, description in prompt, rank 4") == ("LoRA", False)
    assert pareto.family("Zhyper full (T2L-style)") == ("full", False)
    assert pareto.family("Zhyper diag") == ("diag", False)
    assert pareto.family("Zhyper diag, no position embeddings") == ("diag", True)  # the twin: an ablation
    assert pareto.family("Zhyper diag, A/B frozen from the prompted LoRA") == ("diag", True)  # not the LoRA family
    assert all(pareto.family(m)[0] in pareto.FAMILIES for m in methods)


def test_tabulate_fills_a_missing_seed_from_an_earlier_table_and_marks_it(tmp_path):
    from types import SimpleNamespace

    cm = load("compare_methods")
    earlier = {"Zhyper square": [{"seed": 1, "heldout_seen": 0.5, "n_trainable": 10}],
               cm.BASE: [{"seed": 1, "heldout_seen": 0.3}]}
    args = SimpleNamespace(tabulate=True, common=[], no_base_prompt=True, earlier="old.json", earlier_rows=earlier)
    rows: dict = {}
    for m, name in enumerate(["Zhyper square", "Zhyper diag"]):
        for seed in (0, 1):
            cm._run_one(args, tmp_path, rows, m, name, seed)
    assert rows == {"Zhyper square": [{"seed": 1, "heldout_seen": 0.5, "n_trainable": 10, "earlier": True}],
                    cm.BASE: [{"seed": 1, "heldout_seen": 0.3, "earlier": True}]}
    assert cm._cell(rows["Zhyper square"], "seed", 0) == "1*"
    # the twin: without an earlier table the same sweep has no rows at all
    args.earlier_rows, rows = {}, {}
    cm._run_one(args, tmp_path, rows, 0, "Zhyper square", 1)
    assert rows == {}


def test_every_method_has_its_own_plain_run_folder_name():
    cm = load("compare_methods")
    names = [cm.run_name(m) for m in cm.METHODS]
    assert all(n and Path(n).name == n and "/" not in n for n in names), names  # "A/B" made a nested path
    assert len(set(names)) == len(names)
    assert cm.run_name("Zhyper diag, A/B frozen") != cm.run_name("Zhyper diag, AB frozen x")  # the twin
