"""Several descriptions per request through the live server and the official openai client: a list of
descriptions, description_weights, combine, zhyper:<a>+<b>. Each "equals" has a twin that can differ."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.serving.conftest import OWN_CONTEXTS, LiveServer, http, make_checkpoint, openai_client

P = ["What is the capital of France?", "Name a colour.", "How many legs has a spider?", "Say hello."]
A, B, C = "Answer in all capital letters.", "Wrap the whole answer in JSON.", "Answer like a German."
N = 10


def ask(client, prompt, description=None, model="zhyper", **extra):
    """Greedy answer text; description, description_weights and combine go in the body (extra_body)."""
    body = {k: v for k, v in {"description": description, **extra}.items() if v is not None}
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                         temperature=0, max_tokens=N, extra_body=body or None)
    return out.choices[0].message.content


def lib(reference, prompt, description, **kw):
    return reference.generate([prompt], [description], max_new_tokens=N, **kw)[0]


def base_answer(reference, prompt):
    from zhyper.generation import generate_texts

    with reference.adapters_off():
        return generate_texts(reference.base, reference.tokenizer, [prompt], [""], max_new_tokens=N)[0]


def test_two_descriptions_equal_the_library_sum(client, reference):
    got = ask(client, P[0], [A, B])
    assert got == lib(reference, P[0], [A, B])
    # twin: the combination is neither description alone
    assert got != lib(reference, P[0], A) or got != lib(reference, P[0], B)
    stream = client.chat.completions.create(model="zhyper", messages=[{"role": "user", "content": P[0]}],
                                            temperature=0, max_tokens=N, stream=True, extra_body={"description": [A, B]})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == got
    weighted = ask(client, P[0], [A, B], description_weights=[0.2, 1.5])
    assert weighted == lib(reference, P[0], [A, B], weights=[[0.2, 1.5]])
    assert weighted != got  # twin: the weights change the answer


def test_weight_zero_is_the_base_model_and_weight_one_the_description(client, reference):
    base = base_answer(reference, P[1])
    assert ask(client, P[1], A, description_weights=[0.0]) == base
    assert ask(client, P[1], [A, B], description_weights=[0, 0]) == base
    one = ask(client, P[1], A, description_weights=[1.0])
    assert one == ask(client, P[1], A) == lib(reference, P[1], A)
    assert one != base  # twin: weight 1 is the description, not the base model
    # the strength dial above 1 is the library's, and differs from 1
    strong = ask(client, P[1], A, description_weights=[3.0])
    assert strong == lib(reference, P[1], [A], weights=[[3.0]]) and strong != one


def test_a_description_twice_is_the_description(client, reference):
    alone = ask(client, P[2], C)
    assert ask(client, P[2], [C, C]) == alone
    assert ask(client, P[2], [C, C], description_weights=[0.25, 0.75]) == alone
    assert ask(client, P[2], [C, A]) != alone  # twin: another second description changes it


def test_named_contexts_joined_by_plus_equal_their_descriptions(client, reference):
    pirate, formal = OWN_CONTEXTS["pirate"][0], OWN_CONTEXTS["formal"][0]
    both = ask(client, P[3], model="zhyper:pirate+formal")
    assert both == ask(client, P[3], [pirate, formal]) == lib(reference, P[3], [pirate, formal])
    assert both != ask(client, P[3], model="zhyper:pirate")  # twin: the second context counts
    weighted = ask(client, P[3], model="zhyper:pirate+formal", description_weights=[1.0, 0.0])
    assert weighted == ask(client, P[3], model="zhyper:pirate") != both


def test_combine_text_joins_into_one_cached_description(client, live, reference):
    engine = live[1]
    got = ask(client, P[0], [A, C], combine="text")
    assert got == lib(reference, P[0], [A, C], combine="text") == lib(reference, P[0], f"{A} {C}")
    assert f"{A} {C}" in engine.cache
    assert got != ask(client, P[0], [A, C])  # twin: joining the texts is not summing the modulations


def test_each_description_is_computed_once(client, live):
    cache = live[1].cache
    x, y = "Use short words only, please.", "End with an exclamation mark, always."
    before = cache.misses
    ask(client, P[0], [x, y])
    assert cache.misses == before + 2
    ask(client, P[1], [y, x], description_weights=[2.0, 0.5])
    ask(client, P[2], x)
    assert cache.misses == before + 2  # their rows come from the cache
    ask(client, P[2], [x, "A third rule, new here."])
    assert cache.misses == before + 3  # twin: a new description is computed


def test_mixed_batch_answers_each_request_as_alone(client, live, reference):
    engine = live[1]
    pirate = OWN_CONTEXTS["pirate"][0]
    jobs = [(P[0], dict(description=A)), (P[1], dict(description=[A, B])), (P[2], dict()),
            (P[3], dict(description=[B, C], description_weights=[0.3, 1.2])), (P[0], dict(model="zhyper:pirate+formal")),
            (P[1], dict(description=[C, A], combine="text")), (P[2], dict(description=C, description_weights=[0.0])),
            (P[3], dict(description=[A, A, B]))]
    steps = engine.stats["steps"]
    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda job: ask(client, job[0], **job[1]), jobs))
    assert engine.stats["steps"] - steps < len(jobs) * (N - 1)  # they shared decode steps
    want = [lib(reference, P[0], A), lib(reference, P[1], [A, B]), base_answer(reference, P[2]),
            lib(reference, P[3], [B, C], weights=[[0.3, 1.2]]),
            lib(reference, P[0], [pirate, OWN_CONTEXTS["formal"][0]]),
            lib(reference, P[1], [C, A], combine="text"), base_answer(reference, P[2]),
            lib(reference, P[3], [A, A, B])]
    assert got == want
    alone = [ask(client, prompt, **kw) for prompt, kw in jobs]
    assert got == alone
    # twin: the answers depend on the conditioning (the same prompts with the plain base model)
    assert sum(g != base_answer(reference, p) for g, (p, _) in zip(got, jobs)) >= 5


def error(status_body):
    status, _, raw = status_body
    return status, json.loads(raw)["error"]


@pytest.mark.parametrize("extra, param, words", [
    ({"description": []}, "description", "non-empty list"),
    ({"description": [A, 3]}, "description", "item 1: expected a non-empty string, got 3"),
    ({"description": [A, " "]}, "description", "item 1"),
    ({"description": {"a": 1}}, "description", "a string or a non-empty list"),
    ({"description": [A] * 9}, "description", "at most 8"),
    ({"description": [A, B], "description_weights": [1.0]}, "description_weights", "expected 2 number(s)"),
    ({"description": A, "description_weights": [1.0, 2.0]}, "description_weights", "expected 1 number(s)"),
    ({"description": [A, B], "description_weights": [1.0, True]}, "description_weights", "item 1: expected a finite"),
    ({"description": [A, B], "description_weights": [1.0, "2"]}, "description_weights", "finite number"),
    ({"description": A, "description_weights": 0.5}, "description_weights", "a list of numbers"),
    ({"description": A, "description_weights": []}, "description_weights", "a list of numbers"),
    ({"description": [A, B], "combine": "sum"}, "combine", "['modulation', 'text']"),
    ({"description": [A, B], "combine": "text", "description_weights": [1, 2]}, "description_weights",
     "combine='modulation' only"),
    ({"description_weights": [0.5]}, "description_weights", "neither"),
    ({"combine": "text"}, "combine", "neither"),
    ({"description": [A, "x" * 2001]}, "description", "2001 characters"),
    ({"description": [A, B], "model": "zhyper:pirate"}, "description", "not both"),
    ({"model": "zhyper:pirate+formal", "description_weights": [1.0]}, "description_weights", "expected 2"),
])
def test_bad_combinations_are_400s_naming_the_field(live, extra, param, words):
    body = {"model": "zhyper", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **extra}
    status, err = error(http("POST", f"{live[0]}/v1/chat/completions", json.dumps(body).encode()))
    assert status == 400 and err["param"] == param and words in err["message"], err


def test_non_finite_weights_and_unknown_contexts(client, live):
    url = f"{live[0]}/v1/chat/completions"
    raw = b'{"messages": [{"role": "user", "content": "Hi"}], "description": ["a", "b"], "description_weights": [1, NaN]}'
    status, err = error(http("POST", url, raw))
    assert status == 400 and err["param"] == "description_weights" and "NaN" in err["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "Hi", [A, B], description_weights=[1e300, 1.0])
    assert exc.value.body["code"] == "invalid_weights" and "smaller weights" in exc.value.body["message"]
    with pytest.raises(openai.NotFoundError) as exc:
        ask(client, "Hi", model="zhyper:pirate+nope")
    assert "'nope'" in exc.value.body["message"] and "zhyper:formal" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        ask(client, "Hi", model="zhyper:pirate+upper_case")
    assert exc.value.body["code"] == "untrained_context" and "'upper_case'" in exc.value.body["message"]
    assert ask(client, "Hi", [A, B]) is not None  # the server keeps serving


def test_full_mode_refuses_the_sum_and_joins_the_text(tmp_path):
    from zhyper.serving.app import build_app

    app, _ = build_app(make_checkpoint(tmp_path, mode="full"), max_batch=4, cache_size=8)
    server = LiveServer(app)
    try:
        client = openai_client(server.url)
        with pytest.raises(openai.BadRequestError) as exc:
            ask(client, P[0], [A, B])
        assert exc.value.body["param"] == "combine" and "full mode" in exc.value.body["message"]
        with pytest.raises(openai.BadRequestError) as exc:
            ask(client, P[0], A, description_weights=[0.5])
        from zhyper import compose  # the library's one message, with advice that works (not "combine='text'")

        message = compose.full_mode_refusal(compose.entries([A], [0.5])).replace("weights:", "description_weights:", 1)
        assert exc.value.body["message"] == message and "drop the weights" in message
        joined = ask(client, P[0], [A, B], combine="text")
        assert joined == ask(client, P[0], f"{A} {B}")
        assert joined != ask(client, P[0], [B, A], combine="text") or joined != ask(client, P[0], A)
    finally:
        server.close()


def test_engine_library_call_and_request_checks(live, reference):
    from zhyper.serving.engine import Request, SamplingParams

    engine = live[1]
    out = engine.generate([P[0], P[1], P[2]], [[A, B], C, [A, C]], weights=[[0.2, 1.0], None, None], max_tokens=N)
    assert [o["text"] for o in out] == [lib(reference, P[0], [A, B], weights=[[0.2, 1.0]]), lib(reference, P[1], C),
                                        lib(reference, P[2], [A, C])]
    text = engine.generate([P[0]], [[A, B]], combine="text", max_tokens=N)[0]["text"]
    assert text == lib(reference, P[0], f"{A} {B}") != out[0]["text"]
    sp, sink = SamplingParams(max_tokens=1), lambda event: None
    with pytest.raises(ValueError, match="without a description"):
        Request([1], None, sp, sink, weights=(1.0,))
    with pytest.raises(ValueError, match="1 to 8"):
        Request([1], ("a",) * 9, sp, sink)
    with pytest.raises(ValueError, match=r"expected 2 number\(s\)"):
        Request([1], ("a", "b"), sp, sink, weights=(1.0,))
    with pytest.raises(ValueError, match="finite"):
        Request([1], ("a", "b"), sp, sink, weights=(1.0, float("inf")))
    assert Request([1], ("a", "b"), sp, sink).weights == (0.5, 0.5)
