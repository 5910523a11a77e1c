"""The batching engine without HTTP: the base-model row identity, rows joining and leaving a running batch,
the modulation LRU, named contexts, argument checks."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_llama
from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper import ZhyperModel
from zhyper.serving.cache import ModulationCache, cat_rows, zero_row
from zhyper.serving.engine import Engine, Event, QueueFull, Request, SamplingParams

DESCRIPTIONS = ["Answer like a German.", "Reply in upper case.", "Use exactly three bullet points."]


@pytest.mark.parametrize("mode", ["diag", "square", "full"])
def test_zero_modulation_row_is_exactly_the_base_model(mode):
    model = perturb(ZhyperModel.from_base(tiny_llama(), small_config(mode=mode)), scale=2.0).eval()
    ids = torch.randint(0, 97, (3, 9))
    from zhyper.layers.inject import modulate

    with torch.no_grad():
        with model.adapters_off():
            base = model.base(ids).logits
        zeros = cat_rows([zero_row(model)] * 3)
        with modulate(model.base, model.layout, zeros):
            served = model.base(ids).logits
        ones = torch.ones_like(zeros) if mode != "full" else model.modulation_for(DESCRIPTIONS)
        with modulate(model.base, model.layout, ones):
            adapted = model.base(ids).logits
    torch.testing.assert_close(served, base, rtol=0, atol=0)  # bit-exact: y + 0
    # the twin: z = 1 is the shared LoRA (and a description's modulation an adapter), not the base model
    assert (adapted - base).abs().max() > 1e-3


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    base = tiny_chat_base(tmp_path_factory.mktemp("engine") / "base")
    return perturb(ZhyperModel.from_base(str(base), small_config()), scale=2.0).eval()


def test_rows_join_a_running_batch_and_leave_when_done(chat_model):
    model = chat_model
    tok = model.tokenizer
    prompts = ["Tell a long story about the sea.", "Hi", "What is the capital of France, and why?"]
    limits = [200, 3, 10]
    descriptions = [DESCRIPTIONS[0], None, DESCRIPTIONS[2]]
    want = []
    for p, d, n in zip(prompts, descriptions, limits):
        if d is None:
            from zhyper.generation import generate_texts

            with model.adapters_off():
                want.append(generate_texts(model.base, tok, [p], [""], max_new_tokens=n)[0])
        else:
            want.append(model.generate([p], [d], max_new_tokens=n)[0])

    engine = Engine(model, max_batch=4).start()
    try:
        finished, texts, first_text = [], {}, threading.Event()
        done = threading.Semaphore(0)

        def sink_for(i):
            def sink(ev: Event):
                if ev.kind == "text":
                    first_text.set()
                elif ev.kind == "finish":
                    texts[i] = ev.text
                    finished.append(i)
                    done.release()
            return sink

        def request(i):
            ids = engine.encode_chat([{"role": "user", "content": prompts[i]}])
            return Request(ids, descriptions[i], SamplingParams(max_tokens=limits[i], temperature=0.0), sink_for(i))

        engine.submit(request(0))
        assert first_text.wait(60)  # row 0 is decoding: the next two join the running batch
        engine.submit_many([request(1), request(2)])
        for _ in range(3):
            assert done.acquire(timeout=120)
        assert [texts[i] for i in range(3)] == want
        assert finished[-1] == 0 and finished[0] == 1  # the short ones left without waiting for the long one
        assert engine.stats["prefills"] == 2 and engine.stats["peak_rows"] == 3
        assert engine.active == 0
        # the twin: row 2 with another description answers differently
        other = engine.generate([prompts[2]], [DESCRIPTIONS[1]], max_tokens=10)[0]["text"]
        assert other != want[2]
    finally:
        engine.stop()


def test_library_call_mixes_base_and_described_rows(chat_model):
    engine = Engine(chat_model, max_batch=8).start()
    try:
        prompts = ["Name a colour.", "Say hello.", "Count to three."]
        got = engine.generate(prompts, [DESCRIPTIONS[1], None, DESCRIPTIONS[1]], max_tokens=6)
        want = chat_model.generate(prompts, [DESCRIPTIONS[1]] * 3, max_new_tokens=6)
        assert [got[0]["text"], got[2]["text"]] == [want[0], want[2]]
        assert got[1]["text"] != want[1]  # the base row is not the adapted one
        assert {g["finish_reason"] for g in got} == {"length"} and got[0]["usage"]["completion_tokens"] == 6
    finally:
        engine.stop()


def test_the_last_finish_event_comes_after_the_model_is_released(chat_model):
    """A caller woken by the last answer may use the model at once: the engine's held modulation is gone
    (the layers are as before) when the finish event is sent, and installed while text streams (the twin)."""
    from zhyper.layers.zlinear import ZLinear

    layers = [m for m in chat_model.modules() if isinstance(m, ZLinear)]
    seen, done = {}, threading.Event()

    def sink(ev: Event):
        seen[ev.kind] = [m._modulation is None for m in layers]  # at the last event of each kind
        if ev.kind == "finish":
            done.set()

    engine = Engine(chat_model, max_batch=2).start()
    try:
        ids = engine.encode_chat([{"role": "user", "content": "Count to ten, please."}])
        engine.submit(Request(ids, DESCRIPTIONS[1], SamplingParams(max_tokens=6, temperature=0.0,
                                                                   ignore_eos=True), sink))
        assert done.wait(120)
    finally:
        engine.stop()
    assert all(seen["finish"])
    assert not any(seen["text"])


def test_modulation_cache_is_an_lru_that_skips_the_hypernetwork(chat_model):
    calls = []
    hook = chat_model.hypernet.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = ModulationCache(chat_model, size=2)
        first = cache.rows(["a b", "c d", "a b", None])
        assert len(calls) == 1 and cache.misses == 2  # one batched call for the two distinct misses
        torch.testing.assert_close(first[0], chat_model.modulation_for(["a b"]))
        assert len(calls) == 2
        assert first[0] is first[2] and torch.count_nonzero(first[3]) == 0
        cache.rows(["a b", "c d"])
        assert len(calls) == 2 and cache.hits == 2
        cache.rows(["e f"])  # evicts the least recently used ("a b")
        assert len(calls) == 3 and "a b" not in cache and "c d" in cache
        cache.rows(["a b"])
        assert len(calls) == 4
        off = ModulationCache(chat_model, size=0)  # the twin: no cache, every call runs the hypernetwork
        off.rows(["c d"])
        off.rows(["c d"])
        assert len(calls) == 6 and len(off) == 0
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="cache size: expected an int >= 0"):
        ModulationCache(chat_model, size=-1)


def test_queue_bound_and_argument_checks(chat_model):
    with pytest.raises(ValueError, match="max_batch: expected an int >= 1, got 0"):
        Engine(chat_model, max_batch=0)
    with pytest.raises(ValueError, match="max_tokens: expected an int >= 1, got -2"):
        SamplingParams(max_tokens=-2)
    with pytest.raises(ValueError, match=r"top_p: expected a number in \(0, 1\]"):
        SamplingParams(max_tokens=2, top_p=0)
    with pytest.raises(ValueError, match="stop: expected a tuple of non-empty strings"):
        SamplingParams(max_tokens=2, stop=("",))
    engine = Engine(chat_model, max_batch=1, max_queue=2)
    request = Request([1, 2, 3], None, SamplingParams(max_tokens=2), lambda ev: None)
    from zhyper.serving.engine import EngineStopped

    with pytest.raises(EngineStopped, match="call start"):
        engine.submit(request)
    with pytest.raises(ValueError, match="maximum context length is 256 tokens"):
        engine.check_prompt(250, 7)
    engine.check_prompt(250, 6)
    engine.start()
    try:
        with pytest.raises(QueueFull, match="max_queue 2"):
            engine.submit_many([Request([1, 2, 3], None, SamplingParams(max_tokens=2), lambda ev: None)
                                for _ in range(3)])
        assert engine.queued == 0  # all or none
    finally:
        engine.stop()


def test_contexts_file_and_builtin_names(tmp_path):
    from zhyper.serving.contexts import CONTEXTS_FILE, builtin_contexts, load_contexts, save_contexts

    builtin = builtin_contexts()
    assert {"upper_case", "json_answer", "five_words"} <= set(builtin) and len(builtin) == 29
    assert load_contexts(tmp_path) == builtin  # no contexts.json: the built-in names only
    save_contexts(tmp_path, {"pirate": ["Talk like a pirate.", "Arr."], "upper_case": "SHOUT."})
    got = load_contexts(tmp_path)
    assert got["pirate"] == "Talk like a pirate." and got["upper_case"] == "SHOUT."
    assert load_contexts(tmp_path, builtin=False) == {"pirate": "Talk like a pirate.", "upper_case": "SHOUT."}
    (tmp_path / CONTEXTS_FILE).write_text(json.dumps({"pirate": []}))
    with pytest.raises(ValueError, match="context 'pirate': expected a non-empty list"):
        load_contexts(tmp_path)
    (tmp_path / CONTEXTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="contexts.json: not valid JSON"):
        load_contexts(tmp_path)


@given(lengths=st.lists(st.integers(1, 40), max_size=12), budget=st.integers(1, 120))
@settings(max_examples=200, deadline=None)
def test_prefill_pieces_cover_every_row_once_in_order_within_the_budget(lengths, budget):
    from zhyper.serving.engine import prefill_pieces

    pieces = prefill_pieces(lengths, budget)
    assert [i for p in pieces for i in p] == list(range(len(lengths)))
    for p in pieces:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= budget
    for a, b in zip(pieces, pieces[1:]):  # greedy: the next row would not have fitted the piece before
        assert (len(a) + 1) * max(lengths[i] for i in a + b[:1]) > budget
    assert prefill_pieces(lengths, None) == ([list(range(len(lengths)))] if lengths else [])


def test_a_group_prefilled_in_pieces_answers_as_in_one_and_sends_first_tokens_between_pieces(chat_model):
    prompts = ["Name a colour.", "Say hello.", "Count to three.", "What is two plus two?"]
    descriptions = [DESCRIPTIONS[0], None, DESCRIPTIONS[1], DESCRIPTIONS[2]]
    whole = Engine(chat_model, max_batch=8).start()
    try:
        want = whole.generate(prompts, descriptions, max_tokens=5, ignore_eos=True)
        assert whole.stats["prefills"] == 1
    finally:
        whole.stop()
    log = []
    pieced = Engine(chat_model, max_batch=8, prefill_tokens=1)  # every prompt a piece of its own
    forward = pieced._forward
    pieced._forward = lambda *a, **k: (log.append(("forward", k.get("last_only", a[-1]))), forward(*a, **k))[1]
    accept = pieced._accept
    pieced._accept = lambda row, token: (log.append(("accept", None)), accept(row, token))[1]
    pieced.start()
    try:
        got = pieced.generate(prompts, descriptions, max_tokens=5, ignore_eos=True)
        assert pieced.stats["prefills"] == 4
        # the twin: a piece given another row's modulation answers otherwise, so the equality below can fail
        swapped = pieced.generate(prompts, descriptions[1:] + descriptions[:1], max_tokens=5, ignore_eos=True)
        assert [g["text"] for g in swapped] != [w["text"] for w in want]
    finally:
        pieced.stop()
    assert [g["text"] for g in got] == [w["text"] for w in want]
    kinds = [kind if kind != "forward" else ("prefill" if last else "step") for kind, last in log]
    # each piece's first token is taken (and its text sent) before the next piece's prefill runs
    kinds = kinds[:len(kinds) // 2]  # the first call's (the twin's call repeats the pattern)
    assert kinds[:8] == ["prefill", "accept"] * 4 and kinds[8:] == ["step", "accept", "accept", "accept", "accept"] * 4
    with pytest.raises(ValueError, match="prefill_tokens: expected None or an int >= 1, got 0"):
        Engine(chat_model, prefill_tokens=0)
