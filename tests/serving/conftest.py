"""Fixtures of the serving tests: a tiny checkpoint, a live uvicorn server on a free loopback port, clients."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.model_helpers import perturb, small_config, tiny_chat_base
from zhyper.serving.app import BackgroundServer as LiveServer  # noqa: F401  (uvicorn in a thread, free port)

CONTEXT_LENGTH = 1024  # the tiny base's max_position_embeddings (long enough for a long-running request)
OWN_CONTEXTS = {"pirate": ["Talk like a pirate.", "Arr, answer as a sea rover would."],
                "formal": ["Answer in a formal, courteous tone."]}


def make_checkpoint(folder, mode: str = "diag"):
    """A tiny Llama (SmolLM2 tokenizer, 1024-token context) + perturbed Zhyper, saved with a contexts.json."""
    from zhyper import ZhyperModel
    from zhyper.serving.contexts import save_contexts

    base = tiny_chat_base(folder / "base")
    cfg_path = base / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["max_position_embeddings"] = CONTEXT_LENGTH
    cfg_path.write_text(json.dumps(cfg))
    model = perturb(ZhyperModel.from_base(str(base), small_config(mode=mode)), scale=2.0).eval()
    model.save_pretrained(folder / "ckpt")
    save_contexts(folder / "ckpt", OWN_CONTEXTS)
    return folder / "ckpt"


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
