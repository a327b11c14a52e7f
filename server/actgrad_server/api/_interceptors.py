"""The server's interceptor: what applies to every service, whichever front end serves it.

`CallInterceptor` refuses new calls once the drain started (UNAVAILABLE) and calls
without an accepted bearer token (UNAUTHENTICATED), except to the open services
(health); runs request-streaming calls on their own pool within an idle timeout
(`StreamGuard`); gives each call a request id (the caller's ``x-request-id`` or a
new uuid4), returns it in the trailing metadata, makes it the current id of the
logs, records the call's metrics, writes the access log line, and skips calls whose
caller already gave up. `CallPool`, the thread pool of the server's calls, logs and
counts the calls that gRPC ended in its queue without running their handler.

It wraps the method handler of any kind (unary or streaming, either direction),
so a new servicer is covered by registering it on the server and nothing else.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from actgrad import wire
from actgrad_server import catalog
from actgrad_server.errors import InvalidArgument
from actgrad_server.logs import request_id_scope
from actgrad_server.metrics import ServerMetrics
from actgrad_server.models import find_model
from actgrad_server.security import TokenSet
from actgrad_server.tracing import CallSpan, Tracing

__all__ = ["REQUEST_ID_KEY", "CallInterceptor", "CallPool", "StreamGuard"]

_ACCESS = logging.getLogger("actgrad_server.access")
_LOGGER = logging.getLogger(__name__)

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


# gRPC ends a call at its deadline a few milliseconds before the deadline it reports
# (time_remaining() was 3-4 ms there): a call ended this close to it is one whose
# deadline passed, not one its caller cancelled.
_DEADLINE_SLACK = 0.1


def _ended_code(remaining: float | None) -> grpc.StatusCode:
    """Why gRPC ended a call that had `remaining` seconds to its deadline (None: none)."""
    if remaining is not None and remaining <= _DEADLINE_SLACK:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _gone(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """DEADLINE_EXCEEDED or CANCELLED when nobody waits for the answer any more."""
    if context.is_active():
        remaining = context.time_remaining()
        if remaining is None or remaining > 0:
            return None
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return _ended_code(context.time_remaining())


def _behavior(function: Behavior | None) -> Behavior:
    if function is None:
        raise TypeError("method handler without a behavior for its kind")
    return function


def _metadata_value(metadata: Any, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _request_id(metadata: Any) -> str:
    """The caller's x-request-id when it is sane (printable ASCII, short), else a uuid4."""
    given = _metadata_value(metadata, REQUEST_ID_KEY)
    if given and len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    # uuid.uuid4().hex without building a UUID object (a third of the cost): 122
    # random bits, with the version (4) and variant (RFC 4122) bits set.
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _service(method: str) -> str:
    # HandlerCallDetails.method is "/package.Service/Method".
    return method.lstrip("/").partition("/")[0]


# -- labels ---------------------------------------------------------------------------


def _label_plan(descriptor: Any) -> tuple[str, str]:
    """Where a request type keeps its function's name and its input's dtype:
    (a name field, `_RPC_NAMES_IT` or "", and "input", "inputs" or "")."""
    fields = descriptor.fields_by_name
    if descriptor.full_name == "actgrad.v1.SoftmaxRequest":
        name_field = _RPC_NAMES_IT
    else:
        # actgrad.v1 requests name a function (Dense: its activation); Open Inference
        # Protocol ones a model.
        name_field = next((f for f in ("function", "activation", "model_name") if f in fields), "")
    if "input" in fields and fields["input"].message_type is not None:
        tensor_field = "input"
    elif "inputs" in fields:
        tensor_field = "inputs"
    else:
        tensor_field = ""
    return name_field, tensor_field


# The request names no function: its rpc is the function (Softmax).
_RPC_NAMES_IT = "(the rpc)"
# One entry per request message type seen: bounded.
_LABEL_PLANS: dict[Any, tuple[str, str]] = {}


def _function_label(request: Any, name_field: str) -> str:
    if name_field == _RPC_NAMES_IT:
        return catalog.SOFTMAX.name
    if not name_field:
        return ""
    name = getattr(request, name_field)
    if not name:
        return ""
    # Exact lookups only: the servicer searches for close matches, once, if it must.
    if name_field != "model_name":
        function = catalog.find(name)
    else:
        model = find_model(name)
        function = None if model is None else model.function
    return _UNKNOWN if function is None else function.name


