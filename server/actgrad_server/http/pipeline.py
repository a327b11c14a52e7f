"""The HTTP adapter of what surrounds every call (one ASGI middleware).

The concerns are the ones the gRPC interceptor runs, from `actgrad_server.calls`; this
module only reads them from HTTP and writes their answers back. In order: a request id
(`calls.request_ids`: the caller's ``X-Request-Id`` when sane, else a new one; sent
back on every answer and on the log lines of the request); the route's template (the
metrics' `rpc`, ``HTTP <method> <template>``) and the received count; admission
(`calls.admission`: the drain's refusal, 503 with ``Retry-After`` and ``Connection:
close``; bearer tokens, 401; the health routes and the `public_paths`, the playground
page's files, need neither, and health says the truth through the drain itself); the
body limit (``--max-message-bytes``: 413 from Content-Length, or once a streamed body
passes it); the concurrency cap (429 with ``Retry-After`` over what gRPC calls may
hold); the open-call account the drain waits for (`calls.records`, shared with gRPC);
with ``--tracing``, an OpenTelemetry span, child of the caller's ``traceparent``; and
the finished request's record (metrics with protocol "http", access log).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actgrad_server.calls import admission as admitting
from actgrad_server.calls.admission import Admission, Refusal
from actgrad_server.calls.labels import model_label
from actgrad_server.calls.records import HTTP, CallRecords
from actgrad_server.calls.request_ids import request_id
from actgrad_server.http.responses import HttpError, json_response
from actgrad_server.logs import request_id_scope
from actgrad_server.tracing import Tracing

__all__ = ["OPEN_PATHS", "Pipeline", "RequestTooLarge"]

#: Answered without a token and during the drain: probes need neither.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# Route templates remembered per (method, path): paths carry the caller's model names,
# so only this many are kept (the rest are matched each time).
_MAX_TEMPLATES = 4096
_UNMATCHED = "unmatched"


class RequestTooLarge(HttpError):
    """A body that passed the limit while it was read."""


# The status and headers of each refusal `Admission` gives.
_STATUS: dict[str, tuple[int, dict[str, str]]] = {
    "draining": (503, {"Retry-After": "1", "Connection": "close"}),
    "unauthenticated": (401, {"WWW-Authenticate": "Bearer"}),
    "overloaded": (429, {"Retry-After": "1"}),
    "too_large": (413, {"Connection": "close"}),
}


class Pipeline:
    """The ASGI middleware around every route; `open_requests` is what the drain waits for."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        *,
        admission: Admission,
        records: CallRecords,
        max_body_bytes: int,
        max_open: int,
        tracing: Tracing | None = None,
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self._app = app
        self._routes = tuple(routes)
        self._templates: dict[tuple[str, str], str] = {}
        self._received: dict[str, Any] = {}
        self._public = public_paths
        self._admission = admission
        self._records = records
        self._max_body = max_body_bytes
        self._too_large = admitting.too_large(max_body_bytes)
        self._max_open = max_open
        self._overloaded = admitting.overloaded(max_open)
        self._tracing = tracing
        #: HTTP requests being answered now (also in the shared in-flight account).
        self.open_requests = 0

    def _template(self, scope: Scope) -> str:
        """The template of the route a request goes to ("unmatched" for none): the
        metrics' label, known before the route runs."""
        key = (scope["method"], scope["path"])
        found = self._templates.get(key)
        if found is not None:
            return found
        template = _UNMATCHED
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                template = getattr(route, "path", _UNMATCHED)
                if match is Match.FULL:
                    break
        if len(self._templates) < _MAX_TEMPLATES:
            self._templates[key] = template
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        rpc = f"HTTP {scope['method']} {self._template(scope)}"
        counter = self._received.get(rpc)
        if counter is None:
            counter = self._received[rpc] = self._records.received(HTTP, rpc)
        counter.inc()
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id")
        rid = request_id(given.decode("latin-1") if given else None)
        path: str = scope["path"]
        state: dict[str, Any] = {"status": 0, "bytes_out": 0, "bytes_in": 0}
        id_header = (b"x-request-id", rid.encode("ascii"))

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
                    raise RequestTooLarge(413, self._too_large.message, {"Connection": "close"})
            return message

        span = None
        if self._tracing is not None:
            span = self._tracing.start_http(
                scope["method"],
                path,
                {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()},
            )
        with request_id_scope(rid, "-" if span is None else span.trace_id):
            refusal = self._refusal(path, headers)
            if refusal is not None:
                status, extra = _STATUS[refusal.reason]
                answer = json_response({"error": refusal.message}, status, extra)
                await answer(scope, receive, send_with_id)
            else:
                self.open_requests += 1
                self._records.opened()
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
                    self._records.closed()
            elapsed = time.perf_counter() - started
            if span is not None:
                span.end_http(getattr(scope.get("route"), "path", None), state["status"])
            name = scope.get("path_params", {}).get("model_name")
            client = scope.get("client")
            self._records.finished(
                HTTP,
                rpc,
                str(state["status"]),
                elapsed,
                request_id=rid,
                trace_id="-" if span is None else span.trace_id,
                function=model_label(name) if isinstance(name, str) else "",
                dtype="",
                bytes_in=state["bytes_in"],
                bytes_out=state["bytes_out"],
                peer=f"{client[0]}:{client[1]}" if client else "-",
                target=f"{scope['method']} {path}",
            )

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> Refusal | None:
        if path in OPEN_PATHS:
            return None
        if path in self._public:
            refusal = admitting.DRAINING if self._admission.draining else None
        else:
            given = headers.get(b"authorization")
            refusal = self._admission.check(given.decode("latin-1") if given else None)
        if refusal is not None:
            return refusal
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            return self._too_large
        if self.open_requests >= self._max_open:
            return self._overloaded
        return None
