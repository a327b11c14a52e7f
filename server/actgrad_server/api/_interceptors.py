"""Server interceptors: what applies to every service, whichever front end serves it.

`ObserveInterceptor` (outermost) gives each call a request id (the caller's
``x-request-id`` or a new uuid4), returns it in the trailing metadata, makes it the
current id of the logs, records the call's metrics, writes the access log line, and
skips calls whose caller already gave up. `AuthInterceptor` refuses calls without an
accepted bearer token, except to the open services (health).

Both wrap the method handler of any kind (unary or streaming, either direction),
so a new servicer is covered by registering it on the server and nothing else.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from actgrad import wire
from actgrad_server import catalog
from actgrad_server.errors import NotFound
from actgrad_server.logs import request_id_scope
from actgrad_server.metrics import ServerMetrics
from actgrad_server.security import TokenSet

__all__ = ["REQUEST_ID_KEY", "AuthInterceptor", "ObserveInterceptor"]

_ACCESS = logging.getLogger("actgrad_server.access")

REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID = 128
_UNKNOWN = "unknown"
# Open Inference Protocol datatypes; anything else is labelled "unknown" so that a
# caller cannot grow the metrics' label sets.
_OIP_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], "Handler | None"]
Behavior: TypeAlias = Callable[..., Any]

# grpc-stubs makes these generic; the runtime classes are not subscriptable.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor


def _code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status code set so far (by abort or set_code); None while none was set."""
    code = getattr(context, "code", None)  # ServicerContext.code() exists since grpc 1.38
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else None