def _dtype_label(request: Any, tensor_field: str) -> str:
    if tensor_field == "input":
        if not request.HasField("input"):
            return ""
        try:
            return wire.dtype_info(int(request.input.dtype)).name
        except (KeyError, AttributeError):
            return _UNKNOWN
    if tensor_field == "inputs" and len(request.inputs) > 0:
        datatype = getattr(request.inputs[0], "datatype", "")
        return datatype.lower() if datatype in _OIP_DATATYPES else _UNKNOWN
    return ""


def _elements(request: Any) -> int | None:
    """The element count of a request's (first) input tensor, None if it has none."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return None
    fields = request.DESCRIPTOR.fields_by_name
    if "input" in fields and fields["input"].message_type is not None:
        return int(math.prod(request.input.shape)) if request.HasField("input") else None
    if "inputs" in fields and len(request.inputs) > 0:
        return int(math.prod(request.inputs[0].shape))
    return None


def _labels(request: Any) -> tuple[str, str]:
    """(function, dtype) of a request, bounded to known values; ("", "") if none apply."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return "", ""
    plan = _LABEL_PLANS.get(descriptor)
    if plan is None:
        plan = _LABEL_PLANS[descriptor] = _label_plan(descriptor)
    return _function_label(request, plan[0]), _dtype_label(request, plan[1])


# -- one observed call ------------------------------------------------------------------


