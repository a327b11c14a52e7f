"""One observed gRPC call (`Observed`): from its handler's start to its end, once,
whichever way it ends, recorded through the process's `CallRecords`; the sizes of its
messages (`Sizes`, counted where gRPC hands over the bytes); requests that do not parse
(`Malformed`); and how gRPC says a call ended (`status_code`, `gone_code`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from actgrad_server.api._labels import elements, labels
from actgrad_server.calls.records import GRPC, CallRecords
from actgrad_server.calls.request_ids import REQUEST_ID_KEY
from actgrad_server.errors import InvalidArgument
from actgrad_server.tracing import CallSpan

__all__ = [
    "Behavior",
    "Handler",
    "Malformed",
    "MalformedRequest",
    "Observed",
    "Sizes",
    "behavior_of",
    "ended_code",
    "gone_code",
    "message_name",
    "metadata_value",
    "parse_message",
    "record_call",
    "status_code",
]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior: TypeAlias = Callable[..., Any]


def status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status code set so far (by abort or set_code); None while none was set."""
    code = getattr(context, "code", None)  # ServicerContext.code() exists since grpc 1.38
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else None


# gRPC ends a call at its deadline a few milliseconds before the deadline it reports
# (time_remaining() was 3-4 ms there): a call ended this close to it is one whose
# deadline passed, not one its caller cancelled.
_DEADLINE_SLACK = 0.1


def ended_code(remaining: float | None) -> grpc.StatusCode:
    """Why gRPC ended a call that had `remaining` seconds to its deadline (None: none)."""
    if remaining is not None and remaining <= _DEADLINE_SLACK:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def gone_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """DEADLINE_EXCEEDED or CANCELLED when nobody waits for the answer any more."""
    if context.is_active():
        remaining = context.time_remaining()
        if remaining is None or remaining > 0:
            return None
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return ended_code(context.time_remaining())


def metadata_value(metadata: Any, key: str) -> str | None:
    """The value of `key` in a call's invocation metadata (text values only)."""
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def behavior_of(function: Behavior | None) -> Behavior:
    if function is None:
        raise TypeError("method handler without a behavior for its kind")
    return function


class Observed:
    """Book-keeping of one call from its handler's start to its end."""

    def __init__(
        self,
        records: CallRecords,
        rpc: str,
        request_id: str,
        context: grpc.ServicerContext,
        span: CallSpan | None = None,
    ) -> None:
        self._records = records
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
        records.opened()
        # Whatever path the call takes, it is finished once, at the latest when gRPC
        # terminates it (a unary answer is finished by its serializer, see Sizes).
        if not context.add_callback(self.finish):
            self.finish()

    def received(self, request: Any) -> None:
        if self._labels is None:
            self._labels = labels(request)
            if self._span is not None:
                self._span.label(*self._labels, elements(request))

    def gone(self) -> grpc.StatusCode | None:
        """DEADLINE_EXCEEDED or CANCELLED when nobody waits for the answer; the call is
        then finished with that code (the caller is to be told the same one)."""
        code = gone_code(self._context)
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
            code = status_code(self._context) or gone_code(self._context) or grpc.StatusCode.OK
        self._records.closed()
        record_call(
            self._records,
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
        code = status_code(self._context) or gone_code(self._context)
        if code is None:
            code = (
                grpc.StatusCode.CANCELLED
                if isinstance(exc, GeneratorExit)
                else grpc.StatusCode.UNKNOWN
            )
        self.finish(code)


def record_call(
    records: CallRecords,
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
    records.finished(
        GRPC,
        rpc,
        code_name,
        elapsed,
        request_id=request_id,
        trace_id="-" if span is None else span.trace_id,
        function=labels[0],
        dtype=labels[1],
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        peer=peer,
    )


class MalformedRequest(InvalidArgument):
    """A request message whose bytes are not a message of its type."""


@dataclass(frozen=True)
class Malformed:
    """What the deserializer returns for bytes it cannot parse (see Sizes)."""

    message: str


def message_name(deserialize: Callable[[bytes], Any] | None) -> str:
    owner = getattr(deserialize, "__self__", None)  # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "message"))


def parse_message(deserialize: Callable[[bytes], Any] | None, kind: str, data: bytes) -> Any:
    """The request in `data`, or a `Malformed` naming what it is not a valid `kind` of.

    Never raised into gRPC: its server answers a failed deserialization of a stream
    message with a status and then a second one, and that call then held the drain
    forever (grpcio 1.85), and it logged a traceback per bad message. The handler
    refuses it instead (`_behaviors`: `refuse_malformed`, `_observed_requests`).
    """
    if deserialize is None:
        return data
    try:
        return deserialize(data)
    except Exception as exc:
        return Malformed(f"request: not a valid {kind} ({type(exc).__name__})")


class Sizes:
    """Message sizes of one call, counted where gRPC hands over the bytes.

    The (de)serializers see every message's wire bytes, so sizes cost a len(),
    where ByteSize() would encode the whole message again. A unary answer is
    serialized after the handler returned: its serializer finishes the call, so
    that the access log and the duration include it.
    """

    def __init__(self) -> None:
        self._call: Observed | None = None
        self._pending_in = 0
        self._finish_when_sent = False

    def attach(self, call: Observed, *, finish_when_sent: bool) -> None:
        self._call = call
        self._finish_when_sent = finish_when_sent
        call.bytes_in += self._pending_in  # a unary request is read before the handler
        self._pending_in = 0

    def deserializer(self, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
        kind = message_name(deserialize)

        def counted(data: bytes) -> Any:
            if self._call is None:
                self._pending_in += len(data)
            else:
                self._call.bytes_in += len(data)
            return parse_message(deserialize, kind, data)

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
