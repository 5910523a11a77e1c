"""``zhyper serve``: light --help, argument errors, and the real command serving a checkpoint over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.serving.conftest import http, openai_client

HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "starlette", "openai")


def test_serve_help_imports_nothing_heavy():
    code = ("import sys\nfrom zhyper.cli import main\ntry:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "usage: zhyper serve" in out.stdout and "--max-queue" in out.stdout and "--cache-size" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_serve_rejects_bad_numbers(capsys):
    from zhyper.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--checkpoint", "x", "--max-batch", "0"])
    assert exit_.value.code == 2
    assert "argument --max-batch: expected an integer >= 1, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--checkpoint", "x", "--prefill-tokens", "-5"])
    assert exit_.value.code == 2
    assert "argument --prefill-tokens: expected an integer >= 1, got '-5'" in capsys.readouterr().err


@pytest.mark.slow
def test_zhyper_serve_command_answers_over_http(checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zhyper", "serve", "--checkpoint", str(checkpoint), "--port",
                             str(port), "--max-batch", "4", "--cache-size", "8", "--model-name", "tiny",
                             "--prefill-tokens", "64"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, _, raw = http("GET", f"{url}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 180 s"
            time.sleep(0.5)
        health = json.loads(raw)
        assert health["model"] == "tiny" and health["max_batch"] == 4 and health["cache"]["size"] == 8
        out = openai_client(url).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0,
            extra_body={"description": "Reply in upper case."})
        assert out.usage.completion_tokens == 3 and out.choices[0].finish_reason == "length"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


@pytest.mark.slow
def test_sigterm_drains_the_request_in_flight_then_exits_0(checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "ZHYPER_API_KEY": "k-env"}
    proc = subprocess.Popen([sys.executable, "-m", "zhyper", "serve", "--checkpoint", str(checkpoint), "--port",
                             str(port), "--max-batch", "2", "--drain-timeout", "120"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if http("GET", f"{url}/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 180 s"
            time.sleep(0.5)
        import openai

        assert http("GET", f"{url}/v1/models")[0] == 401  # the key from ZHYPER_API_KEY is required
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k-env", max_retries=0, timeout=120)
        stream = client.chat.completions.create(model="zhyper", messages=[{"role": "user", "content": "Story"}],
                                                max_tokens=900, temperature=0, stream=True,
                                                extra_body={"ignore_eos": True})
        chunks = [next(iter(stream))]
        proc.send_signal(signal.SIGTERM)
        while http("GET", f"{url}/ready")[0] == 200:  # the drain starts (the long stream is still running)
            time.sleep(0.01)
        status, _, raw = http("POST", f"{url}/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).encode(),
            {"Authorization": "Bearer k-env"})
        assert status == 503 and json.loads(raw)["error"]["code"] == "draining"
        chunks += list(stream)
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
        assert proc.wait(60) == 0
        log = proc.stdout.read()
        assert "drained; shutting down" in log and "k-env" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
