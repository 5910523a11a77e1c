"""Fixtures of the serving tests: a tiny checkpoint, a live uvicorn server on a free loopback port, clients."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from zhyper.serving.app import BackgroundServer as LiveServer  # noqa: F401  (uvicorn in a thread, free port)
from zhyper.testing import CONTEXT_LENGTH, OWN_CONTEXTS, make_checkpoint  # noqa: F401  (the tests import them here)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, raw body) of one real HTTP request (stdlib; errors are returned, not raised)."""
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="package")
def reference(checkpoint):
    """A second copy of the checkpoint for the library answers (the server's copy runs on another thread)."""
    from zhyper import ZhyperModel

    return ZhyperModel.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="package")
def live(checkpoint):
    """(url, engine) of a server over the tiny checkpoint: max_batch 8, cache 64."""
    from zhyper.serving.app import build_app

    app, engine = build_app(checkpoint, max_batch=8, max_queue=64, cache_size=64)
    server = LiveServer(app)
    yield server.url, engine
    server.close()


@pytest.fixture
def client(live):
    return openai_client(live[0])
