"""MixedContextSampler: n distinct contexts x k examples, determinism, rank split, resume."""

from __future__ import annotations

import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from zhyper.data import MixedContextSampler


def _data(n_contexts: int = 6, per: int = 5) -> tuple[Dataset, dict[str, list[str]]]:
    ctx = [f"c{i}" for i in range(n_contexts) for _ in range(per)]
    descs = {f"c{i}": [f"c{i} description {j}" for j in range(3)] for i in range(n_contexts)}
    return Dataset.from_dict({"context": ctx, "prompt": [str(j) for j in range(len(ctx))]}), descs


def test_batch_holds_n_distinct_contexts_times_k():
    ex, descs = _data()
    s = MixedContextSampler(ex, descs, n_contexts=4, k=3, seed=1)
    for step in range(20):
        batch = s.batch(step)
        assert len(batch) == 12
        rows = [r for r, _ in batch]
        assert len(set(rows)) == 12
        ctx = [ex[r]["context"] for r in rows]
        assert len(set(ctx)) == 4 and all(ctx.count(c) == 3 for c in set(ctx))
        for r, d in batch:
            assert d in descs[ex[r]["context"]]


def test_pure_function_of_seed_and_step_and_seeds_differ():
    ex, descs = _data()
    a = MixedContextSampler(ex, descs, 3, 2, seed=7)
    b = MixedContextSampler(ex, descs, 3, 2, seed=7)
    c = MixedContextSampler(ex, descs, 3, 2, seed=8)
    assert [a.batch(s) for s in range(10)] == [b.batch(s) for s in reversed(range(10))][::-1]
    assert [a.batch(s) for s in range(10)] != [c.batch(s) for s in range(10)]
    assert a.batch(0) != a.batch(1)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 5), world=st.sampled_from([1, 2, 3, 4, 6]), step=st.integers(0, 10**6))
def test_ranks_are_disjoint_and_cover_the_global_batch(n, k, world, step):
    if (n * k) % world:
        return
    ex, descs = _data()
    shares = [MixedContextSampler(ex, descs, n, k, seed=3, rank=r, world_size=world).batch(step) for r in range(world)]
    rows = [r for share in shares for r, _ in share]
    assert len(rows) == len(set(rows)) == n * k
    single = MixedContextSampler(ex, descs, n, k, seed=3).batch(step)
    assert [x for share in shares for x in share] == single


def test_iter_and_resume_see_the_same_batches():
    ex, descs = _data()
    s = MixedContextSampler(ex, descs, 2, 2, seed=5)
    it = iter(s)
    first = [next(it) for _ in range(3)]
    state = s.state_dict()
    rest = [next(it) for _ in range(3)]
    resumed = MixedContextSampler(ex, descs, 2, 2, seed=5)
    resumed.load_state_dict(state)
    assert resumed.step == 3
    it2 = iter(resumed)
    assert [next(it2) for _ in range(3)] == rest
    assert rest != first


def test_load_state_dict_rejects_a_different_setup():
    ex, descs = _data()
    state = MixedContextSampler(ex, descs, 2, 2, seed=5).state_dict()
    with pytest.raises(ValueError, match=r"state\['seed'\]: saved 5 differs from this sampler's 6"):
        MixedContextSampler(ex, descs, 2, 2, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="state: missing key 'k'"):
        MixedContextSampler(ex, descs, 2, 2, seed=5).load_state_dict({"step": 1, "seed": 5, "n_contexts": 2})


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_contexts=7, k=1), r"n_contexts: expected at most the 6 contexts"),
    (dict(n_contexts=2, k=6), r"k: every context needs at least k=6 examples"),
    (dict(n_contexts=3, k=1, world_size=2), r"world_size: must divide n_contexts\*k = 3, got 2"),
    (dict(n_contexts=2, k=1, world_size=2, rank=2), r"rank: expected an int in \[0, 2\), got 2"),
    (dict(n_contexts=0, k=1), r"n_contexts: expected a positive int, got 0"),
])
def test_bad_arguments(kwargs, message):
    ex, descs = _data()
    with pytest.raises(ValueError, match=message):
        MixedContextSampler(ex, descs, **kwargs)


def test_context_without_descriptions_is_an_error():
    ex, descs = _data()
    descs["c2"] = []
    with pytest.raises(ValueError, match=r"descriptions: contexts \['c2'\] have examples but no training"):
        MixedContextSampler(ex, descs, 2, 1)
