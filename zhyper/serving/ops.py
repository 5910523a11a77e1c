"""Operations around the routes: the API key, the request id and access log, in-flight counting, the drain.

``OpsMiddleware`` (plain ASGI, so streams pass through untouched) gives every HTTP request an id (the
``X-Request-Id`` response header, the chat completion's ``chatcmpl-<id>``), checks
``Authorization: Bearer <key>`` when the server has a key (``/health``, ``/ready`` and ``/metrics`` stay
open for probes and scrapers), counts chat requests in flight, and writes one access-log line per
request: id, client, method, path, status, milliseconds. The key and the headers are never logged, and
control characters in the path are escaped (``logsafe``). ``check_api_key`` refuses a key that a header
cannot carry.

``Ops.start_drain()`` (SIGTERM under ``zhyper serve``) makes ``/ready`` and new chat requests answer 503;
``wait_idle`` waits for the requests in flight to finish; when it times out it sets ``cut``, and a request
still reading its body is answered 503 at once (it cannot hold the shutdown).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid

from .logsafe import safe_logger
from .schemas import error_body

logger = safe_logger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
CHAT_PATH = "/v1/chat/completions"


class Ops:
    """The server's operational state: API key, draining flag, chat requests in flight."""

    def __init__(self, api_key: str | None = None):
        self.api_key = None if api_key is None else check_api_key(api_key)
        self.draining = False
        self.cut = False  # the drain timed out: requests still reading their body are answered 503 at once
        self.in_flight = 0
        self._cond = threading.Condition()

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.api_key.encode())

    def enter(self) -> None:
        with self._cond:
            self.in_flight += 1

    def leave(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def start_drain(self) -> None:
        if not self.draining:
            logger.info("draining: new chat requests get 503; %d in flight", self.in_flight)
        self.draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no chat request is in flight (True), or ``timeout`` seconds (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning("drain timeout (%g s): %d requests still in flight are cut", timeout,
                                   self.in_flight)
                    self.cut = True
                    return False
                self._cond.wait(min(left, 0.1))
        return True


def check_api_key(key, name: str = "api_key") -> str:
    """``key`` if an ``Authorization: Bearer <key>`` header can carry it: visible ASCII only (0x21-0x7E,
    RFC 9110's VCHAR), else a ValueError naming the first character that cannot go (never the key)."""
    expected = ("expected visible ASCII only (letters, digits, punctuation; no spaces, control characters or "
                "non-ASCII letters), which an HTTP header can carry")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{name}: {expected}; got {'an empty string' if key == '' else type(key).__name__}")
    for i, c in enumerate(key, 1):
        if not "\x21" <= c <= "\x7e":
            raise ValueError(f"{name}: character {i} (U+{ord(c):04X}) cannot be sent in an HTTP header; {expected} "
                             "(the key itself is not shown)")
    return key


class OpsMiddleware:
    """Request id, API key, in-flight count, metrics by status and the access log (see the module docstring)."""

    def __init__(self, app, ops: Ops, metrics=None):
        self.app, self.ops, self.metrics = app, ops, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path, started, status = scope.get("path", ""), time.perf_counter(), [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            if path not in OPEN_PATHS and not self.ops.authorized(_header(scope, b"authorization")):
                return await _unauthorized(send_with_id)
            chat = path == CHAT_PATH
            if chat:
                self.ops.enter()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if chat:
                    self.ops.leave()
        finally:
            client = (scope.get("client") or ("-",))[0]
            logger.info("%s %s %s %s %d %.1fms", rid, client, scope.get("method", "-"), path, status[0],
                        1000 * (time.perf_counter() - started))
            if self.metrics is not None:
                self.metrics.request(path, status[0])


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _unauthorized(send) -> None:
    body = json.dumps(error_body("missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                                 "(the openai client's api_key)", "invalid_request_error",
                                 code="invalid_api_key")).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})
