"""The server's gRPC interceptor: the gRPC adapter of what surrounds every call.

`CallInterceptor` asks the process's `Admission` (shared with the HTTP front end)
whether a call may start, and answers a refusal with its gRPC status (UNAVAILABLE
while draining, UNAUTHENTICATED without an accepted bearer token), except for the
open services (health); runs request-streaming calls on their own pool within an idle
timeout (`_streams.StreamGuard`); and observes every call (`_observed.Observed`): a
request id (the caller's ``x-request-id`` or a new one, `calls.request_ids`) returned
in the trailing metadata and current in the logs, the call's record in the shared
`CallRecords` (metrics with protocol "grpc", access log), its tracing span, and the
skip of calls whose caller already gave up. `_queue.CallPool` finishes the calls gRPC
ended in its queue.

It wraps the method handler of any kind (unary or streaming, either direction),
so a new servicer is covered by registering it on the server and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from actgrad_server.api._behaviors import run_unary, wrap
from actgrad_server.api._observed import (
    Handler,
    Observed,
    Sizes,
    behavior_of,
    message_name,
    metadata_value,
    parse_message,
)
from actgrad_server.api._queue import ACCEPTED, Accepted, CallPool
from actgrad_server.api._streams import StreamGuard
from actgrad_server.calls.admission import Admission, Refusal
from actgrad_server.calls.records import GRPC, CallRecords
from actgrad_server.calls.request_ids import REQUEST_ID_KEY, request_id
from actgrad_server.tracing import Tracing

__all__ = ["REQUEST_ID_KEY", "CallInterceptor", "CallPool", "StreamGuard"]

Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], "Handler | None"]

# grpc-stubs makes these generic; the runtime classes are not subscriptable.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor


def _service(method: str) -> str:
    # HandlerCallDetails.method is "/package.Service/Method".
    return method.lstrip("/").partition("/")[0]


class CallInterceptor(_ServerInterceptor):
    """The server's one interceptor: drain refusal, bearer tokens, the stream pool,
    and the request id, metrics, access log and skip of abandoned calls.

    What a method needs is worked out once, on its first call (`_Route`); a call
    then costs a dict lookup, the drain and token checks, and the counting. Unary
    calls, most of the traffic, get a handler built once: its deserializer hands the
    behavior the request with its size, and the behavior hands the serializer the
    answer with the call's book-keeping (grpc passes both through untouched).
    Streaming calls are wrapped per call (`_wrap`), where the cost is spread over
    their messages.

    The checks keep the order of the interceptors they replace: a draining server
    refuses with UNAVAILABLE before tokens are looked at; `open_services` (health)
    are neither refused nor asked for a token; refusals are observed like any call.
    """

    def __init__(
        self,
        records: CallRecords,
        admission: Admission,
        *,
        streams: StreamGuard | None = None,
        open_services: Collection[str] = (),
        open_pool: futures.ThreadPoolExecutor | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.records = records
        self.tracing = tracing
        self._admission = admission
        self._streams = streams
        self._open = frozenset(open_services)
        # The open services' calls run on this pool when given (health probes never
        # wait behind the work); grpc runs a behavior on its `experimental_thread_pool`.
        self._open_pool = open_pool
        # One entry per served method (unknown ones are not kept): bounded.
        self._routes: dict[str, _Route] = {}

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        route = self._routes.get(handler_call_details.method)
        if route is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None  # grpc answers UNIMPLEMENTED
            route = self._routes.setdefault(
                handler_call_details.method, _Route(self, handler_call_details.method, handler)
            )
        # grpc runs interceptors when it accepts a call, before the call waits for a
        # thread; `requests_received - requests` is thus the calls queued or running.
        route.received.inc()
        # Watched until its handler starts, in case it ends in the queue (`CallPool`).
        ACCEPTED.set(Accepted(self, route.rpc, handler_call_details.invocation_metadata))
        if not route.open:
            admission = self._admission
            refusal = admission.check(
                None
                if admission.tokens is None
                else metadata_value(handler_call_details.invocation_metadata, "authorization")
            )
            if refusal is not None:
                return route.refused(handler_call_details, refusal)
        return route.handler(handler_call_details)

    def begin(self, rpc: str, context: grpc.ServicerContext, metadata: Any) -> Observed:
        """The book-keeping of one call whose handler starts now; `metadata` is the
        call's invocation metadata, or None to read it from `context`."""
        accepted = ACCEPTED.get(None)
        if accepted is not None:
            accepted.begun = True
        if metadata is None:
            metadata = context.invocation_metadata()
        span = None if self.tracing is None else self.tracing.start(rpc, metadata)
        given = metadata_value(metadata, REQUEST_ID_KEY)
        return Observed(self.records, rpc, request_id(given), context, span)


