"""The one place where exceptions become gRPC statuses, for every gRPC front end (actgrad.v1
in `api/`, the Open Inference Protocol in `oip/`): neither imports the other."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from actgrad.wire import TensorError
from actgrad_server.errors import ActgradServerError

__all__ = [
    "INTERNAL_MESSAGE",
    "MAX_DETAILS_BYTES",
    "capped",
    "handle_errors",
    "handle_stream_errors",
    "status_for",
]

_LOGGER = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"
#: The most bytes (UTF-8) of a status message. Request values are cut where they are
#: quoted (`errors.shown`); this bounds whatever else a message grows by, since it
#: travels in the trailer, which gRPC caps at 16 KiB %-encoded (a message over it
#: reaches the caller as RESOURCE_EXHAUSTED "Stream removed" instead).
MAX_DETAILS_BYTES = 1024

_Method = TypeVar("_Method", bound=Callable[..., Any])


def status_for(exc: Exception, where: str) -> tuple[grpc.StatusCode, str]:
    """The status a caller sees for `exc`; bugs are logged with their traceback."""
    if isinstance(exc, ActgradServerError):
        return grpc.StatusCode[exc.status], capped(exc.message)
    if isinstance(exc, TensorError):
        return grpc.StatusCode.INVALID_ARGUMENT, capped(str(exc))
    _LOGGER.error("unexpected error in %s", where, exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def capped(message: str) -> str:
    """`message` cut to MAX_DETAILS_BYTES of UTF-8, saying so when cut."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    note = f"... (message cut: {len(data)} bytes)"
    kept = data[: MAX_DETAILS_BYTES - len(note)].decode("utf-8", "ignore")
    return kept + note


def handle_errors(method: _Method) -> _Method:
    """Wraps a unary servicer method: domain errors abort with their code, bugs with INTERNAL.

    Tracebacks go to the log, never to the caller, and no call ends in UNKNOWN.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            code, message = status_for(exc, method.__name__)
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def handle_stream_errors(method: _Method) -> _Method:
    """The streaming form of `handle_errors`, for response-streaming methods."""

    @functools.wraps(method)
    def wrapper(self: Any, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, requests, context)
            return
        except Exception as exc:
            if not context.is_active():
                # The caller cancelled or its deadline passed: nobody to answer.
                _LOGGER.info("%s: stream ended by the caller", method.__name__)
                return
            code, message = status_for(exc, method.__name__)
            # Read and drop the chunks the caller has already sent before ending the
            # call: grpc.aio clients whose writes fail after the status arrives
            # report INTERNAL instead of our status (grpc/grpc#36066).
            with contextlib.suppress(Exception):  # the call may end meanwhile
                for _ in requests:
                    pass
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]
