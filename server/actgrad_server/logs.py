"""Logging set-up: one format (plain or JSON lines) and the request id of each call.

The request id of the call a thread is serving lives in a context variable, set by
the server interceptor for the duration of the call; a filter copies it onto every
log record (``-`` outside calls), so any ``_LOGGER.info`` inside a call carries it.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
from typing import Any

__all__ = [
    "JsonFormatter",
    "PlainFormatter",
    "RequestIdFilter",
    "configure_logging",
    "current_request_id",
    "escape_request_id",
    "request_id_scope",
]

_NO_REQUEST = "-"
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "actgrad_request_id", default=_NO_REQUEST
)
_TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "actgrad_trace_id", default=_NO_REQUEST
)
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "trace_id",
    "taskName",
}


def current_request_id() -> str:
    """The request id of the call this thread serves, or ``"-"`` outside calls."""
    return _REQUEST_ID.get()


class request_id_scope:  # noqa: N801 - used as a function: `with request_id_scope(...)`
    """Makes `request_id` (and the call's trace id, with tracing on) the current ones
    until the block ends.

    A class rather than a generator-based context manager: it is entered for every
    call and every stream message, and this costs a third as much.
    """

    __slots__ = ("_ids", "_tokens")

    def __init__(self, request_id: str, trace_id: str = _NO_REQUEST) -> None:
        self._ids = (request_id, trace_id)
        self._tokens: tuple[Any, Any] | None = None

    def __enter__(self) -> None:
        request_id, trace_id = self._ids
        self._tokens = (_REQUEST_ID.set(request_id), _TRACE_ID.set(trace_id))

    def __exit__(self, *exc_info: object) -> None:
        if self._tokens is not None:
            token, trace_token = self._tokens
            _TRACE_ID.reset(trace_token)
            _REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current call's id) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _REQUEST_ID.get()
        if not hasattr(record, "trace_id"):
            record.trace_id = _TRACE_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras.

    ``_LOGGER.info("done", extra={"rpc": "Activate"})`` adds ``"rpc": "Activate"``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", _NO_REQUEST),
        }
        trace_id = getattr(record, "trace_id", _NO_REQUEST)
        if trace_id != _NO_REQUEST:  # with --tracing: the call's OpenTelemetry trace
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


_SAFE_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/@+=~-")


def escape_request_id(request_id: str) -> str:
    """The id as a plain log line shows it: any character but [A-Za-z0-9._:/@+=~-]
    percent-encoded, so that a caller's id cannot close the brackets or fake fields."""
    return "".join(
        c if c in _SAFE_ID else "".join(f"%{b:02X}" for b in c.encode()) for c in request_id
    )


class PlainFormatter(logging.Formatter):
    """PLAIN_FORMAT, with the request id escaped (JSON lines escape it by themselves)."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        raw = getattr(record, "request_id", _NO_REQUEST)
        record.request_id = escape_request_id(str(raw))
        try:
            return super().formatMessage(record)
        finally:
            record.request_id = raw


def configure_logging(level: str, log_format: str) -> None:
    """Sets up the root logger once for `actgrad serve` (stderr, the chosen format)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
