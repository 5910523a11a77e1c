"""The server's routes over a ``ServerState``: probes and metrics, models, chat completions.

``/health`` is liveness (the engine thread runs); ``/ready`` is readiness (the model and the
encoder's window are loaded, the engine runs, the server is not draining); ``/metrics`` is
Prometheus text. ``/v1/models`` lists the served model and the named contexts with ``trained``
(true, false, or null when the checkpoint does not say; see ``contexts.context_table``).

A request may combine descriptions (``description`` a list, ``description_weights``, ``combine``, or
``model: zhyper:<a>+<b>``): ``conditioning`` validates them and hands the engine one text or a tuple of
texts with weights, whose rows the engine sums at admission (``zhyper.compose``).

A chat request's body is read on the event loop with its size bounded as it arrives (``_read_body``);
everything heavier (the depth scan, JSON, validation, the limits, tokenisation) runs on the parse
threads (``ServerState.parse_pool``), so a 4 MB prompt holds neither ``/health``, the streams nor the
other requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from starlette.requests import Request as HTTPRequest  # resolved by FastAPI from this module's globals

from .contexts import PREFIX, NamedContext
from .engine import Engine
from .limits import LimitChecker
from .metrics import Metrics
from .ops import Ops
from .requests import MAX_DESCRIPTIONS, EngineStopped, Event, QueueFull, Request, SamplingParams
from .schemas import APIError, chunk, completion, decode_body, error_body, model_card, parse_request


PARSE_THREADS = 4  # request bodies parsed and tokenised at once


@dataclass
class ServerState:
    engine: Engine
    contexts: dict[str, NamedContext]
    model_name: str
    checkpoint: str | None
    ops: Ops
    limits: LimitChecker
    metrics: Metrics
    created: int = field(default_factory=lambda: int(time.time()))
    _pool: object = field(default=None, repr=False)

    def parse_pool(self):
        """The threads that parse and tokenise request bodies, off the event loop (started on first use, ended
        by ``close``). Several, so one huge prompt delays no other request; the tokenizers are shared safely
        because every call leaves their truncation and padding as they are (the limits use a copy of the
        sentence encoder's, whose own calls truncate)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="zhyper-parse")
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def card(self, name: str) -> dict:
        if name == self.model_name:
            return model_card(name, self.created, root=self.checkpoint, description=None)
        ctx = self.contexts[name[len(PREFIX):]]
        return model_card(name, self.created, root=self.checkpoint, parent=self.model_name,
                          description=ctx.description, trained=ctx.trained, source=ctx.source)


def install_probe_routes(app, st: ServerState) -> None:
    from fastapi.responses import JSONResponse, Response

    @app.get("/health")
    async def health():
        e = st.engine
        ok = e.running
        body = {"status": "ok" if ok else "engine stopped", "model": st.model_name, "active": e.active,
                "queued": e.queued, "max_batch": e.max_batch, "max_queue": e.max_queue, "draining": st.ops.draining,
                "in_flight": st.ops.in_flight, "cache": e.cache.stats(), "stats": dict(e.stats)}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/ready")
    async def ready():
        reasons = [why for bad, why in ((not st.limits.bound, "the model is loading"),
                                        (not st.engine.running, "the engine is not running"),
                                        (st.ops.draining, "the server is draining")) if bad]
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/metrics")
    async def metrics():
        body, content_type = st.metrics.render()
        return Response(body, media_type=content_type)


def install_model_routes(app, st: ServerState) -> None:
    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [st.card(name) for name in known_models(st)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id == st.model_name or (model_id.startswith(PREFIX) and model_id[len(PREFIX):] in st.contexts):
            return st.card(model_id)
        raise unknown_model(st, model_id)


def known_models(st: ServerState) -> list[str]:
    """The served model, then the trained (or unknown) contexts, then the untrained built-in ones."""
    order = sorted(st.contexts, key=lambda n: st.contexts[n].trained is False)
    return [st.model_name, *(PREFIX + name for name in order)]


def unknown_model(st: ServerState, name: str, part: str | None = None) -> APIError:
    known = known_models(st)
    shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
    what = f"model {name!r} does not exist" if part is None else f"model {name!r}: no named context {part!r}"
    return APIError(404, f"{what}; known models: {shown} (several named contexts: zhyper:<a>+<b>)",
                    "invalid_request_error", "model", "model_not_found")


def descriptions_of(st: ServerState, req) -> str | list[str] | None:
    """The request's description(s): its ``description``, or those of ``model: zhyper:<a>+<b>`` in order."""
    name = req.model
    if name is None or name == st.model_name:
        return req.description
    if not name.startswith(PREFIX):
        raise unknown_model(st, name)
    names = name[len(PREFIX):].split("+")
    for part in names:
        if part not in st.contexts:
            raise unknown_model(st, name, part if len(names) > 1 else None)
    if req.description is not None:
        raise APIError(400, f"give either a description or a named context (model {name!r}), not both",
                       param="description", code="conflicting_parameters")
    if len(names) > MAX_DESCRIPTIONS:
        raise APIError(400, f"model {name!r}: {len(names)} named contexts; this server combines at most "
                       f"{MAX_DESCRIPTIONS} per request", param="model", code="invalid_value")
    for part in names:
        ctx = st.contexts[part]
        if ctx.trained is False:
            trained = [n for n, c in st.contexts.items() if c.trained]
            raise APIError(400, f"model {name!r}: {part!r} is a built-in context this checkpoint was not trained on "
                           f"(its contexts.json lists {trained}); to try it anyway send model {st.model_name!r} with "
                           f"description {ctx.description!r}", param="model", code="untrained_context")
    found = [st.contexts[part].description for part in names]
    return found[0] if len(found) == 1 else found


def conditioning(st: ServerState, req) -> tuple[str | tuple[str, ...] | None, tuple[float, ...] | None]:
    """(description, weights) of the engine Request: one text, or several combined (``zhyper.compose``).

    ``combine="text"`` joins the descriptions into one text, cached like any description; otherwise a
    lone description without weights is served as today, and anything else as a weighted sum of rows.
    """
    from zhyper import compose

    found, weights, combine = descriptions_of(st, req), req.description_weights, req.combine or "modulation"
    if found is None:
        for field_name in ("description_weights", "combine"):
            if getattr(req, field_name) is not None:
                raise APIError(400, f"{field_name}: applies to a description or a named context; this request has "
                               "neither (the base model)", param=field_name, code="invalid_value")
        return None, None
    texts = [found] if isinstance(found, str) else list(found)
    if weights is not None and len(weights) != len(texts):
        raise APIError(400, f"description_weights: expected {len(texts)} number(s), one per description in order, "
                       f"got {len(weights)}", param="description_weights", code="invalid_value")
    [item] = compose.entries([texts], None if weights is None else [weights])
    try:
        compose.check_combine(combine, [item], st.engine.model.config.mode)
    except ValueError as exc:
        message = str(exc)
        param = "description_weights" if message.startswith("weights") else "combine"
        raise APIError(400, message.replace("weights:", "description_weights:", 1), param=param,
                       code="invalid_value") from None
    if combine == "text":
        texts = [compose.as_text(item)]
    for text in texts:
        if text not in st.engine.cache:
            st.limits.check_description(text)
    if len(texts) == 1 and (weights is None or combine == "text"):
        return texts[0], None
    return tuple(texts), item[1]


def install_chat_route(app, st: ServerState) -> None:
    from fastapi.responses import StreamingResponse

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        if st.ops.draining:
            raise APIError(503, "server unavailable: it is draining (shutting down); retry on another instance",
                           "server_error", code="draining", headers={"Retry-After": "5"})
        req, request, events = await _prepare(st, http)
        try:
            st.engine.submit(request)
        except QueueFull as exc:
            raise APIError(429, f"server busy: {exc}", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineStopped as exc:
            raise APIError(503, f"server unavailable: {exc}", "server_error", code="engine_stopped") from None
        cid, model = f"chatcmpl-{http.state.request_id}", req.model or st.model_name
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(st, request, events, cid, model, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                event = await events.get()
                if event.kind == "finish":
                    return completion(cid, model, event.text, event.finish_reason, event.usage)
                if event.kind == "error":
                    raise _engine_error(st, event)
        finally:
            request.cancel()  # a client that went away frees its row (no-op once finished)


class ClientGone(Exception):
    """The client disconnected before its request body was complete (nothing can be answered)."""

    def __init__(self, received: int, declared: str | None):
        super().__init__(f"the client disconnected after {received} of {declared or 'an unknown number of'} "
                         "body bytes; nothing was answered")


POLL_S = 0.25  # how often a body read looks whether the drain has timed out


async def _prepare(st: ServerState, http: HTTPRequest):
    """Read the body (bounded), then parse, check and tokenise it on a parse thread, off the event loop:
    (the parsed request, the engine Request, its event queue)."""
    raw = await _read_body(st, http)
    loop = asyncio.get_running_loop()
    req, prompt_ids, description, weights, params = await loop.run_in_executor(st.parse_pool(), _parse, st, raw)
    events: asyncio.Queue[Event] = asyncio.Queue()

    def sink(event: Event) -> None:  # on the engine thread; a non-streamed answer needs only its end
        if req.stream or event.kind != "text":
            loop.call_soon_threadsafe(events.put_nowait, event)

    request = Request(prompt_ids, description, params, sink, weights=weights, tag=http.state.request_id)
    return req, request, events


async def _read_body(st: ServerState, http: HTTPRequest) -> bytes:
    """The request body, refused (413) as soon as its declared or received size passes the limit; a client
    that disconnects raises ClientGone; one still sending when the drain times out is answered 503."""
    declared = http.headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        st.limits.check_body(int(declared), declared=True)
    parts, size = [], 0
    while True:
        message = await _receive(st, http)
        if message["type"] == "http.disconnect":
            raise ClientGone(size, declared)
        part = message.get("body", b"")
        size += len(part)
        st.limits.check_body(size)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _receive(st: ServerState, http: HTTPRequest) -> dict:
    """The next ASGI message of the body, waiting in slices so that the drain's timeout cuts a stalled one."""
    while True:
        if st.ops.cut:
            raise APIError(503, "server unavailable: it shut down (drain timeout) before this request's body "
                           "was complete", "server_error", code="draining", headers={"Connection": "close"})
        try:
            return await asyncio.wait_for(http.receive(), POLL_S)
        except asyncio.TimeoutError:
            continue


def _parse(st: ServerState, raw: bytes):
    """On a parse thread: (request, prompt ids, description, weights, SamplingParams) of a body, or APIError."""
    req = parse_request(decode_body(raw, st.limits.limits.max_json_depth))
    description, weights = conditioning(st, req)
    try:
        prompt_ids = st.engine.encode_chat(req.chat())
    except Exception as exc:  # the chat template rejects the conversation (e.g. role order)
        raise APIError(400, f"messages: the chat template cannot format them: {exc}", param="messages",
                       code="invalid_messages") from None
    st.limits.check_tokens(len(prompt_ids), req.limit)
    max_tokens = st.engine.resolve_max_tokens(len(prompt_ids), req.limit)
    if st.limits.limits.max_tokens is not None:
        max_tokens = min(max_tokens, st.limits.limits.max_tokens)
    try:
        st.engine.check_prompt(len(prompt_ids), max_tokens)
    except ValueError as exc:
        raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from None
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
                            top_p=1.0 if req.top_p is None else req.top_p, stop=req.stops, seed=req.seed,
                            ignore_eos=req.ignore_eos)
    return req, prompt_ids, description, weights, params


def _engine_error(st: ServerState, event: Event) -> APIError:
    """The APIError of an engine's error event; the checkpoint is named by its folder's name, never its path."""
    from pathlib import Path

    message, param = event.message or "generation failed", None
    if event.code in ("non_finite_modulation", "non_finite_output") and st.checkpoint:
        message += f" (checkpoint {Path(st.checkpoint).name!r})"
    if event.code == "invalid_weights":
        param = "description_weights"
        message = message if message.startswith(param) else f"{param}: {message}"
    return APIError(event.status, message, "server_error" if event.status >= 500 else "invalid_request_error",
                    param=param, code=event.code or "generation_failed")


async def _sse(st: ServerState, request: Request, events: asyncio.Queue, cid: str, model: str, include_usage: bool):
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
    created = int(time.time())

    def data(body: dict) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield data(chunk(cid, model, created, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if event.kind == "text":
                yield data(chunk(cid, model, created, {"content": event.text}))
            elif event.kind == "finish":
                yield data(chunk(cid, model, created, {}, event.finish_reason))
                if include_usage:
                    yield data(chunk(cid, model, created, {}, usage=event.usage, choices=False))
                break
            else:
                err = _engine_error(st, event)
                yield data(error_body(err.message, err.type, code=err.code))
                break
        yield "data: [DONE]\n\n"
    finally:
        request.cancel()  # the client disconnected mid-stream: its row leaves the batch