class _Observed:
    """Book-keeping of one call from its handler's start to its end."""

    def __init__(
        self,
        interceptor: CallInterceptor,
        rpc: str,
        request_id: str,
        context: grpc.ServicerContext,
        span: CallSpan | None = None,
    ) -> None:
        self._owner = interceptor
        self._span = span
        self.trace_id = "-" if span is None else span.trace_id
        self.rpc = rpc
        self.request_id = request_id
        self._context = context
        self._start = time.perf_counter()
        self._labels: tuple[str, str] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        # Popped by the first `finish` (list.pop is atomic): it may race with itself
        # between the serializer's thread and gRPC's callback.
        self._unfinished = [True]
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        interceptor.metrics.in_flight.inc()
        # Whatever path the call takes, it is finished once, at the latest when gRPC
        # terminates it (a unary answer is finished by its serializer, see _Sizes).
        if not context.add_callback(self.finish):
            self.finish()

    def received(self, request: Any) -> None:
        if self._labels is None:
            self._labels = _labels(request)
            if self._span is not None:
                self._span.label(*self._labels, _elements(request))

    def gone(self) -> grpc.StatusCode | None:
        """DEADLINE_EXCEEDED or CANCELLED when nobody waits for the answer; the call is
        then finished with that code (the caller is to be told the same one)."""
        code = _gone(self._context)
        if code is not None:
            self.finish(code)
        return code

    def finish(self, code: grpc.StatusCode | None = None) -> None:
        try:
            self._unfinished.pop()
        except IndexError:
            return
        if code is None:
            # A handler that returned for a caller who is gone did not deliver.
            code = _code(self._context) or _gone(self._context) or grpc.StatusCode.OK
        self._owner.metrics.in_flight.dec()
        _record(
            self._owner,
            self.rpc,
            code,
            time.perf_counter() - self._start,
            request_id=self.request_id,
            span=self._span,
            labels=self._labels or ("", ""),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            peer=self._context.peer(),
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


def _record(
    owner: CallInterceptor,
    rpc: str,
    code: grpc.StatusCode,
    elapsed: float,
    *,
    request_id: str,
    span: CallSpan | None,
    labels: tuple[str, str],
    bytes_in: int,
    bytes_out: int,
    peer: str,
) -> None:
    """One finished call's span end, metrics and access log line."""
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    if span is not None:
        number = code.value[0] if isinstance(code, grpc.StatusCode) else 2  # UNKNOWN
        span.end(number, code_name)
    function, dtype = labels
    owner.metrics.record_finished(rpc, function, dtype, code_name, elapsed, bytes_in, bytes_out)
    if owner.access_log:
        _ACCESS.info(
            "%s %s %.2fms in=%dB out=%dB",
            rpc,
            code_name,
            elapsed * 1e3,
            bytes_in,
            bytes_out,
            extra={
                "request_id": request_id,
                "trace_id": "-" if span is None else span.trace_id,
                "rpc": rpc,
                "code": code_name,
                "duration_ms": round(elapsed * 1e3, 3),
                "function": function,
                "dtype": dtype,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "peer": peer,
            },
        )


# -- calls that end in the queue ----------------------------------------------------------


class _Accepted:
    """A call from the moment gRPC accepted it (the interceptor ran) until its
    handler starts (`begun`, set by `CallInterceptor.begin`)."""

    __slots__ = ("begun", "metadata", "owner", "rpc", "since")

    def __init__(self, owner: CallInterceptor, rpc: str, metadata: Any) -> None:
        self.owner = owner
        self.rpc = rpc
        self.metadata = metadata
        self.since = time.perf_counter()
        self.begun = False

    def dropped(self, deadline: float | None) -> None:
        """gRPC ended the call without running its handler: logged and counted as
        DEADLINE_EXCEEDED or CANCELLED, with the time it waited."""
        remaining = None if deadline is None else deadline - time.time()
        tracing = self.owner.tracing
        _record(
            self.owner,
            self.rpc,
            _ended_code(remaining),
            time.perf_counter() - self.since,
            request_id=_request_id(self.metadata),
            span=None if tracing is None else tracing.start(self.rpc, self.metadata),
            labels=("", ""),  # the request was never read
            bytes_in=0,
            bytes_out=0,
            peer="-",
        )


# The call gRPC accepted, set by the interceptor in the call's own contextvars.Context:
# grpcio runs the interceptor and, later, the call's thread-pool task in that context.
_ACCEPTED: contextvars.ContextVar[_Accepted] = contextvars.ContextVar("actgrad_accepted")


def _accepted(task: Callable[..., Any]) -> _Accepted | None:
    """The accepted call whose thread-pool task `task` is, None for any other task.

    grpcio submits each call as ``pool.submit(state.context.run, handle, rpc_event,
    ...)``: the task is the `run` of the call's context.
    """
    context = getattr(task, "__self__", None)
    return context.get(_ACCEPTED) if isinstance(context, contextvars.Context) else None


def _deadline(args: tuple[Any, ...]) -> float | None:
    """The call's deadline (time.time()'s clock) from the arguments grpcio passes its
    task: the call's event, whose call_details hold it; None if none is found."""
    for arg in args:
        details = getattr(arg, "call_details", None)
        if details is not None:
            deadline = getattr(details, "deadline", None)
            return float(deadline) if isinstance(deadline, int | float) else None
    return None


def _run_accepted(
    accepted: _Accepted,
    task: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        return task(*args, **kwargs)
    finally:
        if not accepted.begun:
            accepted.dropped(_deadline(args))


class CallPool(futures.ThreadPoolExecutor):
    """A thread pool for gRPC's calls that logs and counts those it never ran.

    grpcio does not run the handler of a unary-request call that its caller
    cancelled, or whose deadline passed, before a thread took it (it does not even
    read the request), so the interceptor never sees its end. Each call's task is
    watched here: one whose handler never started is finished as DEADLINE_EXCEEDED
    or CANCELLED (its access log line has no function, dtype or peer, and its
    duration is the time it waited). Every pool that runs calls is one of these:
    the server's, the streams' (`StreamGuard`) and the open services'.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        accepted = _accepted(fn)
        if accepted is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_run_accepted, accepted, fn, args, kwargs)


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
        metrics: ServerMetrics,
        *,
        refusing: threading.Event,
        streams: StreamGuard | None = None,
        tokens: TokenSet | None = None,
        open_services: Collection[str] = (),
        open_pool: futures.ThreadPoolExecutor | None = None,
        access_log: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.tracing = tracing
        self._refusing = refusing
        self._streams = streams
        self._tokens = tokens
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
        _ACCEPTED.set(_Accepted(self, route.rpc, handler_call_details.invocation_metadata))
        if not route.open:
            if self._refusing.is_set():
                return route.refused(handler_call_details, _UNAVAILABLE)
            if self._tokens is not None and not self._tokens.accepts(
                _metadata_value(handler_call_details.invocation_metadata, "authorization")
            ):
                return route.refused(handler_call_details, _UNAUTHENTICATED)
        return route.handler(handler_call_details)

    def begin(self, rpc: str, context: grpc.ServicerContext, metadata: Any) -> _Observed:
        """The book-keeping of one call whose handler starts now; `metadata` is the
        call's invocation metadata, or None to read it from `context`."""
        accepted = _ACCEPTED.get(None)
        if accepted is not None:
            accepted.begun = True
        if metadata is None:
            metadata = context.invocation_metadata()
        span = None if self.tracing is None else self.tracing.start(rpc, metadata)
        return _Observed(self, rpc, _request_id(metadata), context, span)


_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "the server is shutting down; try again")
_UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


class _Route:
    """What one method needs, worked out on its first call."""

    def __init__(self, owner: CallInterceptor, method: str, handler: Handler) -> None:
        self._owner = owner
        self.rpc = method.lstrip("/")
        self.open = _service(method) in owner._open
        self._pool = owner._open_pool if self.open else None
        self.received = owner.metrics.rpc(self.rpc).received
        if owner._streams is not None and not self.open:
            handler = owner._streams.guard(handler)
        self._base = handler
        self._unary = not handler.request_streaming and not handler.response_streaming
        self._handler = self._observed_unary(handler) if self._unary else None
        self._refusals: dict[tuple[grpc.StatusCode, str], Handler] = {}

    def handler(self, details: grpc.HandlerCallDetails) -> Handler:
        if self._handler is not None:
            return self._handler
        return self._observed_per_call(self._base, details)

    def refused(
        self, details: grpc.HandlerCallDetails, refusal: tuple[grpc.StatusCode, str]
    ) -> Handler:
        if not self._unary:
            return self._observed_per_call(_refuse(self._base, *refusal), details)
        found = self._refusals.get(refusal)
        if found is None:
            found = self._refusals[refusal] = self._observed_unary(_refuse(self._base, *refusal))
        return found

    def _observed_per_call(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        """A streaming call: its own (de)serializers count its messages."""
        sizes = _Sizes()
        owner, rpc, metadata = self._owner, self.rpc, details.invocation_metadata

        def begin(context: grpc.ServicerContext) -> _Observed:
            call = owner.begin(rpc, context, metadata)
            sizes.attach(call, finish_when_sent=not handler.response_streaming)
            return call

        return _wrap(handler, begin, sizes, self._pool)

    def _observed_unary(self, handler: Handler) -> Handler:
        """A unary handler for every call of the method (see `CallInterceptor`)."""
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer
        inner = _behavior(handler.unary_unary)
        kind = _message_name(deserialize)
        owner, rpc = self._owner, self.rpc

        def read(data: bytes) -> tuple[Any, int]:
            return _parse(deserialize, kind, data), len(data)

        def unary_unary(received: tuple[Any, int], context: grpc.ServicerContext) -> Any:
            request, size = received
            call = owner.begin(rpc, context, None)
            call.bytes_in = size
            return _run_unary(inner, request, call, context), call

        def write(answer: tuple[Any, _Observed]) -> bytes:
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


class MalformedRequest(InvalidArgument):
    """A request message whose bytes are not a message of its type."""


@dataclass(frozen=True)
class _Malformed:
    """What the deserializer returns for bytes it cannot parse (see _Sizes)."""

    message: str


def _message_name(deserialize: Callable[[bytes], Any] | None) -> str:
    owner = getattr(deserialize, "__self__", None)  # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "message"))


def _parse(deserialize: Callable[[bytes], Any] | None, kind: str, data: bytes) -> Any:
    """The request in `data`, or a `_Malformed` naming what it is not a valid `kind` of.

    Never raised into gRPC: its server answers a failed deserialization of a stream
    message with a status and then a second one, and that call then held the drain
    forever (grpcio 1.85), and it logged a traceback per bad message. The handler
    refuses it instead (`_refuse_malformed`, `_observed_requests`).
    """
    if deserialize is None:
        return data
    try:
        return deserialize(data)
    except Exception as exc:
        return _Malformed(f"request: not a valid {kind} ({type(exc).__name__})")


class _Sizes:
    """Message sizes of one call, counted where gRPC hands over the bytes.

    The (de)serializers see every message's wire bytes, so sizes cost a len(),
    where ByteSize() would encode the whole message again. A unary answer is
    serialized after the handler returned: its serializer finishes the call, so
    that the access log and the duration include it.
    """

    def __init__(self) -> None:
        self._call: _Observed | None = None
        self._pending_in = 0
        self._finish_when_sent = False

    def attach(self, call: _Observed, *, finish_when_sent: bool) -> None:
        self._call = call
        self._finish_when_sent = finish_when_sent
        call.bytes_in += self._pending_in  # a unary request is read before the handler
        self._pending_in = 0

    def deserializer(self, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
        kind = _message_name(deserialize)

        def counted(data: bytes) -> Any:
            if self._call is None:
                self._pending_in += len(data)
            else:
                self._call.bytes_in += len(data)
            return _parse(deserialize, kind, data)

        return counted

    def serializer(self, serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
        def counted(message: Any) -> bytes:
            data: bytes = message if serialize is None else serialize(message)
            call = self._call
            if call is not None:
                call.bytes_out += len(data)
                if self._finish_when_sent:
                    call.finish()
            return data

        return counted


def _wrap(
    handler: Handler,
    begin: Callable[[grpc.ServicerContext], _Observed],
    sizes: _Sizes,
    pool: futures.ThreadPoolExecutor | None = None,
) -> Handler:
    """A streaming handler (either direction) observed for one call; a server-streaming
    one runs on `pool` when given (request-streaming ones on their own, StreamGuard's)."""
    serializers = {
        "request_deserializer": sizes.deserializer(handler.request_deserializer),
        "response_serializer": sizes.serializer(handler.response_serializer),
    }
    if handler.request_streaming and handler.response_streaming:
        inner = _behavior(handler.stream_stream)
        return grpc.stream_stream_rpc_method_handler(
            _same_pool(_observe_stream_stream(inner, begin), inner), **serializers
        )
    if handler.request_streaming:
        inner = _behavior(handler.stream_unary)
        return grpc.stream_unary_rpc_method_handler(
            _same_pool(_observe_stream_unary(inner, begin), inner), **serializers
        )
    # Unary calls have handlers of their own, built once (`_Route._observed_unary`).
    behavior = _observe_unary_stream(_behavior(handler.unary_stream), begin)
    if pool is not None:
        behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return grpc.unary_stream_rpc_method_handler(behavior, **serializers)


def _same_pool(outer: Behavior, inner: Behavior) -> Behavior:
    """`outer` runs on the thread pool `inner` asked for (StreamGuard's)."""
    pool = getattr(inner, "experimental_thread_pool", None)
    if pool is not None:
        outer.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return outer


def _refuse_malformed(request: Any, call: _Observed, context: grpc.ServicerContext) -> None:
    """INVALID_ARGUMENT for a request that could not be parsed (unary requests)."""
    if isinstance(request, _Malformed):
        call.finish(grpc.StatusCode.INVALID_ARGUMENT)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _abort_gone(context: grpc.ServicerContext, code: grpc.StatusCode) -> None:
    # The code the call was finished with (and logged as), so the caller sees it too.
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        context.abort(code, "the deadline passed before the call started")
    context.abort(code, "the caller cancelled the call")


def _run_unary(
    behavior: Callable[..., Any], request: Any, call: _Observed, context: grpc.ServicerContext
) -> Any:
    """Runs a behavior on one request for an observed call: a malformed request is
    refused, a call nobody waits for any more is not computed, and an error finishes
    the call with its code. Returns what the behavior returned."""
    call.received(request)
    with request_id_scope(call.request_id, call.trace_id):
        _refuse_malformed(request, call, context)
        code = call.gone()
        if code is not None:
            # Nobody waits for the answer: do not compute it.
            _abort_gone(context, code)
        try:
            return behavior(request, context)
        except BaseException as exc:
            call.finish_on_error(exc)
            raise


def _observed_responses(
    responses: Iterator[Any], call: _Observed, context: grpc.ServicerContext
) -> Iterator[Any]:
    try:
        while True:
            with request_id_scope(call.request_id, call.trace_id):
                try:
                    response = next(responses)
                except StopIteration:
                    break
                except MalformedRequest as exc:
                    call.finish(grpc.StatusCode.INVALID_ARGUMENT)
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
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
        responses = _run_unary(behavior, request, call, context)
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
            send_response_callback(response)

        with request_id_scope(call.request_id, call.trace_id):
            _refuse_malformed(request, call, context)
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
        if isinstance(request, _Malformed):
            # Our servicers turn this into INVALID_ARGUMENT like any bad request;
            # for other handlers, _observed_responses and stream_unary do.
            raise MalformedRequest(request.message)
        call.received(request)
        yield request


def _observe_stream_unary(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id, call.trace_id):
            try:
                response = behavior(_observed_requests(requests, call), context)
            except MalformedRequest as exc:
                call.finish(grpc.StatusCode.INVALID_ARGUMENT)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return response

    return stream_unary


def _observe_stream_stream(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], _Observed]
) -> Callable[..., Any]:
    def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id, call.trace_id):
            try:
                responses = behavior(_observed_requests(requests, call), context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return _observed_responses(iter(responses), call, context)

    return stream_stream


# -- streams ----------------------------------------------------------------------------


class StreamGuard:
    """Bounds what streaming calls may hold: threads and idle time.

    Request-streaming calls run on a thread pool of their own (`slots` threads; more
    wait their turn there), so unary calls always find a thread of the server's
    pool; and a stream with no message either way for `idle_timeout` seconds is
    cancelled. A client that stops reading leaves the server blocked sending an
    answer (its flow-control window is full); one that stops sending leaves it
    waiting for the next chunk: either way a thread and the messages in flight are
    held until the call ends, which cancelling brings about. `CallInterceptor`
    leaves the open services (health, whose Watch streams are long by design)
    unguarded.
    """

    def __init__(self, slots: int, idle_timeout: float) -> None:
        self.pool = CallPool(max_workers=slots, thread_name_prefix="actgrad-rpc-stream")
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[list[float], grpc.ServicerContext]] = {}
        self._stop = threading.Event()
        if idle_timeout > 0:
            threading.Thread(target=self._watch, name="actgrad-stream-idle", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True)

    def _watch(self) -> None:
        period = min(1.0, self._idle_timeout / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                idle = [
                    c for last, c in self._streams.values() if now - last[0] > self._idle_timeout
                ]
            for context in idle:
                _LOGGER.warning("cancelling a stream idle for more than %.1fs", self._idle_timeout)
                context.cancel()  # type: ignore[no-untyped-call]

    def guard(self, handler: Handler) -> Handler:
        """`handler` as it runs under the guard: request-streaming ones on the pool,
        within the idle timeout; others as they are."""
        if not handler.request_streaming:
            return handler
        if handler.response_streaming:
            behavior = self._guard_stream_stream(_behavior(handler.stream_stream))
            make: Callable[..., Handler] = grpc.stream_stream_rpc_method_handler
        else:
            behavior = self._guard_stream_unary(_behavior(handler.stream_unary))
            make = grpc.stream_unary_rpc_method_handler
        # grpc runs a behavior with this attribute on that pool (_wrap passes it on).
        behavior.experimental_thread_pool = self.pool  # type: ignore[attr-defined]
        return make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _enter(self, context: grpc.ServicerContext) -> list[float]:
        """Registers the stream's last progress, until the call ends."""
        last = [time.monotonic()]
        key = id(context)
        with self._lock:
            self._streams[key] = (last, context)

        def leave() -> None:
            with self._lock:
                self._streams.pop(key, None)

        if not context.add_callback(leave):
            leave()
        return last

    @staticmethod
    def _touching(items: Iterator[Any], last: list[float]) -> Iterator[Any]:
        for item in items:
            last[0] = time.monotonic()
            yield item
            last[0] = time.monotonic()

    def _guard_stream_stream(self, behavior: Behavior) -> Behavior:
        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            last = self._enter(context)
            responses = behavior(self._touching(requests, last), context)
            return self._touching(iter(responses), last)

        return stream_stream

    def _guard_stream_unary(self, behavior: Behavior) -> Behavior:
        def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            last = self._enter(context)
            return behavior(self._touching(requests, last), context)

        return stream_unary


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
