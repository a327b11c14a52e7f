"""What surrounds every HTTP request, whichever route answers it (one ASGI middleware).

In order: a request id (the caller's ``X-Request-Id`` when sane, else a new one; sent
back on every answer and on the log lines of the request); the drain's refusal (503
with ``Retry-After`` and ``Connection: close``, but for the health routes, which say
the truth themselves); bearer tokens (the same `TokenSet` as gRPC; health and the
`public_paths`, the playground page's files, are open);
the body limit (``--max-message-bytes``: 413 from Content-Length, or once a streamed
body passes it); the concurrency cap (429 with ``Retry-After`` over what gRPC calls
may hold); the count of open requests, which the drain waits for; the server's
metrics (finished requests, latency, bytes; `rpc` is ``HTTP <method> <route>``); with
``--tracing``, an OpenTelemetry span, child of the caller's ``traceparent``; an access
log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actgrad_server.http.responses import HttpError, json_response
from actgrad_server.logs import request_id_scope
from actgrad_server.metrics import ServerMetrics
from actgrad_server.models import find_model
from actgrad_server.security import TokenSet
from actgrad_server.tracing import Tracing

__all__ = ["OPEN_PATHS", "Pipeline", "RequestTooLarge"]

_ACCESS = logging.getLogger("actgrad_server.access")
_MAX_REQUEST_ID = 128
#: Answered without a token and during the drain: probes need neither.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


class RequestTooLarge(HttpError):
    """A body that passed the limit while it was read."""


def _request_id(given: bytes | None) -> str:
    if given and len(given) <= _MAX_REQUEST_ID:
        text = given.decode("latin-1")
        if text.isascii() and text.isprintable():
            return text
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class Pipeline:
    """The ASGI middleware around every route; `open_requests` is what the drain waits for."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        refusing: threading.Event,
        tokens: TokenSet | None,
        max_body_bytes: int,
        max_open: int,
        access_log: bool,
        metrics: ServerMetrics | None = None,
        tracing: Tracing | None = None,
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self._app = app
        self._public = public_paths
        self._refusing = refusing
        self._tokens = tokens
        self._max_body = max_body_bytes
        self._max_open = max_open
        self._access_log = access_log
        self._metrics = metrics
        self._tracing = tracing
        #: Requests being answered now (read by the drain from another thread).
        self.open_requests = 0
        #: Requests received, refused ones included (the idle trim watches it).
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        self.received += 1
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        path: str = scope["path"]
        state: dict[str, Any] = {"status": 0, "bytes_out": 0, "bytes_in": 0}
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            elif message["type"] == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes_in"] += len(message.get("body", b""))
                if state["bytes_in"] > self._max_body:
                    raise RequestTooLarge(413, self._too_large(), {"Connection": "close"})
            return message

        span = None
        if self._tracing is not None:
            span = self._tracing.start_http(
                scope["method"],
                path,
                {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()},
            )
        with request_id_scope(request_id, "-" if span is None else span.trace_id):
            refusal = self._refusal(path, headers)
            if refusal is not None:
                status, message, extra = refusal
                await json_response({"error": message}, status, extra)(scope, receive, send_with_id)
            else:
                self.open_requests += 1
                try:
                    await self._app(scope, counted_receive, send_with_id)
                except RequestTooLarge as exc:
                    # Raised while a route read the body, outside its own error answer.
                    if state["status"]:
                        raise
                    await json_response({"error": exc.message}, 413, {"Connection": "close"})(
                        scope, receive, send_with_id
                    )
                finally:
                    self.open_requests -= 1
            elapsed = time.perf_counter() - started
            if span is not None:
                span.end_http(getattr(scope.get("route"), "path", None), state["status"])
            if self._metrics is not None:
                self._record(scope, state, elapsed)
            if self._access_log:
                self._log(scope, path, request_id, state, elapsed)

    def _refusal(
        self, path: str, headers: dict[bytes, bytes]
    ) -> tuple[int, str, dict[str, str]] | None:
        if path in OPEN_PATHS:
            return None
        if self._refusing.is_set():
            return (
                503,
                "the server is draining; try again (another replica, or once restarted)",
                {"Retry-After": "1", "Connection": "close"},
            )
        if self._tokens is not None and path not in self._public:
            given = headers.get(b"authorization")
            if not self._tokens.accepts(given.decode("latin-1") if given else None):
                return (
                    401,
                    "a valid bearer token is required (Authorization: Bearer <token>)",
                    {"WWW-Authenticate": "Bearer"},
                )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            return 413, self._too_large(), {"Connection": "close"}
        if self.open_requests >= self._max_open:
            return (
                429,
                f"the server holds {self._max_open} requests; try again shortly",
                {"Retry-After": "1"},
            )
        return None

    def _too_large(self) -> str:
        return f"body: over the server's limit of {self._max_body} bytes (--max-message-bytes)"

    def _record(self, scope: Scope, state: dict[str, Any], elapsed: float) -> None:
        """The request in the server's metrics, labelled by its route's template (not
        its path, whose model names are the caller's) and its model's function."""
        assert self._metrics is not None
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        rpc = f"HTTP {scope['method']} {template}"
        name = scope.get("path_params", {}).get("model_name")
        found = find_model(name) if isinstance(name, str) else None
        function = (
            found.function.name if found is not None else ("-" if name is None else "unknown")
        )
        self._metrics.record_finished(
            rpc, function, "-", str(state["status"]), elapsed, state["bytes_in"], state["bytes_out"]
        )

    def _log(
        self, scope: Scope, path: str, request_id: str, state: dict[str, Any], elapsed: float
    ) -> None:
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        rpc = f"{scope['method']} {path}"
        _ACCESS.info(
            "%s %d %.2fms in=%dB out=%dB",
            rpc,
            state["status"],
            elapsed * 1e3,
            state["bytes_in"],
            state["bytes_out"],
            extra={
                "request_id": request_id,
                "rpc": rpc,
                "code": state["status"],
                "duration_ms": round(elapsed * 1e3, 3),
                "bytes_in": state["bytes_in"],
                "bytes_out": state["bytes_out"],
                "peer": peer,
            },
        )
