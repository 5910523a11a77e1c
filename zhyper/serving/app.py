"""The HTTP side: a FastAPI app over an ``Engine`` (OpenAI chat completions, models, probes, metrics) and ``serve``.

Routes (``routes.py``): ``POST /v1/chat/completions`` (JSON or server-sent events with ``stream: true``),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``, ``GET /ready``, ``GET /metrics``. Every
error is answered as ``{"error": {"message", "type", "param", "code"}}`` with a 4xx / 5xx status, and
the server keeps serving. The engine's thread starts with the app (lifespan) and stops with it.
``ops.OpsMiddleware`` adds the API key, request ids, the access log and the in-flight count;
``zhyper serve`` drains on SIGTERM (``DrainingServer``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from .contexts import NamedContext
from .engine import Engine
from .limits import LimitChecker, Limits
from .logsafe import safe_logger
from .ops import Ops, OpsMiddleware
from .schemas import APIError, error_body

logger = safe_logger(__name__)

DEFAULT_MODEL_NAME = "zhyper"


def create_app(engine: Engine, contexts: dict | None = None, model_name: str = DEFAULT_MODEL_NAME,
               checkpoint: str | None = None, api_key: str | None = None, limits: Limits | None = None):
    """The FastAPI app serving ``engine``.

    ``contexts``: {name: NamedContext, or a description (taken as trained)} answering to
    ``model: "zhyper:<name>"``; ``api_key``: required as ``Authorization: Bearer`` (None: open);
    ``limits``: per-request limits (``Limits()`` by default). ``app.state.ops`` drains it.
    """
    from fastapi import FastAPI

    from .metrics import Metrics
    from .routes import ServerState, install_chat_route, install_model_routes, install_probe_routes

    table = {name: c if isinstance(c, NamedContext) else NamedContext(c, True, "given")
             for name, c in (contexts or {}).items()}
    ops = Ops(api_key)
    st = ServerState(engine, table, model_name, checkpoint, ops, LimitChecker(limits), Metrics(engine, ops))

    @asynccontextmanager
    async def lifespan(app):
        started_here = not engine.running
        if not st.limits.bound:
            st.limits.bind(engine.model)
        engine.start()
        logger.info("serving %s (%d named contexts), max_batch %d, max_queue %d, cache %d, admission window "
                    "%g ms, API key %s", model_name, len(table), engine.max_batch, engine.max_queue,
                    engine.cache.size, 1000 * engine.admit_window, "required" if api_key else "off")
        try:
            yield
        finally:
            st.close()
            if started_here:
                engine.stop()

    app = FastAPI(title="zhyper", description="OpenAI-compatible chat completions; every request brings its "
                  "own description", lifespan=lifespan)
    app.state.engine, app.state.contexts, app.state.model_name, app.state.ops = engine, table, model_name, ops
    app.state.server = st
    _install_error_handlers(app)
    install_probe_routes(app, st)
    install_model_routes(app, st)
    install_chat_route(app, st)
    app.add_middleware(OpsMiddleware, ops=ops, metrics=st.metrics)
    return app


def _install_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    from .routes import ClientGone

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

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

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request, exc):  # one INFO line: a client going away is not the server's error
        logger.info("request %s: %s", _request_id(request), exc if isinstance(exc, ClientGone) else
                    "the client disconnected before its request body was complete; nothing was answered")
        return Response(status_code=499)  # nginx's "client closed request"; only the access log sees it

    @app.exception_handler(Exception)
    async def _server_error(request, exc):
        rid = _request_id(request)
        logger.exception("request %s: unhandled error on %s %s", rid, request.method, request.url.path)
        # the exception's text may hold server paths: it stays in the log
        return JSONResponse(error_body(f"internal server error ({type(exc).__name__}); the server log has the "
                                       f"details under request id {rid}", "server_error"), status_code=500)


def _request_id(request) -> str:
    return getattr(request.state, "request_id", None) or "-"


def build_app(checkpoint: str | os.PathLike, base: str | None = None, max_batch: int = 32, max_queue: int = 256,
              cache_size: int = 1024, default_max_tokens: int = 256, model_name: str = DEFAULT_MODEL_NAME,
              builtin_contexts: bool = True, admit_window: float = 0.0, api_key: str | None = None,
              limits: Limits | None = None, prefill_tokens: int | None = None):
    """Load ``checkpoint`` and return (app, engine): the app ready for any ASGI server."""
    from zhyper.model import ZhyperModel

    from .contexts import context_table

    contexts = context_table(checkpoint, builtin=builtin_contexts)  # a malformed contexts.json fails before the load
    model = ZhyperModel.from_pretrained(checkpoint, base_model=base).eval()
    engine = Engine(model, max_batch=max_batch, max_queue=max_queue, cache_size=cache_size,
                    default_max_tokens=default_max_tokens, admit_window=admit_window, prefill_tokens=prefill_tokens)
    app = create_app(engine, contexts, model_name, str(Path(checkpoint)), api_key=api_key, limits=limits)
    return app, engine


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          drain_timeout: float = 30.0, **kwargs) -> None:
    """Load ``checkpoint`` and serve it with uvicorn until SIGTERM (drain) or Ctrl-C (kwargs: ``build_app``'s)."""
    import uvicorn

    app, _ = build_app(checkpoint, **kwargs)
    # our access log (ops.py) replaces uvicorn's; open streams get 10 s after the drain or a Ctrl-C
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10,
                            access_log=False)
    try:
        DrainingServer(config, app.state.ops, drain_timeout).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its shutdown; as uvicorn.run, exit normally
        pass


def _draining_server_class():
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        """uvicorn that drains on the first SIGTERM: new chat requests 503, in-flight ones finish (up to
        ``drain_timeout`` s), then a normal shutdown and exit 0. SIGINT, or a second SIGTERM, stop at once."""

        def __init__(self, config, ops: Ops, drain_timeout: float = 30.0):
            super().__init__(config)
            self.ops, self.drain_timeout = ops, drain_timeout

        def handle_exit(self, sig, frame) -> None:
            if sig == signal.SIGTERM and not self.ops.draining:
                self.ops.start_drain()
                threading.Thread(target=self._drain, name="zhyper-drain", daemon=True).start()
                return
            super().handle_exit(sig, frame)

        def _drain(self) -> None:
            self.ops.wait_idle(self.drain_timeout)
            logger.info("drained; shutting down")
            self.should_exit = True

    return _DrainingServer


def DrainingServer(config, ops: Ops, drain_timeout: float = 30.0):  # noqa: N802 (a class made on first use)
    """A uvicorn ``Server`` that drains on SIGTERM (uvicorn is imported only here)."""
    return _draining_server_class()(config, ops, drain_timeout)


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
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="zhyper-http")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"uvicorn did not start serving on {self.url} within {timeout:g} s")
            time.sleep(0.02)

    def drain(self, timeout: float = 30.0) -> bool:
        """What SIGTERM does under ``zhyper serve``: refuse new chat requests (503), wait for those in flight
        (True if they all finished within ``timeout``), then shut down."""
        ops = getattr(getattr(self.app, "state", None), "ops", None)
        idle = True
        if ops is not None:
            ops.start_drain()
            idle = ops.wait_idle(timeout)
        self.close()
        return idle

    def close(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
