"""Operations and reliability of the live server: /metrics (parsed with prometheus-client's parser), /health and
/ready, the drain, the API key, limits, the admission window, fault isolation, strict schemas, non-finite
modulations. Real uvicorn, the official openai client, the tiny real checkpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from tests.serving.conftest import LiveServer, http, openai_client
from tests.serving.test_server import DESCRIPTIONS, PROMPTS, ask


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of /metrics, read with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, raw = http("GET", f"{url}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(raw.decode()) for s in family.samples}


def chat_body(**kw) -> bytes:
    body = {"model": "zhyper", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
    return json.dumps({**body, **kw}).encode()


@pytest.fixture(scope="module")
def windowed(checkpoint):
    """(url, engine) of a server with a 1 s admission window and max_batch 6."""
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=6, max_queue=64, cache_size=64, admit_window=1.0)
    server = LiveServer(app)
    yield server.url, engine
    server.close()


def test_metrics_count_requests_tokens_batches_and_cache(client, live):
    url = live[0]
    before = scrape(url)
    ask(client, PROMPTS[0], "Answer as a metrics test would.", max_tokens=5)
    ask(client, PROMPTS[0], "Answer as a metrics test would.", max_tokens=5)
    assert http("POST", f"{url}/v1/chat/completions", chat_body(max_tokens=-1))[0] == 400
    after = scrape(url)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("zhyper_http_requests_total", route="/v1/chat/completions", status="200") == 2
    assert delta("zhyper_http_requests_total", route="/v1/chat/completions", status="400") == 1
    assert delta("zhyper_completion_tokens_total") == 10
    assert delta("zhyper_prompt_tokens_total") > 0
    assert delta("zhyper_zcache_misses_total") == 1 and delta("zhyper_zcache_hits_total") == 1
    assert delta("zhyper_batch_size_count") >= 8 and delta("zhyper_queue_wait_seconds_count") == 2
    assert after[("zhyper_in_flight", ())] == 0 and after[("zhyper_draining", ())] == 0
    # the twin: a scrape with no request in between shows no change
    again = scrape(url)
    assert again[("zhyper_completion_tokens_total", ())] == after[("zhyper_completion_tokens_total", ())]


def test_two_apps_in_one_process_keep_their_own_registries(live):
    from zhyper.serving.app import create_app

    engine = live[1]
    first, second = create_app(engine), create_app(engine)  # the global registry would refuse the second
    assert first.state.server.metrics.registry is not second.state.server.metrics.registry
    engine.listeners[:] = engine.listeners[:-2]  # leave the live app's own listener only


def test_health_ready_and_drain_finish_in_flight_and_refuse_new(checkpoint):
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=4)
    server = LiveServer(app)
    url, client = server.url, openai_client(server.url)
    assert http("GET", f"{url}/ready")[0] == 200 and http("GET", f"{url}/health")[0] == 200
    stream = ask(client, "Tell a long story.", max_tokens=900, stream=True, extra_body={"ignore_eos": True})
    chunks = [next(iter(stream))]
    result = {}
    drainer = threading.Thread(target=lambda: result.update(idle=server.drain(timeout=120)))
    drainer.start()
    while not app.state.ops.draining:
        time.sleep(0.01)
    status, _, raw = http("GET", f"{url}/ready")
    assert status == 503 and "draining" in json.loads(raw)["reasons"][0]
    status, headers, raw = http("POST", f"{url}/v1/chat/completions", chat_body())
    assert status == 503 and json.loads(raw)["error"]["code"] == "draining" and headers["retry-after"] == "5"
    assert http("GET", f"{url}/health")[0] == 200  # alive while draining
    chunks += list(stream)  # the request in flight completes
    drainer.join(120)
    assert result["idle"] is True and not engine.running
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 50


def test_api_key_required_on_v1_never_logged(checkpoint, caplog):
    from zhyper.serving.app import build_app

    key = "s3cret-key-for-the-test"
    app, _ = build_app(checkpoint, max_batch=2, api_key=key)
    server = LiveServer(app)
    try:
        with caplog.at_level(logging.INFO, logger="zhyper.serving"):
            url = server.url
            with pytest.raises(openai.AuthenticationError) as err:
                openai_client(url).models.list()  # api_key "unused"
            assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
            status, headers, raw = http("POST", f"{url}/v1/chat/completions", chat_body())
            assert status == 401 and headers["www-authenticate"] == "Bearer" and "Bearer" in raw.decode()
            good = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
            out = good.chat.completions.with_raw_response.create(
                model="zhyper", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
            rid = out.headers["x-request-id"]
            assert out.parse().id == f"chatcmpl-{rid}" and out.parse().usage.completion_tokens == 2
            for probe in ("/health", "/ready", "/metrics"):  # open for probes and scrapers
                assert http("GET", url + probe)[0] == 200
        assert key not in caplog.text
        lines = [r.getMessage() for r in caplog.records if r.name == "zhyper.serving.ops"]
        assert any(line.startswith(rid) and "/v1/chat/completions 200" in line for line in lines)
        assert sum(" 401 " in line for line in lines) == 2  # one access-log line per request
    finally:
        server.close()


def test_description_past_the_encoders_window_is_refused(client, live, reference):
    long = "word " * 300  # about 302 MiniLM tokens: past its 256-token window
    a, b = reference.encode_descriptions([long + "Answer in French.", long + "Answer in German."])
    assert torch.equal(a, b)  # what the limit prevents: the encoder silently drops the difference
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "Hi", long + "Answer in French.", max_tokens=2)
    assert err.value.body["code"] == "description_too_long" and "256" in err.value.body["message"]
    # the twin: inside the window it is served
    assert ask(client, "Hi", "word " * 200 + "Answer in French.", max_tokens=2).usage.completion_tokens == 2


def test_limits_give_clear_4xx(checkpoint):
    from zhyper.serving.app import build_app
    from zhyper.serving.limits import Limits

    limits = Limits(max_tokens=8, max_description_chars=50, max_body_bytes=3000)
    app, engine = build_app(checkpoint, max_batch=2, limits=limits)
    fits = [{"role": "user", "content": "word " * 20}]
    limits.max_prompt_tokens = len(engine.encode_chat(fits))  # the templated prompt's tokens, exactly
    server = LiveServer(app)
    try:
        url = f"{server.url}/v1/chat/completions"

        def err(body):
            status, _, raw = http("POST", url, body)
            return status, json.loads(raw)["error"] if status != 200 else None

        long_prompt = [{"role": "user", "content": "word " * 21}]
        assert err(chat_body(messages=long_prompt))[1]["code"] == "prompt_too_long"
        status, e = err(chat_body(max_tokens=9))
        assert status == 400 and e["code"] == "max_tokens_too_large" and "8" in e["message"]
        status, e = err(chat_body(description="x" * 51))
        assert status == 400 and e["param"] == "description" and "50" in e["message"]
        status, e = err(chat_body(messages=[{"role": "user", "content": "y" * 4000}]))
        assert status == 413 and e["code"] == "body_too_large"
        # the twins: at the limits it is served
        assert err(chat_body(max_tokens=8, description="x" * 50))[0] == 200
        assert err(chat_body(messages=fits))[0] == 200
    finally:
        server.close()


def test_admission_window_puts_staggered_requests_in_one_prefill(windowed, checkpoint, reference):
    from zhyper.serving.app import build_app

    def staggered(url, n=4, gap=0.1):
        client = openai_client(url)

        def one(i):
            time.sleep(i * gap)
            return ask(client, PROMPTS[i], DESCRIPTIONS[i], max_tokens=4).choices[0].message.content
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))

    url, engine = windowed
    before = engine.stats["prefills"]
    got = staggered(url)
    assert engine.stats["prefills"] - before == 1
    assert got == [reference.generate([p], [d], max_new_tokens=4)[0] for p, d in zip(PROMPTS[:4], DESCRIPTIONS[:4])]
    # the twin: without a window the same arrivals are prefilled apart
    app, plain = build_app(checkpoint, max_batch=6, admit_window=0.0)
    server = LiveServer(app)
    try:
        assert staggered(server.url) == got and plain.stats["prefills"] > 1
    finally:
        server.close()


def test_admission_window_ends_when_the_batch_is_full(checkpoint):
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=2, admit_window=10.0)
    server = LiveServer(app)
    try:
        client, started = openai_client(server.url), time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: ask(client, PROMPTS[i], max_tokens=2), range(2)))
        assert time.monotonic() - started < 8 and engine.stats["prefills"] == 1  # the cap, not the 10 s window
    finally:
        server.close()


def test_extreme_temperature_fails_nobody_in_its_batch(windowed, reference):
    url, engine = windowed
    client = openai_client(url)
    jobs = [dict(temperature=0)] * 3 + [dict(temperature=1e-45, seed=3), dict(temperature=5e-324, seed=4)]
    before = engine.stats["prefills"]
    with ThreadPoolExecutor(len(jobs)) as pool:  # within the 1 s window: one prefill, one batch
        got = list(pool.map(lambda i: ask(client, PROMPTS[i], DESCRIPTIONS[i], max_tokens=6, **jobs[i])
                            .choices[0].message.content, range(len(jobs))))
    assert engine.stats["prefills"] - before == 1
    alone = [reference.generate([p], [d], max_new_tokens=6)[0] for p, d in zip(PROMPTS[:5], DESCRIPTIONS[:5])]
    assert got == alone  # the greedy rows as alone; a temperature near 0 samples the argmax, without inf / NaN
    # the twin: the answers depend on the description, so the equality could fail
    assert got[0] != reference.generate([PROMPTS[0]], [DESCRIPTIONS[1]], max_new_tokens=6)[0]


def test_types_are_as_strict_as_openai(live):
    url = f"{live[0]}/v1/chat/completions"

    def refused(**kw):
        status, _, raw = http("POST", url, chat_body(**kw))
        assert status == 400, (kw, raw)
        return json.loads(raw)["error"]

    e = refused(temperature=True)
    assert e["param"] == "temperature" and e["message"] == "temperature: expected a number, got true (a boolean)"
    assert refused(max_tokens="2")["param"] == "max_tokens"
    assert refused(top_p=True)["param"] == "top_p"
    assert refused(stream=1)["param"] == "stream"
    assert refused(seed=2 ** 70)["param"] == "seed"
    e = refused(messages=[{"role": "user", "content": None}])
    assert e["param"] == "messages.0.content" and "null" in e["message"]
    assert refused(messages=[{"role": "user"}])["param"] == "messages.0.content"
    # the twins: an integer temperature and a null assistant turn are valid
    assert http("POST", url, chat_body(temperature=1, seed=1))[0] == 200
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None},
             {"role": "user", "content": "Again"}]
    assert http("POST", url, chat_body(messages=turns))[0] == 200


@pytest.mark.parametrize("scale, code", [(1e30, "non_finite_output"), (1e40, "non_finite_modulation"),
                                         (1.0, None)])  # the twin: the same checkpoint unscaled answers
def test_overflowing_hypernetwork_is_an_error_naming_the_description(checkpoint, scale, code):
    from zhyper import ZhyperModel
    from zhyper.generation import generate_texts
    from zhyper.serving.app import create_app
    from zhyper.serving.engine import Engine

    model = ZhyperModel.from_pretrained(checkpoint).eval()
    with torch.no_grad(), model.adapters_off():
        base = generate_texts(model.base, model.tokenizer, PROMPTS[:3], [""] * 3, max_new_tokens=5)
    with torch.no_grad():
        for head in model.hypernet.heads.values():  # finite weights whose output overflows (1e30) or is inf (1e40)
            head.weight.mul_(scale)
            head.bias.mul_(scale)
    server = LiveServer(create_app(Engine(model, max_batch=8, admit_window=1.0), checkpoint="diverged-ckpt"))
    try:
        client = openai_client(server.url)
        description = "Answer in French."

        def one(i):
            try:
                return ask(client, PROMPTS[i], description if i == 0 else None, max_tokens=5).choices[0].message.content
            except openai.InternalServerError as err:
                return err
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(one, range(3)))
        err = got[0]
        assert got[1:] == base[1:]  # the base-model rows of the same batch are answered as alone
        if code is None:
            assert isinstance(err, str) and err != ""
            return
        assert isinstance(err, openai.InternalServerError) and err.body["code"] == code
        assert description in err.body["message"] and "diverged-ckpt" in err.body["message"]
    finally:
        server.close()