# The status of each refusal `Admission` gives (the overload and size limits are
# gRPC's own: RESOURCE_EXHAUSTED from grpc's concurrency cap and message limits).
_CODES = {
    "draining": grpc.StatusCode.UNAVAILABLE,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
}


class _Route:
    """What one method needs, worked out on its first call."""

    def __init__(self, owner: CallInterceptor, method: str, handler: Handler) -> None:
        self._owner = owner
        self.rpc = method.lstrip("/")
        self.open = _service(method) in owner._open
        self._pool = owner._open_pool if self.open else None
        self.received = owner.records.received(GRPC, self.rpc)
        if owner._streams is not None and not self.open:
            handler = owner._streams.guard(handler)
        self._base = handler
        self._unary = not handler.request_streaming and not handler.response_streaming
        self._handler = self._observed_unary(handler) if self._unary else None
        self._refusals: dict[Refusal, Handler] = {}

    def handler(self, details: grpc.HandlerCallDetails) -> Handler:
        if self._handler is not None:
            return self._handler
        return self._observed_per_call(self._base, details)

    def refused(self, details: grpc.HandlerCallDetails, refusal: Refusal) -> Handler:
        if not self._unary:
            return self._observed_per_call(_refuse(self._base, refusal), details)
        found = self._refusals.get(refusal)
        if found is None:
            found = self._refusals[refusal] = self._observed_unary(_refuse(self._base, refusal))
        return found

    def _observed_per_call(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        """A streaming call: its own (de)serializers count its messages."""
        sizes = Sizes()
        owner, rpc, metadata = self._owner, self.rpc, details.invocation_metadata

        def begin(context: grpc.ServicerContext) -> Observed:
            call = owner.begin(rpc, context, metadata)
            sizes.attach(call, finish_when_sent=not handler.response_streaming)
            return call

        return wrap(handler, begin, sizes, self._pool)

    def _observed_unary(self, handler: Handler) -> Handler:
        """A unary handler for every call of the method (see `CallInterceptor`)."""
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer
        inner = behavior_of(handler.unary_unary)
        kind = message_name(deserialize)
        owner, rpc = self._owner, self.rpc

        def read(data: bytes) -> tuple[Any, int]:
            return parse_message(deserialize, kind, data), len(data)

        def unary_unary(received: tuple[Any, int], context: grpc.ServicerContext) -> Any:
            request, size = received
            call = owner.begin(rpc, context, None)
            call.bytes_in = size
            return run_unary(inner, request, call, context), call

        def write(answer: tuple[Any, Observed]) -> bytes:
            response, call = answer
            data: bytes = response if serialize is None else serialize(response)
            call.bytes_out += len(data)
            # Finished here (or, if gRPC never sends it, at the call's end), so that
            # the access log and the duration include the serialization.
            call.finish()
            return data

        if self._pool is not None:
            unary_unary.experimental_thread_pool = self._pool  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=read, response_serializer=write
        )


def _refuse(handler: Handler, refusal: Refusal) -> Handler:
    code = _CODES[refusal.reason]

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, refusal.message)

    if handler.request_streaming and handler.response_streaming:
        make: Callable[..., Handler] = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
