"""The one place where exceptions become gRPC statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from actgrad._codec import TensorError
from actgrad_server.errors import ActgradServerError

__all__ = ["INTERNAL_MESSAGE", "handle_errors"]

_LOGGER = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"

_Method = TypeVar("_Method", bound=Callable[..., Any])


def handle_errors(method: _Method) -> _Method:
    """Wraps a servicer method: domain errors abort with their code, bugs with INTERNAL.

    Tracebacks go to the log, never to the caller, and no call ends in UNKNOWN.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ActgradServerError as exc:
            code, message = grpc.StatusCode[exc.status], exc.message
        except TensorError as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Exception:
            _LOGGER.exception("unexpected error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]
