"""The OpenAI chat-completions schema as the server reads and writes it.

Requests are validated by ``ChatCompletionRequest`` (pydantic); fields the server does not know are
accepted and ignored, fields it knows but cannot honour (``n`` > 1, ``logprobs``, ``tools``,
non-zero penalties) are refused with a 400 naming the field. Types are as strict as OpenAI's: a
number field takes a JSON number (never ``true`` or ``"1"``), an integer field an integer, a flag
``true`` / ``false``; a system, developer or user message needs content (``null`` only on an
assistant turn). Responses, stream chunks and error
bodies are plain dicts in OpenAI's shapes (``completion``, ``chunk``, ``error_body``).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from zhyper.compose import COMBINE

from .requests import MAX_DESCRIPTIONS, SEED_MAX, SEED_MIN

ROLES = ("system", "developer", "user", "assistant")


class APIError(Exception):
    """An error answered as ``{"error": {message, type, param, code}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _strict(default=None, **kw):
    return Field(default=default, strict=True, **kw)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(default=None, validate_default=True)

    @field_validator("content")
    @classmethod
    def _content(cls, v, info: ValidationInfo):
        if v is None and info.data.get("role", "assistant") != "assistant":
            raise ValueError(f"expected a string or a list of text parts on a {info.data['role']} message, got "
                             "null (null content is allowed on an assistant turn only)")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = _strict(False)


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``description`` (not in OpenAI's schema; the official client
    sends it with ``extra_body``) conditions the answer; ``ignore_eos`` (as in vLLM) decodes past
    the end of turn, for benchmarks."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    description: str | list[str] | None = None
    description_weights: list[float] | None = None
    combine: str | None = None
    max_tokens: int | None = _strict()
    max_completion_tokens: int | None = _strict()
    temperature: float | None = _strict(ge=0.0, le=2.0)
    top_p: float | None = _strict(gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = _strict(ge=SEED_MIN, le=SEED_MAX)
    stream: bool = _strict(False)
    stream_options: StreamOptions | None = None
    n: int | None = _strict()
    ignore_eos: bool = _strict(False)
    logprobs: bool | None = _strict()
    presence_penalty: float | None = _strict()
    frequency_penalty: float | None = _strict()
    tools: list[Any] | None = None

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _positive(cls, v):
        if v is not None and v < 1:
            raise ValueError(f"expected an integer >= 1, got {v}")
        return v

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, v):
        if v is None:
            return v
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("expected a non-empty description, or null / absent for the base model")
            return v
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a string or a non-empty list of strings (at most {MAX_DESCRIPTIONS}), got "
                             f"{_json(v)}")
        if len(v) > MAX_DESCRIPTIONS:
            raise ValueError(f"{len(v)} descriptions; this server combines at most {MAX_DESCRIPTIONS} per request")
        for i, d in enumerate(v):
            if not isinstance(d, str) or not d.strip():
                raise ValueError(f"item {i}: expected a non-empty string, got {_json(d)}")
        return v

    @field_validator("description_weights", mode="before")
    @classmethod
    def _weights(cls, v):
        if v is None:
            return v
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a list of numbers, one per description, got {_json(v)}")
        for i, w in enumerate(v):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"item {i}: expected a finite number, got {_json(w)}")
        return [float(w) for w in v]

    @field_validator("combine", mode="before")
    @classmethod
    def _combine(cls, v):
        if v is not None and v not in COMBINE:
            raise ValueError(f"expected one of {list(COMBINE)}, got {_json(v)}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return v
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4 or not all(stops):
            raise ValueError(f"expected a non-empty string or a list of at most 4 non-empty strings, got {v!r}")
        return v

    @model_validator(mode="after")
    def _unsupported(self):
        if self.n not in (None, 1):
            raise _Unsupported("n", f"n={self.n}: this server returns one choice per request; expected n=1")
        if self.logprobs:
            raise _Unsupported("logprobs", "logprobs are not supported by this server")
        if self.tools:
            raise _Unsupported("tools", "tools / function calling are not supported by this server")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise _Unsupported(name, f"{name} is not supported by this server; expected 0 or absent")
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise _Unsupported("max_tokens", f"max_tokens ({self.max_tokens}) and max_completion_tokens "
                               f"({self.max_completion_tokens}) differ; give one of them")
        return self

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def chat(self) -> list[dict]:
        """Messages as the chat template takes them (developer -> system)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class _Unsupported(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_depth(raw: bytes, most: int) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings not counted), read without
    parsing it: at most ``most`` is all a caller needs to know when the text has no more brackets than that."""
    from itertools import accumulate
    from operator import sub

    if raw.count(b"[") + raw.count(b"{") <= most:
        return min(most, raw.count(b"[") + raw.count(b"{"))
    steps = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_OPEN_CLOSE)  # 2 opens, 0 closes
    if not steps:
        return 0
    # the depth after the i-th bracket is (opens - closes) = prefix sum of (2 or 0) - i
    return max(map(sub, accumulate(steps), range(1, len(steps) + 1)))


