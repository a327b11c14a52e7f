"""Domain errors. Each carries the name of the gRPC status code it maps to.

The catalog and the engine raise these without importing grpc; `api/` turns
them into `context.abort` in one place.
"""

from __future__ import annotations

__all__ = [
    "ActgradServerError",
    "ConfigError",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
]


class ActgradServerError(Exception):
    """Base class: `status` is a grpc.StatusCode member name."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ActgradServerError):
    status = "INVALID_ARGUMENT"


class NotFound(ActgradServerError):
    status = "NOT_FOUND"


class Unavailable(ActgradServerError):
    status = "UNAVAILABLE"


class ConfigError(Exception):
    """Bad configuration detected at start-up (not a request error)."""
