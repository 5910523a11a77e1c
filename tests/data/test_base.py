"""ContextData validation, split selection, description splitting, and the cheap package import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from zhyper.data import ContextData, split_descriptions


def _examples(**override):
    cols = {"context": ["a", "a", "b"], "prompt": ["p1", "p2", "p3"], "response": ["r1", "r2", "r3"],
            "split": ["train", "validation", "unseen"], "system": ["", "", ""]}
    cols.update(override)
    return Dataset.from_dict(cols)


def test_split_returns_rows_in_order():
    data = ContextData(_examples(), {"a": ["da"]}, {"a": [], "b": ["db"]}, ["a"], ["b"])
    assert data.split("train")["prompt"] == ["p1"] and data.split("unseen")["prompt"] == ["p3"]
    assert data.contexts == ["a", "b"]
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'validation', 'unseen'\], got 'test'"):
        data.split("test")


@pytest.mark.parametrize("kwargs,message", [
    (dict(examples=_examples().remove_columns("system")), r"examples: missing columns \['system'\]"),
    (dict(examples=_examples(split=["train", "dev", "unseen"])), r"examples\['split'\]: expected values in .* got \['dev'\]"),
    (dict(descriptions={"a": []}), r"descriptions: seen context 'a' has no training descriptions"),
    (dict(heldout={"a": []}), r"heldout_descriptions: unseen context 'b' has no descriptions"),
    (dict(descriptions={"a": ["x"], "b": ["y"]}), r"descriptions: unseen contexts \['b'\] must not have training"),
    (dict(unseen=["a", "b"]), r"seen_contexts and unseen_contexts must be disjoint; both contain \['a'\]"),
])
def test_invalid_context_data(kwargs, message):
    args = dict(examples=_examples(), descriptions={"a": ["da"]}, heldout={"b": ["db"]}, seen=["a"], unseen=["b"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ContextData(args["examples"], args["descriptions"], args["heldout"], args["seen"], args["unseen"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), frac=st.floats(0.0, 0.9), seed=st.integers(0, 100))
def test_split_descriptions_partitions(n, frac, seed):
    descs = [f"description {i}" for i in range(n)]
    train, held = split_descriptions(descs, frac, seed, "ctx")
    assert sorted(train + held) == sorted(descs) and not set(train) & set(held)
    assert train  # always something to train on
    if n >= 2 and frac > 0:
        assert held
    assert (train, held) == split_descriptions(descs, frac, seed, "ctx")


def test_split_descriptions_depends_on_seed_and_key_and_rejects_empty():
    descs = [f"d{i}" for i in range(20)]
    base = split_descriptions(descs, 0.25, 0, "ctx")
    assert base != split_descriptions(descs, 0.25, 1, "ctx")
    assert base != split_descriptions(descs, 0.25, 0, "other")
    with pytest.raises(ValueError, match="descriptions: context 'ctx' has no non-empty descriptions"):
        split_descriptions(["", "  "], 0.1, 0, "ctx")
    with pytest.raises(ValueError, match=r"heldout_fraction: expected a value in \[0, 1\), got 1.0"):
        split_descriptions(descs, 1.0, 0, "ctx")


def test_import_is_cheap():
    code = ("import sys, zhyper.data as d; d.MixedContextSampler; d.format_prompt; "
            "print(sorted(m for m in ('datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
