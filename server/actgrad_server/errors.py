"""Domain errors. Each carries the name of the gRPC status code it maps to.

The catalog and the engine raise these without importing grpc; `api/` turns
them into `context.abort` in one place. A request's value goes into a message
only through `shown`, cut to a few dozen characters.
"""

from __future__ import annotations

__all__ = [
    "ActgradServerError",
    "ConfigError",
    "InvalidArgument",
    "NotFound",
    "OverLimit",
    "Unavailable",
    "shown",
]

# What `shown` keeps of a value. A status message travels in the call's trailer,
# whose size gRPC limits (16 KiB, %-encoded): a value echoed whole from 16 KiB on
# turned the caller's INVALID_ARGUMENT into RESOURCE_EXHAUSTED "Stream removed".
_SHOWN = 40


def shown(value: str) -> str:
    """A request's value as error messages quote it: repr'd, cut to a few dozen
    characters, with its length when cut."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


class ActgradServerError(Exception):
    """Base class: `status` is a grpc.StatusCode member name."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ActgradServerError):
    status = "INVALID_ARGUMENT"


class OverLimit(InvalidArgument):
    """A request over the server's limits (`config.Limits`: elements, rank, bytes).

    Still INVALID_ARGUMENT on gRPC, as the contract says; HTTP answers 413 for it.
    """


class NotFound(ActgradServerError):
    status = "NOT_FOUND"


class Unavailable(ActgradServerError):
    status = "UNAVAILABLE"


class ConfigError(Exception):
    """Bad configuration detected at start-up (not a request error)."""
