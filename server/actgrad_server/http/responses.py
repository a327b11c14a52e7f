"""What every HTTP route shares: JSON responses (orjson), errors as HTTP statuses.

The one place where exceptions become HTTP statuses, as `statuses.py` is for gRPC:
domain errors carry a gRPC status name, which maps to the HTTP status that fits;
anything else is a bug, logged with its traceback and answered 500 with a generic
message. Error bodies are the Open Inference Protocol's ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from actgrad.wire import TensorError
from actgrad_server.errors import ActgradServerError, OverLimit

__all__ = [
    "INTERNAL_MESSAGE",
    "HttpError",
    "error_response",
    "json_response",
    "parse_json",
    "status_for",
]

_LOGGER = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"
# The most characters of an error message (request values are already cut where they
# are quoted, errors.shown): a body, unlike a gRPC trailer, has room, but a message
# stays a message.
_MAX_MESSAGE = 1024
# gRPC status names of the domain errors -> HTTP statuses.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
    "DEADLINE_EXCEEDED": 504,
}


class HttpError(Exception):
    """A request refused by the HTTP layer itself (bad JSON, a body over the limit)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`content` as JSON (orjson; numpy arrays allowed)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def status_for(exc: BaseException, where: str) -> tuple[int, str]:
    """The HTTP status and message a caller sees for `exc`; bugs are logged."""
    if isinstance(exc, HttpError):
        return exc.status, _capped(exc.message)
    if isinstance(exc, OverLimit):  # INVALID_ARGUMENT on gRPC, as its contract says
        return 413, _capped(exc.message)
    if isinstance(exc, ActgradServerError):
        return _HTTP_STATUS.get(exc.status, 500), _capped(exc.message)
    if isinstance(exc, TensorError):
        return 400, _capped(str(exc))
    _LOGGER.error("unexpected error in %s", where, exc_info=exc)
    return 500, INTERNAL_MESSAGE


def error_response(exc: BaseException, where: str) -> Response:
    """``{"error": message}`` with the status of `exc` (see `status_for`)."""
    status, message = status_for(exc, where)
    headers = exc.headers if isinstance(exc, HttpError) else None
    if status == 503 and not headers:
        headers = {"Retry-After": "1"}
    return json_response({"error": message}, status, headers)


def parse_json(data: bytes | memoryview, what: str = "body") -> Any:
    """A JSON document (strict: no NaN or Infinity tokens); 400 naming `what` otherwise."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"{what}: not valid JSON ({exc})") from None


def _capped(message: str) -> str:
    if len(message) <= _MAX_MESSAGE:
        return message
    return message[: _MAX_MESSAGE - 20] + "... (message cut)"
