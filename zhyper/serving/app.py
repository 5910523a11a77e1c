"""The HTTP side: a FastAPI app over an ``Engine`` (OpenAI chat completions, models, health) and ``serve``.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events with ``stream: true``),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Every error is answered as
``{"error": {"message", "type", "param", "code"}}`` with a 4xx / 5xx status, and the server keeps
serving. The engine's thread starts with the app (lifespan) and stops with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.requests import Request as HTTPRequest  # resolved by FastAPI from this module's globals

from .contexts import PREFIX
from .engine import Engine, EngineStopped, Event, QueueFull, Request, SamplingParams
from .schemas import APIError, chunk, completion, error_body, model_card, new_id, parse_request

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "zhyper"


def create_app(engine: Engine, contexts: dict[str, str] | None = None, model_name: str = DEFAULT_MODEL_NAME,
               checkpoint: str | None = None):
    """The FastAPI app serving ``engine``; ``contexts`` {name: description} answer to ``model: "zhyper:<name>"``."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    contexts = dict(contexts or {})
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        started_here = not engine.running
        engine.start()
        logger.info("serving %s (%d named contexts), max_batch %d, max_queue %d, cache %d", model_name,
                    len(contexts), engine.max_batch, engine.max_queue, engine.cache.size)
        try:
            yield
        finally:
            if started_here:
                engine.stop()

    app = FastAPI(title="zhyper", description="OpenAI-compatible chat completions; every request brings its "
                  "own description", lifespan=lifespan)
    app.state.engine, app.state.contexts, app.state.model_name = engine, contexts, model_name

    def error_response(err: APIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {exc.detail}", kind,
                                       code=str(exc.status_code)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse(error_body(f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg')}",
                                       code="invalid_value"), status_code=400)

    @app.exception_handler(Exception)
    async def _server_error(request, exc):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(f"internal server error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)

    def known_models() -> list[str]:
        return [model_name, *(PREFIX + name for name in contexts)]

    @app.get("/health")
    async def health():
        ok = engine.running
        body = {"status": "ok" if ok else "engine stopped", "model": model_name, "active": engine.active,
                "queued": engine.queued, "max_batch": engine.max_batch, "max_queue": engine.max_queue,
                "cache": engine.cache.stats(), "stats": dict(engine.stats)}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models():
        cards = [model_card(model_name, created, root=checkpoint, description=None)]
        cards += [model_card(PREFIX + name, created, root=checkpoint, parent=model_name, description=text)
                  for name, text in contexts.items()]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id == model_name:
            return model_card(model_name, created, root=checkpoint, description=None)
        if model_id.startswith(PREFIX) and model_id[len(PREFIX):] in contexts:
            return model_card(model_id, created, root=checkpoint, parent=model_name,
                              description=contexts[model_id[len(PREFIX):]])
        raise unknown_model(model_id)

    def unknown_model(name: str) -> APIError:
        known = known_models()
        shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
        return APIError(404, f"model {name!r} does not exist; known models: {shown}", "invalid_request_error",
                        "model", "model_not_found")

    def description_of(req) -> str | None:
        name = req.model
        if name is None or name == model_name:
            return req.description
        if not name.startswith(PREFIX) or name[len(PREFIX):] not in contexts:
            raise unknown_model(name)
        if req.description is not None:
            raise APIError(400, f"give either a description or a named context (model {name!r}), not both",
                           param="description", code="conflicting_parameters")
        return contexts[name[len(PREFIX):]]

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        raw = await http.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"malformed JSON body: {exc}; expected a JSON object with 'messages'",
                           code="invalid_json") from None
        req = parse_request(data)
        description = description_of(req)
        try:
            prompt_ids = engine.encode_chat(req.chat())
        except Exception as exc:  # the chat template rejects the conversation (e.g. role order)
            raise APIError(400, f"messages: the chat template cannot format them: {exc}", param="messages",
                           code="invalid_messages") from None
        max_tokens = engine.resolve_max_tokens(len(prompt_ids), req.limit)
        try:
            engine.check_prompt(len(prompt_ids), max_tokens)
        except ValueError as exc:
            raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from None
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
                                top_p=1.0 if req.top_p is None else req.top_p, stop=req.stops, seed=req.seed,
                                ignore_eos=req.ignore_eos)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:  # on the engine thread; a non-streamed answer needs only its end
            if req.stream or event.kind != "text":
                loop.call_soon_threadsafe(events.put_nowait, event)

        request = Request(prompt_ids, description, params, sink)
        try:
            engine.submit(request)
        except QueueFull as exc:
            raise APIError(429, f"server busy: {exc}", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineStopped as exc:
            raise APIError(503, f"server unavailable: {exc}", "server_error", code="engine_stopped") from None
        cid, model = new_id(), req.model or model_name
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(request, events, cid, model, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                event = await events.get()
                if event.kind == "finish":
                    return completion(cid, model, event.text, event.finish_reason, event.usage)
                if event.kind == "error":
                    raise APIError(500, event.message, "server_error", code="generation_failed")
        finally:
            request.cancel()  # a client that went away frees its row (no-op once finished)

    return app


async def _sse(request: Request, events: asyncio.Queue, cid: str, model: str, include_usage: bool):
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
                yield data(error_body(event.message or "generation failed", "server_error", code="generation_failed"))
                break
        yield "data: [DONE]\n\n"
    finally:
        request.cancel()  # the client disconnected mid-stream: its row leaves the batch


def build_app(checkpoint: str | os.PathLike, base: str | None = None, max_batch: int = 32, max_queue: int = 256,
              cache_size: int = 1024, default_max_tokens: int = 256, model_name: str = DEFAULT_MODEL_NAME,
              builtin_contexts: bool = True):
    """Load ``checkpoint`` and return (app, engine): the app ready for any ASGI server."""
    from zhyper.model import ZhyperModel

    from .contexts import load_contexts

    contexts = load_contexts(checkpoint, builtin=builtin_contexts)  # a malformed contexts.json fails before the load
    model = ZhyperModel.from_pretrained(checkpoint, base_model=base).eval()
    engine = Engine(model, max_batch=max_batch, max_queue=max_queue, cache_size=cache_size,
                    default_max_tokens=default_max_tokens)
    return create_app(engine, contexts, model_name, str(Path(checkpoint))), engine


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          **kwargs) -> None:
    """Load ``checkpoint`` and serve it with uvicorn until interrupted (kwargs: ``build_app``'s)."""
    import uvicorn

    app, _ = build_app(checkpoint, **kwargs)
    # open streams get 10 s to finish on Ctrl-C; then they are cut and the engine stops
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread, on a socket bound before it starts (port 0: a free one).

    For notebooks, tests and benchmarks: ``with BackgroundServer(app) as server: ... server.url``.
    ``close()`` (or leaving the block) shuts uvicorn down, which stops the engine the app started.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 timeout: float = 60.0):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="zhyper-http")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"uvicorn did not start serving on {self.url} within {timeout:g} s")
            time.sleep(0.02)

    def close(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