def decode_body(raw: bytes, max_depth: int) -> Any:
    """The JSON of a request body, its nesting bounded before it is parsed and its text valid Unicode;
    APIError(400) naming what is wrong otherwise."""
    import json

    depth = json_depth(raw, max_depth)
    if depth > max_depth:
        raise APIError(400, f"body: JSON nested {depth} levels deep; this server accepts at most {max_depth} "
                       "levels of arrays and objects", code="too_deep")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON body: {exc}; expected a JSON object with 'messages'",
                       code="invalid_json") from None
    found = find_surrogate(data)
    if found is not None:
        where, what = found
        raise APIError(400, f"{where}: {what}; expected valid Unicode text (a \\uD800-\\uDFFF escape in JSON must "
                       "be one half of a surrogate pair, a high one followed by a low one)", param=where,
                       code="invalid_unicode")
    return data


def find_surrogate(data: Any) -> tuple[str, str] | None:
    """(the field, what is wrong) of the first text holding a lone surrogate, in document order; None if none.
    Fields are named as in error messages: ``messages.0.content``, ``description.1``."""
    stack = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            hit = _SURROGATE.search(value)
            if hit:
                return where or "body", f"a lone surrogate {ascii(hit.group())[1:-1]} at character {hit.start()}"
        elif isinstance(value, dict):
            for key in value:
                if _SURROGATE.search(key):
                    return where or "body", f"the key {ascii(key)[:80]} holds a lone surrogate"
            stack.extend((f"{where}.{key}" if where else key, item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), item) for i, item in reversed(list(enumerate(value))))
    return None


def parse_request(data: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; raises APIError(400) naming the first wrong field."""
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Unsupported):
            raise APIError(400, str(cause), param=cause.param, code="unsupported_parameter") from None
        loc = [str(p) for p in err.get("loc", ())]
        # drop pydantic's union-branch names (e.g. 'str', 'list[TextPart]') from the location
        loc = [p for p in loc if not (p[:1].isalpha() and ("[" in p or p in ("str", "int", "float", "bool")))]
        param = ".".join(loc) or None
        if err.get("type") == "missing":
            what = ("a non-empty list of messages [{role, content}]" if loc == ["messages"] else "a value")
            message = f"{param}: required field missing; expected {what}"
        elif param and param.endswith("role"):
            message = f"{param}: expected one of {list(ROLES)}, got {err.get('input')!r}"
        elif err.get("type") in _EXPECTED and not (len(loc) >= 3 and loc[0] == "messages"):
            value = err.get("input")
            message = (f"{param or 'body'}: expected {_EXPECTED[err['type']]}, got {_json(value)} "
                       f"({_KINDS.get(type(value), type(value).__name__)})")
        elif len(loc) >= 3 and loc[0] == "messages" and loc[2] == "content" and err.get("type") == "value_error":
            param = ".".join(loc[:3])
            message = f"{param}: {err.get('msg', '').removeprefix('Value error, ')}"
        elif len(loc) >= 3 and loc[0] == "messages" and loc[2] == "content":
            param = ".".join(loc[:3])
            message = (f"{param}: expected a string or a list of text parts [{{'type': 'text', 'text': ...}}] "
                       "(this server reads text only)")
        else:
            message = f"{param or 'body'}: {err.get('msg', 'invalid value').removeprefix('Value error, ')}"
            value = err.get("input")
            if err.get("type") != "value_error" and isinstance(value, (int, float, str, bool)):
                message += f"; got {value!r}"
        raise APIError(400, message, param=param, code="invalid_value") from None


_EXPECTED = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
             "string_type": "a string"}
_KINDS = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", type(None): "null",
          list: "a list", dict: "an object"}


def _json(value) -> str:
    import json

    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(id: str, model: str, text: str, finish_reason: str, usage: dict, created: int | None = None) -> dict:
    return {"id": id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}


def chunk(id: str, model: str, created: int, delta: dict, finish_reason: str | None = None,
          usage: dict | None = None, choices: bool = True) -> dict:
    body = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            if choices else []}
    if usage is not None:
        body["usage"] = usage
    return body


def model_card(id: str, created: int, **extra) -> dict:
    return {"id": id, "object": "model", "created": created, "owned_by": "zhyper", **extra}
