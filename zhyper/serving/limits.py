"""Request limits of the server: prompt tokens, ``max_tokens``, description length (characters and the
sentence encoder's window), body size and JSON nesting depth (both checked before the body is parsed).
Each is refused with a 400 (413 for the body) naming the limit.

A description longer than the sentence encoder's window (``max_seq_length`` word pieces, special tokens
included: 256 for the shipped MiniLM) would be cut by the encoder, so two descriptions that differ only
after the window would get the same modulation: the server refuses them instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from .logsafe import safe_logger
from .schemas import APIError

logger = safe_logger(__name__)


@dataclass
class Limits:
    """What one request may ask for (None: no limit of its own; the context length still applies).

    ``max_description_tokens`` None means the sentence encoder's window; a larger value is lowered to it.
    """

    max_prompt_tokens: int | None = None
    max_tokens: int | None = None
    max_description_chars: int = 2000
    max_description_tokens: int | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64

    def __post_init__(self):
        optional = ("max_prompt_tokens", "max_tokens", "max_description_tokens")
        for name in (*optional, "max_description_chars", "max_body_bytes", "max_json_depth"):
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1{' or None' if name in optional else ''}, "
                                 f"got {value!r}")

class LimitChecker:
    """``Limits`` applied to requests; ``bind(model)`` reads the sentence encoder's window (loads the encoder)."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.description_tokens: int | None = self.limits.max_description_tokens
        self._tokenizer = None
        self.bound = False

    def bind(self, model) -> None:
        st = model.encoder.model  # the SentenceTransformer (loaded here, not on the first request)
        window = int(getattr(st, "max_seq_length", 0) or 0) or None
        # a copy of its own: the engine thread's encoder sets truncation on the shared one while it encodes
        self._tokenizer = _own_copy(getattr(st, "tokenizer", None))
        wanted = self.limits.max_description_tokens
        if window is not None and wanted is not None and wanted > window:
            logger.warning("max_description_tokens %d exceeds the sentence encoder's window of %d tokens; "
                           "using %d (longer descriptions would be cut by the encoder)", wanted, window, window)
        self.description_tokens = min(x for x in (wanted, window) if x is not None) if (wanted or window) else None
        self.bound = True

    def check_body(self, n_bytes: int, declared: bool = False) -> None:
        """413 (and the connection closed: the rest of the body is not read) past ``max_body_bytes``;
        ``declared``: ``n_bytes`` is the Content-Length header's, checked before any byte is read."""
        if n_bytes > self.limits.max_body_bytes:
            what = "declares a body of" if declared else "has a body of at least"
            raise APIError(413, f"the request {what} {n_bytes} bytes; this server accepts at most "
                           f"{self.limits.max_body_bytes} (--max-body-bytes)", code="body_too_large",
                           headers={"Connection": "close"})

    def check_description(self, description: str | None) -> None:
        if description is None:
            return
        n = len(description)
        most = self.limits.max_description_chars
        if n > most:
            raise APIError(400, f"description: {n} characters; this server accepts at most {most} "
                           "(--max-description-chars)", param="description", code="description_too_long")
        if self._tokenizer is None or self.description_tokens is None:
            return
        tokens = len(self._tokenizer(description, add_special_tokens=True)["input_ids"])
        if tokens > self.description_tokens:
            raise APIError(400, f"description: {tokens} encoder tokens; the sentence encoder reads at most "
                           f"{self.description_tokens} (its window, special tokens included) and would silently "
                           "drop the rest: shorten the description", param="description",
                           code="description_too_long")

    def check_tokens(self, n_prompt: int, max_tokens: int | None) -> None:
        most = self.limits.max_prompt_tokens
        if most is not None and n_prompt > most:
            raise APIError(400, f"messages: the prompt has {n_prompt} tokens; this server accepts at most {most} "
                           "(--max-prompt-tokens)", param="messages", code="prompt_too_long")
        most = self.limits.max_tokens
        if most is not None and max_tokens is not None and max_tokens > most:
            raise APIError(400, f"max_tokens: {max_tokens} requested; this server generates at most {most} per "
                           "request (--max-tokens-limit)", param="max_tokens", code="max_tokens_too_large")


def _own_copy(tokenizer):
    """A deep copy of a tokenizer (None stays None; one that cannot be copied is shared), called once here so
    that its truncation and padding are already what ``check_description``'s calls leave them: the parse
    threads then only read it."""
    import copy

    if tokenizer is None:
        return None
    try:
        tokenizer = copy.deepcopy(tokenizer)
    except Exception:  # a tokenizer without copy support: share it (as before)
        pass
    tokenizer("settle", add_special_tokens=True)
    return tokenizer
