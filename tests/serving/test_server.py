"""The live server through the official openai client and raw HTTP: answers equal the library's, errors are
OpenAI-shaped 4xx and the server keeps serving."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from tests.serving.conftest import CONTEXT_LENGTH, OWN_CONTEXTS, LiveServer, http, openai_client

PROMPTS = ["What is the capital of France?", "Name a colour.", "How many legs has a spider?", "Say hello.",
           "Why is the sky blue?", "Count to three.", "What is 2 + 2?", "Give me a fruit."]
DESCRIPTIONS = ["Answer like a German.", "Reply in upper case.", "Use exactly three bullet points.",
                "Answer in French.", "Be extremely brief.", "Answer with a question.", "Rhyme every line.",
                "Sign off with your name."]


def ask(client, prompt, description=None, model="zhyper", extra_body=None, **kw):
    """One chat completion (greedy unless told otherwise); the description goes in the body as extra_body."""
    extra = dict(extra_body or {})
    if description is not None:
        extra["description"] = description
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          extra_body=extra or None, **kw)


def test_one_request_equals_library_generate(client, reference):
    out = ask(client, PROMPTS[0], DESCRIPTIONS[0], max_tokens=8)
    want = reference.generate([PROMPTS[0]], [DESCRIPTIONS[0]], max_new_tokens=8)[0]
    assert out.choices[0].message.content == want
    assert out.choices[0].finish_reason == "length" and out.choices[0].message.role == "assistant"
    n_prompt = len(reference.tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                                           add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"])
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (n_prompt, 8, n_prompt + 8)
    other = ask(client, PROMPTS[0], DESCRIPTIONS[1], max_tokens=8)
    assert other.choices[0].message.content != want  # the description changes the answer


def test_streaming_sends_openai_chunks_then_done(client, live):
    whole = ask(client, PROMPTS[1], DESCRIPTIONS[2], max_tokens=10).choices[0].message.content
    stream = ask(client, PROMPTS[1], DESCRIPTIONS[2], max_tokens=10, stream=True,
                 stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].choices == []
    # the raw wire format: "data: {...}\n\n" events, the last one "data: [DONE]"
    body = json.dumps({"model": "zhyper", "messages": [{"role": "user", "content": PROMPTS[1]}], "stream": True,
                       "max_tokens": 4, "temperature": 0, "description": DESCRIPTIONS[2]}).encode()
    status, headers, raw = http("POST", f"{live[0]}/v1/chat/completions", body)
    events = raw.decode().split("\n\n")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_eight_concurrent_descriptions_batch_and_equal_the_library(client, live, reference):
    engine = live[1]
    steps_before = engine.stats["steps"]
    n = 12
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(client, PROMPTS[i], DESCRIPTIONS[i], max_tokens=n), range(8)))
    got = [a.choices[0].message.content for a in answers]
    want = [reference.generate([p], [d], max_new_tokens=n)[0] for p, d in zip(PROMPTS, DESCRIPTIONS)]
    assert got == want
    # batched: one at a time would take 8 x (n - 1) decode steps
    assert engine.stats["steps"] - steps_before < 8 * (n - 1)
    # the twin: each answer depends on its description (same prompts, descriptions rotated)
    rotated = [reference.generate([p], [d], max_new_tokens=n)[0] for p, d in zip(PROMPTS, DESCRIPTIONS[1:] + DESCRIPTIONS[:1])]
    assert sum(a != b for a, b in zip(got, rotated)) >= 6


def test_no_description_is_exactly_the_base_model(client, reference):
    from zhyper.generation import generate_texts

    with reference.adapters_off():
        want = generate_texts(reference.base, reference.tokenizer, PROMPTS[:2], ["", ""], max_new_tokens=8)
    got = [ask(client, p, None, max_tokens=8).choices[0].message.content for p in PROMPTS[:2]]
    assert got == want
    assert ask(client, PROMPTS[0], DESCRIPTIONS[0], max_tokens=8).choices[0].message.content != want[0]


def test_named_contexts(client, reference):
    from zhyper.serving.contexts import builtin_contexts

    upper = builtin_contexts()["upper_case"]
    named = ask(client, PROMPTS[0], model="zhyper:pirate", max_tokens=8)
    own = named.choices[0].message.content
    assert own == reference.generate([PROMPTS[0]], [OWN_CONTEXTS["pirate"][0]], max_new_tokens=8)[0]
    assert named.model == "zhyper:pirate"
    # a built-in rule the checkpoint's contexts.json does not list: refused, with the description to send instead
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, PROMPTS[0], model="zhyper:upper_case", max_tokens=8)
    assert err.value.body["code"] == "untrained_context" and upper in err.value.body["message"]
    explicit = ask(client, PROMPTS[0], upper, max_tokens=8).choices[0].message.content
    assert explicit == reference.generate([PROMPTS[0]], [upper], max_new_tokens=8)[0]
    assert own != explicit
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, PROMPTS[0], model="zhyper:no_such_rule", max_tokens=2)
    assert err.value.body["code"] == "model_not_found" and "zhyper:upper_case" in err.value.body["message"]
    assert "zhyper:pirate" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        ask(client, PROMPTS[0], model="gpt-4o", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="not both"):
        ask(client, PROMPTS[0], "Reply in upper case.", model="zhyper:upper_case", max_tokens=2)


def test_models_and_health(client, live):
    cards = client.models.list().data
    ids = [m.id for m in cards]
    assert ids[:2] == ["zhyper", "zhyper:pirate"] and {"zhyper:upper_case", "zhyper:json_answer"} <= set(ids)
    trained = {m.id: m.model_extra.get("trained") for m in cards[1:]}
    assert trained["zhyper:pirate"] is True and trained["zhyper:upper_case"] is False  # listed, flagged untrained
    assert client.models.retrieve("zhyper:pirate").id == "zhyper:pirate"
    status, _, raw = http("GET", f"{live[0]}/health")
    body = json.loads(raw)
    assert status == 200 and body["status"] == "ok" and body["max_batch"] == 8


def test_stop_seed_and_top_p(client):
    full = ask(client, PROMPTS[2], DESCRIPTIONS[3], max_tokens=12).choices[0]
    assert full.finish_reason == "length"
    stop = full.message.content[5:8]
    cut = ask(client, PROMPTS[2], DESCRIPTIONS[3], max_tokens=12, stop=[stop, "\u2603never"]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full.message.content[:full.message.content.find(stop)]
    streamed = ask(client, PROMPTS[2], DESCRIPTIONS[3], max_tokens=12, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut.message.content

    def sample(seed, **kw):
        return ask(client, PROMPTS[3], DESCRIPTIONS[4], max_tokens=10, temperature=1.0, seed=seed,
                   **kw).choices[0].message.content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)  # the seed matters
    greedy = ask(client, PROMPTS[3], DESCRIPTIONS[4], max_tokens=10).choices[0].message.content
    assert sample(7, top_p=1e-6) == greedy  # top_p keeps only the most likely token
    assert sample(7) != greedy


def test_repeated_description_never_reruns_the_hypernetwork(client, live):
    engine = live[1]
    calls = []
    hook = engine.model.hypernet.register_forward_hook(lambda *a: calls.append(1))
    try:
        fresh = "Answer as a cache test would."
        for _ in range(3):
            ask(client, PROMPTS[0], fresh, max_tokens=2)
        assert len(calls) == 1
        ask(client, PROMPTS[0], fresh + " Twice.", max_tokens=2)
        assert len(calls) == 2  # a new description does run it
    finally:
        hook.remove()


def error(status_body):
    status, _, raw = status_body
    return status, json.loads(raw)["error"]


def test_bad_input_gets_openai_errors_and_the_server_keeps_serving(client, live):
    url = f"{live[0]}/v1/chat/completions"
    ok = {"model": "zhyper", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}

    status, err = error(http("POST", url, b'{"messages": [ {"role": "user"'))
    assert status == 400 and err["code"] == "invalid_json" and "malformed JSON" in err["message"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    status, err = error(http("POST", url, json.dumps({"model": "zhyper"}).encode()))
    assert status == 400 and err["param"] == "messages" and "required" in err["message"]
    status, err = error(http("POST", url, json.dumps({**ok, "messages": []}).encode()))
    assert status == 400 and err["param"] == "messages"
    status, err = error(http("POST", url, json.dumps({**ok, "max_tokens": -3}).encode()))
    assert status == 400 and err["param"] == "max_tokens" and "-3" in err["message"]
    status, err = error(http("POST", url, json.dumps({**ok, "messages": [{"role": "robot", "content": "x"}]}).encode()))
    assert status == 400 and "robot" in err["message"]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    status, err = error(http("POST", url, json.dumps({**ok, "messages": image}).encode()))
    assert status == 400 and err["param"] == "messages.0.content" and "text" in err["message"]
    status, err = error(http("POST", url, json.dumps({**ok, "temperature": 3}).encode()))
    assert status == 400 and err["param"] == "temperature"
    status, err = error(http("POST", url, json.dumps({**ok, "n": 2}).encode()))
    assert status == 400 and err["param"] == "n" and err["code"] == "unsupported_parameter"
    status, err = error(http("POST", url, json.dumps({**ok, "description": "  "}).encode()))
    assert status == 400 and err["param"] == "description"
    status, err = error(http("POST", url, b"[1, 2]"))
    assert status == 400 and "JSON object" in err["message"]
    long_prompt = {**ok, "messages": [{"role": "user", "content": "word " * (CONTEXT_LENGTH + 10)}]}
    status, err = error(http("POST", url, json.dumps(long_prompt).encode()))
    assert status == 400 and err["code"] == "context_length_exceeded" and str(CONTEXT_LENGTH) in err["message"]
    status, err = error(http("POST", url, json.dumps({**ok, "max_tokens": CONTEXT_LENGTH}).encode()))
    assert status == 400 and err["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        ask(client, "Hi", max_tokens=-1)
    status, err = error(http("GET", f"{live[0]}/v1/nothing"))
    assert status == 404 and err["type"] == "not_found_error"
    # still healthy, still answering
    assert json.loads(http("GET", f"{live[0]}/health")[2])["status"] == "ok"
    status, _, raw = http("POST", url, json.dumps(ok).encode())
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 2


def test_full_queue_answers_429_and_a_dropped_stream_frees_its_row(checkpoint):
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=1, max_queue=1, cache_size=4)
    server = LiveServer(app)
    try:
        client = openai_client(server.url)
        long = ask(client, "Tell a long story.", max_tokens=CONTEXT_LENGTH - 64, temperature=0, stream=True,
                   extra_body={"ignore_eos": True})
        assert next(iter(long)).choices[0].delta.role == "assistant"
        while engine.active == 0:
            time.sleep(0.01)
        waiting = {}
        t = threading.Thread(target=lambda: waiting.update(out=ask(client, "Hi", max_tokens=2)))
        t.start()
        while engine.queued == 0:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as err:
            ask(client, "Hi", max_tokens=2)
        assert err.value.status_code == 429 and err.value.body["code"] == "queue_full"
        assert err.value.response.headers["retry-after"] == "1"
        long.close()  # the client goes away: the long row leaves the batch, the waiting request runs
        t.join(60)
        assert waiting["out"].choices[0].finish_reason == "length"
        assert engine.stats["tokens"] < CONTEXT_LENGTH - 64  # the long request did not run to its end
        assert ask(client, "Hi", max_tokens=2).usage.completion_tokens == 2
    finally:
        server.close()
    assert not engine.running  # the app's lifespan stopped the engine it started


@pytest.mark.slow
def test_smollm2_server_batches_descriptions_like_the_library(tmp_path):
    """The real SmolLM2-135M-Instruct: 4 concurrent requests, 4 descriptions, each equal to generate()."""
    from zhyper import ZhyperConfig, ZhyperModel
    from zhyper.serving.app import build_app
    from tests.model_helpers import perturb

    model = perturb(ZhyperModel.from_base("smollm2", ZhyperConfig()), scale=0.5).eval()
    model.save_pretrained(tmp_path / "ckpt")
    app, engine = build_app(tmp_path / "ckpt", max_batch=8)
    server = LiveServer(app)
    try:
        client = openai_client(server.url)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: ask(client, PROMPTS[i], DESCRIPTIONS[i], max_tokens=12), range(4)))
        want = [model.generate([p], [d], max_new_tokens=12)[0] for p, d in zip(PROMPTS[:4], DESCRIPTIONS[:4])]
        assert [g.choices[0].message.content for g in got] == want
        base = ask(client, PROMPTS[0], None, max_tokens=12).choices[0].message.content
        with torch.no_grad(), model.adapters_off():
            from zhyper.generation import generate_texts

            assert base == generate_texts(model.base, model.tokenizer, PROMPTS[:1], [""], max_new_tokens=12)[0]
        assert base != want[0]
    finally:
        server.close()
