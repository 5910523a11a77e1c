"""The live server against a hostile or broken client: forged log lines, a 4 MB prompt, bodies too large, too
deep or never finished, lone surrogates, overflowing weights, private descriptions in the log, unsendable API
keys. Real uvicorn on a free port, raw sockets for what no well-behaved client sends."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from tests.serving.conftest import LiveServer, http
from tests.serving.test_ops import chat_body

CONTROL = {chr(c) for c in range(32)} | {"\x7f", "\x85", "\u2028", "\u2029"}


def raw_request(url: str, data: bytes, timeout: float = 20.0) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response to bytes sent as they are (the response read by Content-Length)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            piece = sock.recv(65536)
            assert piece, f"the server closed the connection without answering: {buf!r}"
            buf += piece
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
    return int(lines[0].split()[1]), headers, body


def post_head(length: int, extra: str = "") -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def served(records, name="zhyper") -> list[logging.LogRecord]:
    return [r for r in records if r.name.startswith(name)]


def test_control_characters_in_logged_text_are_escaped(live, caplog):
    url = live[0]
    with caplog.at_level(logging.DEBUG, logger="zhyper.serving"):
        forged = "/v1/models/x%0aINFO%20zhyper.serving.ops:%20forged%0d%0aline%1b[31m"
        status, _, _ = raw_request(url, f"GET {forged} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        assert status == 404
        # a header uvicorn puts in the log's client field (X-Forwarded-For from a trusted local proxy), with
        # a tab and a NEL (U+0085, a line break to str.splitlines and some log viewers)
        head = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 10.0.0.1\tvia\x85forged\r\n\r\n"
        assert raw_request(url, head)[0] == 200
        body = chat_body(description=["Be kind.\nWARNING forged", "Be brief."], description_weights=[1e30, 1.0])
        assert http("POST", f"{url}/v1/chat/completions", body)[0] == 400  # logged at DEBUG with its description
        # the twin: printable text, non-ASCII included, is logged as it is
        assert http("GET", f"{url}/v1/models/caf%C3%A9")[0] == 404
        time.sleep(0.2)  # the access log line is written after the response
    messages = [r.getMessage() for r in served(caplog.records)]
    assert any("x\\nINFO zhyper.serving.ops: forged\\r\\nline\\x1b[31m" in m for m in messages), messages
    assert any("Be kind.\\nWARNING forged" in m for m in messages), messages
    assert any("/v1/models/café 404" in m for m in messages), messages
    assert any("10.0.0.1\\tvia\\x85forged GET /health 200" in m for m in messages), messages
    bad = [m for m in messages if CONTROL & set(m)]
    assert bad == []


def test_health_and_chat_answer_while_a_4mb_prompt_is_tokenised_and_refused(live):
    url = live[0]
    big = chat_body(messages=[{"role": "user", "content": "hello world " * 330_000}])  # 4.0 MB, under 4 MiB
    assert 3_900_000 < len(big) < 4 * 1024 * 1024
    result, waits = {}, []
    worker = threading.Thread(target=lambda: result.update(r=http("POST", f"{url}/v1/chat/completions", big)))
    worker.start()
    time.sleep(0.1)
    assert http("POST", f"{url}/v1/chat/completions", chat_body())[0] == 200  # another client is served...
    assert "r" not in result  # ...while the 4 MB prompt is still being tokenised
    while worker.is_alive():
        started = time.monotonic()
        assert http("GET", f"{url}/health")[0] == 200
        waits.append(time.monotonic() - started)
        time.sleep(0.05)
    status, _, raw = result["r"]
    assert status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded"
    assert len(waits) >= 3 and max(waits) < 0.5, waits  # a generous bound: the event loop was never held


def test_body_size_and_depth_are_bounded_before_parsing(live):
    url = live[0]
    status, headers, raw = raw_request(url, post_head(5 * 1024 * 1024) + b'{"messages": [', timeout=20)
    error = json.loads(raw)["error"]
    assert status == 413 and error["code"] == "body_too_large" and "4194304" in error["message"]
    assert "--max-body-bytes" in error["message"] and headers.get("connection") == "close"
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _, raw = http("POST", f"{url}/v1/chat/completions", deep)
    error = json.loads(raw)["error"]
    assert status == 400 and error["code"] == "too_deep" and "64" in error["message"], error
    # the twin: nesting within the limit is parsed (and refused for what it is: messages of lists)
    status, _, raw = http("POST", f"{url}/v1/chat/completions", b'{"messages": ' + b"[" * 10 + b"]" * 10 + b"}")
    assert status == 400 and json.loads(raw)["error"]["param"] == "messages.0"


@pytest.mark.parametrize("field, value, param", [
    ("description", "Be \ud800 kind.", "description"),
    ("description", ["Be kind.", "Be \udfff brief."], "description.1"),
    ("messages", [{"role": "user", "content": "Hi \ud83d"}], "messages.0.content"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": "\udc00"}]}], "messages.0.content.0.text"),
    ("stop", ["ok", "\ud800"], "stop.1"),
    ("model", "zhyper:\udc00", "model"),
])
def test_lone_surrogates_are_a_400_naming_the_field(live, field, value, param):
    body = chat_body(**{field: value})  # json.dumps writes a lone surrogate as its \\uXXXX escape
    status, _, raw = http("POST", f"{live[0]}/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] == param and error["code"] == "invalid_unicode", error
    assert error["message"].startswith(param + ": ") and "surrogate" in error["message"]


def test_a_surrogate_pair_is_valid_text(live):  # the twin of the lone surrogates: an emoji as JSON escapes
    body = chat_body(description="Be \ud83d\ude00 kind.", messages=[{"role": "user", "content": "Hi \ud83d\ude00"}])
    assert b"\\ud83d\\ude00" in body
    assert http("POST", f"{live[0]}/v1/chat/completions", body)[0] == 200


@pytest.mark.parametrize("weights, status", [([1e30, 1.0], 400), ([1e300, 1.0], 400), ([0.7, 0.3], 200)])
def test_overflowing_weight_is_a_400_naming_the_weight(live, checkpoint, weights, status):
    body = chat_body(description=["Answer in French.", "Be brief."], description_weights=weights)
    got, _, raw = http("POST", f"{live[0]}/v1/chat/completions", body)
    assert got == status, raw
    if status == 200:  # the twin: ordinary weights are served
        return
    error = json.loads(raw)["error"]
    assert error["param"] == "description_weights" and error["code"] == "invalid_weights", error
    assert error["message"].startswith("description_weights: ") and "smaller" in error["message"]
    assert str(checkpoint) not in error["message"] and "/" not in error["message"]


def test_a_failed_request_logs_its_id_not_its_description(live, caplog):
    private = "My patient, Jane Roe, born 1970-01-01: answer about her diagnosis."
    with caplog.at_level(logging.INFO, logger="zhyper.serving"):
        status, headers, _ = http("POST", f"{live[0]}/v1/chat/completions",
                                  chat_body(description=[private, "Be brief."], description_weights=[1e30, 1.0]))
        time.sleep(0.2)
    assert status == 400
    rid = headers["x-request-id"]
    warnings = [r.getMessage() for r in served(caplog.records) if r.levelno >= logging.WARNING]
    assert any(rid in m and "invalid_weights" in m for m in warnings), warnings
    assert not any("Jane Roe" in r.getMessage() for r in served(caplog.records))
    # the twin: with DEBUG on, the description is there for whoever asked for it
    with caplog.at_level(logging.DEBUG, logger="zhyper.serving"):
        http("POST", f"{live[0]}/v1/chat/completions",
             chat_body(description=[private, "Be brief."], description_weights=[1e30, 1.0]))
    assert any("Jane Roe" in r.getMessage() and r.levelno == logging.DEBUG for r in served(caplog.records))


def test_a_disconnect_mid_body_is_one_info_line(live, caplog):
    host, port = live[0].removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO, logger="zhyper.serving"):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(post_head(1000) + b'{"messages": [{"role"')
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("POST /v1/chat/completions" in r.getMessage() for r in served(caplog.records)):
            assert time.monotonic() < deadline, "no access log line for the request"
            time.sleep(0.05)
    records = served(caplog.records)
    assert [r for r in records if r.levelno >= logging.WARNING or r.exc_info] == []
    gone = [r.getMessage() for r in records if "disconnected" in r.getMessage()]
    assert len(gone) == 1 and "21 of 1000" in gone[0], [r.getMessage() for r in records]


def test_a_body_never_finished_does_not_hold_the_drain(checkpoint):
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=2)
    server = LiveServer(app)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(post_head(1000) + b'{"messages": [')
        time.sleep(0.3)
        started = time.monotonic()
        assert server.drain(timeout=1.0) is False  # the stalled request is cut at the drain timeout
        took = time.monotonic() - started
        answer = sock.recv(65536)
    assert took < 6, f"the drain took {took:.1f} s for a 1 s drain timeout"
    assert answer.startswith(b"HTTP/1.1 503") and b"drain" in answer and not engine.running


@pytest.mark.parametrize("key, where", [("abc\ndef", "character 4 (U+000A)"), ("clé", "character 3 (U+00E9)"),
                                        ("two words", "character 4 (U+0020)")])
def test_an_api_key_headers_cannot_carry_is_refused_at_start(tmp_path, capsys, monkeypatch, key, where):
    from zhyper.cli import main

    missing = str(tmp_path / "no-such-checkpoint")
    assert main(["serve", "--checkpoint", missing, "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and where in err and "visible ASCII" in err and key not in err, err
    monkeypatch.setenv("ZHYPER_API_KEY", key)
    assert main(["serve", "--checkpoint", missing]) == 2
    err = capsys.readouterr().err
    assert "$ZHYPER_API_KEY" in err and where in err, err
    # the twin: a key of visible ASCII passes this check (the run then fails on the missing checkpoint)
    assert main(["serve", "--checkpoint", missing, "--api-key", "k3y-of_visible.ASCII~"]) == 2
    assert "api-key" not in capsys.readouterr().err.lower()


def test_ops_refuses_an_unsendable_key_and_accepts_a_sendable_one():
    from zhyper.serving.ops import Ops

    with pytest.raises(ValueError, match=r"api_key: character 2 \(U\+000D\)"):
        Ops("a\rb")
    assert Ops("a-b").authorized("Bearer a-b") and not Ops("a-b").authorized("Bearer a-c")


def test_an_exceptions_text_in_a_logged_traceback_is_escaped(caplog):
    from zhyper.serving.logsafe import safe_logger

    logger = safe_logger("zhyper.serving.test_hostile")
    with caplog.at_level(logging.ERROR, logger="zhyper.serving.test_hostile"):
        try:
            try:
                raise KeyError("no such key")
            except KeyError as inner:
                raise ValueError("description 'x\nCRITICAL forged line'") from inner
        except ValueError:
            logger.exception("request %s: unhandled error", "r1")
    lines = caplog.text.splitlines()
    assert not any(line.startswith("CRITICAL") for line in lines), lines
    assert "ValueError: description 'x\\nCRITICAL forged line'" in lines
    # the twin: the traceback keeps its own lines (frames, the chain) as a traceback has them
    assert lines.count("Traceback (most recent call last):") == 2 and any(line.startswith("  File ") for line in lines)
    assert "The above exception was the direct cause of the following exception:" in lines
