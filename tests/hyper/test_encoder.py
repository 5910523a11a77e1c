"""ContextEncoder: the shipped MiniLM offline, caching by (encoder id, text), pooling override, errors."""

from __future__ import annotations

import pytest
import torch

from zhyper.hyper import encoder as encoder_module
from zhyper.hyper.encoder import ContextEncoder, clear_cache


@pytest.fixture
def minilm():
    clear_cache()
    return ContextEncoder()


def test_shipped_encoder_embeds_offline(minilm):
    emb = minilm.encode(["Answer like a German.", "Reply in upper case.", "Answer like a German."])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert minilm.dim == 384
    assert torch.equal(emb[0], emb[2])
    assert (emb[0] - emb[1]).abs().max() > 1e-3, "different descriptions must get different embeddings"
    similar = minilm.encode(["Answer as a German would."])[0]
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], similar, dim=0) > cos(emb[1], similar, dim=0)  # real weights: meaning is kept


def test_each_text_is_encoded_once(minilm, monkeypatch):
    calls = []
    real = minilm.model.encode

    def counting(texts, **kw):
        calls.append(list(texts))
        return real(texts, **kw)

    monkeypatch.setattr(minilm.model, "encode", counting)
    first = minilm.encode(["a cat", "a dog"])
    again = ContextEncoder().encode(["a dog", "a bird"])  # another instance shares the cache
    assert calls == [["a cat", "a dog"], ["a bird"]]
    assert torch.equal(first[1], again[0])


def test_cls_pooling_is_a_different_encoder(minilm):
    cls = ContextEncoder(pooling="cls")
    assert cls.id != minilm.id
    a, b = minilm.encode(["Reply in French."]), cls.encode(["Reply in French."])
    assert a.shape == b.shape == (1, 384)
    assert (a - b).abs().max() > 1e-3, "CLS pooling must give another embedding than mean pooling"


@pytest.mark.parametrize("bad, error, message", [
    ([""], ValueError, r"descriptions\[0\]: expected a non-empty description"),
    (["ok", "   "], ValueError, r"descriptions\[1\]: expected a non-empty description"),
    (["ok", 3], TypeError, r"descriptions\[1\]: expected a string, got int"),
    ("just a string", TypeError, "descriptions: expected a list of strings, got str"),
])
def test_bad_descriptions_raise(minilm, bad, error, message):
    with pytest.raises(error, match=message):
        minilm.encode(bad)


def test_unreachable_encoder_says_so(tmp_path):
    with pytest.raises(OSError, match="could not load sentence encoder"):
        ContextEncoder(str(tmp_path / "nothing-here")).encode(["x"])


def test_pooling_must_be_known():
    with pytest.raises(ValueError, match="pooling: expected None or one of"):
        ContextEncoder(pooling="attention")


def test_encoder_is_not_a_module():
    assert not isinstance(ContextEncoder(), torch.nn.Module)
    assert encoder_module._CACHE.maxsize == encoder_module.CACHE_SIZE  # bounded: a server does not grow with it


def test_cache_is_bounded_and_results_survive_eviction(monkeypatch):
    from cachetools import LRUCache

    monkeypatch.setattr(encoder_module, "_CACHE", LRUCache(maxsize=3))
    enc = ContextEncoder()
    texts = [f"Answer rule number {i}." for i in range(5)]
    first = enc.encode(texts)  # more texts than the cache holds: the call still returns all of them
    assert first.shape == (5, 384) and len(encoder_module._CACHE) == 3
    torch.testing.assert_close(enc.encode(texts[:1]), first[:1])  # evicted, encoded again: the same vector
    assert not torch.equal(first[0], first[1])


def test_a_description_past_the_window_is_named_in_a_warning(caplog):
    import logging

    from zhyper.hyper.encoder import ContextEncoder

    enc = ContextEncoder()
    long = "Please read this preamble carefully. " * 80 + "Then answer in capital letters."
    other = "Please read this preamble carefully. " * 80 + "Then answer in lower case."
    with caplog.at_level(logging.WARNING, logger="zhyper.hyper.encoder"):
        a, b = enc.encode([long, other])
    assert torch.equal(a, b)  # what the warning is about: the endings are not read
    assert "reads only the first 256" in caplog.text and "Please read this preamble" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zhyper.hyper.encoder"):
        enc.encode(["Answer in capital letters, please."])  # twin: a short description warns nothing
    assert "reads only" not in caplog.text