def _gone(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """DEADLINE_EXCEEDED or CANCELLED when nobody waits for the answer any more."""
    if context.is_active():
        remaining = context.time_remaining()
        if remaining is None or remaining > 0:
            return None
        return grpc.StatusCode.DEADLINE_EXCEEDED
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _behavior(function: Behavior | None) -> Behavior:
    if function is None:
        raise TypeError("method handler without a behavior for its kind")
    return function


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _request_id(details: grpc.HandlerCallDetails) -> str:
    """The caller's x-request-id when it is sane (printable ASCII, short), else a uuid4."""
    given = _metadata_value(details, REQUEST_ID_KEY)
    if given and len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


def _service(method: str) -> str:
    # HandlerCallDetails.method is "/package.Service/Method".
    return method.lstrip("/").partition("/")[0]


# -- labels ---------------------------------------------------------------------------


def _function_label(request: Any) -> str:
    fields = request.DESCRIPTOR.fields_by_name
    if request.DESCRIPTOR.full_name == "actgrad.v1.SoftmaxRequest":
        return catalog.SOFTMAX.name
    # actgrad.v1 requests name a function; Open Inference Protocol ones a model.
    name_fields = [f for f in ("function", "model_name") if f in fields]
    if not name_fields:
        return ""
    name = getattr(request, name_fields[0])
    if not name:
        return ""
    try:
        return catalog.lookup(name).name
    except NotFound:
        return _UNKNOWN


def _dtype_label(request: Any) -> str:
    fields = request.DESCRIPTOR.fields_by_name
    if "input" in fields and fields["input"].message_type is not None:
        if not request.HasField("input"):
            return ""
        try:
            return wire.dtype_info(int(request.input.dtype)).name
        except (KeyError, AttributeError):
            return _UNKNOWN
    if "inputs" in fields and len(request.inputs) > 0:
        datatype = getattr(request.inputs[0], "datatype", "")
        return datatype.lower() if datatype in _OIP_DATATYPES else _UNKNOWN
    return ""


def _labels(request: Any) -> tuple[str, str]:
    """(function, dtype) of a request, bounded to known values; ("", "") if none apply."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return "", ""
    if request.DESCRIPTOR.name.endswith("SharedRequest"):
        # Shared-memory requests wrap the ordinary request of their verb.
        request = request.request
    return _function_label(request), _dtype_label(request)


def _size(message: Any) -> int:
    byte_size = getattr(message, "ByteSize", None)
    if callable(byte_size):
        return int(byte_size())
    return len(message) if isinstance(message, bytes) else 0


# -- one observed call ------------------------------------------------------------------


class _Observed:
    """Book-keeping of one call from its handler's start to its end."""

    def __init__(
        self,
        interceptor: ObserveInterceptor,
        rpc: str,
        request_id: str,
        context: grpc.ServicerContext,
    ) -> None:
        self._owner = interceptor
        self.rpc = rpc
        self.request_id = request_id
        self._context = context
        self._start = time.perf_counter()
        self._labels: tuple[str, str] | None = None
        self._bytes_in = 0
        self._bytes_out = 0
        self._done = False
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        interceptor.metrics.in_flight.inc()

    def received(self, request: Any) -> None:
        if self._labels is None:
            self._labels = _labels(request)
        self._bytes_in += _size(request)

    def sent(self, response: Any) -> None:
        if response is not None:
            self._bytes_out += _size(response)

    def still_wanted(self) -> bool:
        """False when the caller cancelled or its deadline passed; the call is then ended."""
        code = _gone(self._context)
        if code is None:
            return True
        self.finish(code)
        return False

    def finish(self, code: grpc.StatusCode | None = None) -> None:
        if self._done:
            return
        self._done = True
        if code is None:
            # A handler that returned for a caller who is gone did not deliver.
            code = _code(self._context) or _gone(self._context) or grpc.StatusCode.OK
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        elapsed = time.perf_counter() - self._start
        function, dtype = self._labels or ("", "")
        metrics = self._owner.metrics
        metrics.in_flight.dec()
        metrics.requests.labels(self.rpc, function, dtype, code_name).inc()
        metrics.latency.labels(self.rpc).observe(elapsed)
        metrics.bytes_in.labels(self.rpc).inc(self._bytes_in)
        metrics.bytes_out.labels(self.rpc).inc(self._bytes_out)
        if self._owner.access_log:
            _ACCESS.info(
                "%s %s %.2fms in=%dB out=%dB",
                self.rpc,
                code_name,
                elapsed * 1e3,
                self._bytes_in,
                self._bytes_out,
                extra={
                    "request_id": self.request_id,
                    "rpc": self.rpc,
                    "code": code_name,
                    "duration_ms": round(elapsed * 1e3, 3),
                    "function": function,
                    "dtype": dtype,
                    "bytes_in": self._bytes_in,
                    "bytes_out": self._bytes_out,
                    "peer": self._context.peer(),
                },
            )

    def finish_on_error(self, exc: BaseException) -> None:
        # context.abort() raises after it recorded the code; a stream the caller
        # abandoned ends here too (CANCELLED); anything else ends in UNKNOWN (our
        # servicers turn their errors into statuses, so that is rare).
        code = _code(self._context) or _gone(self._context)
        if code is None:
            code = (
                grpc.StatusCode.CANCELLED
                if isinstance(exc, GeneratorExit)
                else grpc.StatusCode.UNKNOWN
            )
        self.finish(code)


class ObserveInterceptor(_ServerInterceptor):
    """Request id, metrics, access log and the skip of abandoned calls, for every RPC."""

    def __init__(self, metrics: ServerMetrics, *, access_log: bool = True) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED
        rpc = handler_call_details.method.lstrip("/")
        # grpc runs interceptors when it accepts a call, before the call waits for a
        # thread; `requests_received - requests` is thus the calls queued or running.
        self.metrics.received.labels(rpc).inc()
        request_id = _request_id(handler_call_details)

        def begin(context: grpc.ServicerContext) -> _Observed:
            return _Observed(self, rpc, request_id, context)

        return _wrap(handler, begin)


def _wrap(handler: Handler, begin: Callable[[grpc.ServicerContext], _Observed]) -> Handler:
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _observe_stream_stream(_behavior(handler.stream_stream), begin),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _observe_stream_unary(_behavior(handler.stream_unary), begin),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _observe_unary_stream(_behavior(handler.unary_stream), begin),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        _observe_unary_unary(_behavior(handler.unary_unary), begin),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _observe_unary_unary(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
        call = begin(context)
        call.received(request)
        with request_id_scope(call.request_id):
            if not call.still_wanted():
                # Nobody waits for the answer: do not compute it.
                context.abort(grpc.StatusCode.CANCELLED, "the caller is gone")
            try:
                response = behavior(request, context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        call.sent(response)
        call.finish()
        return response

    return unary_unary


def _observed_responses(
    responses: Iterator[Any], call: _Observed, context: grpc.ServicerContext
) -> Iterator[Any]:
    try:
        while True:
            with request_id_scope(call.request_id):
                try:
                    response = next(responses)
                except StopIteration:
                    break
            call.sent(response)
            yield response
    except BaseException as exc:
        call.finish_on_error(exc)
        raise
    call.finish()


def _observe_unary_stream(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    if getattr(behavior, "experimental_non_blocking", False):
        return _observe_non_blocking(behavior, begin)

    def unary_stream(request: Any, context: grpc.ServicerContext) -> Any:
        call = begin(context)
        call.received(request)
        with request_id_scope(call.request_id):
            if not call.still_wanted():
                context.abort(grpc.StatusCode.CANCELLED, "the caller is gone")
            try:
                responses = behavior(request, context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return _observed_responses(iter(responses), call, context)

    return unary_stream


def _observe_non_blocking(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    """A server-streaming handler that sends through a callback (health Watch).

    It returns at once and the stream lives on, so the call ends in the
    termination callback rather than when the handler returns.
    """

    def non_blocking(
        request: Any, context: grpc.ServicerContext, send_response_callback: Callable[[Any], None]
    ) -> Any:
        call = begin(context)
        call.received(request)

        def send(response: Any) -> None:
            call.sent(response)
            send_response_callback(response)

        if not context.add_callback(call.finish):
            call.finish()
        with request_id_scope(call.request_id):
            try:
                return behavior(request, context, send)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise

    # The server looks for these attributes on the behavior to call it this way.
    non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]
    non_blocking.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
        behavior, "experimental_thread_pool", None
    )
    return non_blocking


def _observed_requests(requests: Iterator[Any], call: _Observed) -> Iterator[Any]:
    for request in requests:
        call.received(request)
        yield request


def _observe_stream_unary(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id):
            try:
                response = behavior(_observed_requests(requests, call), context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        call.sent(response)
        call.finish()
        return response

    return stream_unary


def _observe_stream_stream(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id):
            try:
                responses = behavior(_observed_requests(requests, call), context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return _observed_responses(iter(responses), call, context)

    return stream_stream


# -- authentication -------------------------------------------------------------------


class AuthInterceptor(_ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every service but `open_services`.

    A missing or wrong token ends the call with UNAUTHENTICATED before the servicer
    runs (never UNAVAILABLE, which clients would retry).
    """

    def __init__(self, tokens: TokenSet, *, open_services: Collection[str] = ()) -> None:
        self._tokens = tokens
        self._open = frozenset(open_services)

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        if _service(handler_call_details.method) in self._open or self._tokens.accepts(
            _metadata_value(handler_call_details, "authorization")
        ):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _refuse(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _refuse(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

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
