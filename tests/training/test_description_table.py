"""Every description a run can meet is embedded before training, including rows' own (IFEval pair rows)."""

from __future__ import annotations

from tests.training.test_train_ifeval import write_answers


def test_pair_rows_joined_descriptions_are_in_the_table(tmp_path):
    from zhyper.training.config import load_config
    from zhyper.training.data import prepare_data

    answers = write_answers(tmp_path / "answers.jsonl")
    cfg = load_config("launch/configs/ifeval.yaml", [f"data.path={answers}", "data.pairs=12", "eval.controls=2"])
    run = prepare_data(cfg, 0, 1, "cpu")
    own = [d for d in run.rows.unique("description") if d]
    pairs = [d for d, second in zip(run.data.examples["description"], run.data.examples["second"]) if second]
    assert pairs and set(pairs) <= set(own)
    assert run.table(own).shape == (len(own), run.table.vectors.shape[1])  # none raises "not embedded"
