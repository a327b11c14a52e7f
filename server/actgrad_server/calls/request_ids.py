"""Request ids: the caller's (``x-request-id`` on either front end) when it is sane,
else a new one, so that a call's log lines, trailers and headers can be matched."""

from __future__ import annotations

import os

__all__ = ["MAX_REQUEST_ID", "REQUEST_ID_KEY", "new_request_id", "request_id"]

#: The metadata key (gRPC) and header (HTTP, any case) of a request id.
REQUEST_ID_KEY = "x-request-id"
#: A longer id than this is the caller's mistake (or an attack on the logs): replaced.
MAX_REQUEST_ID = 128


def new_request_id() -> str:
    """uuid.uuid4().hex without building a UUID object (a third of the cost): 122
    random bits, with the version (4) and variant (RFC 4122) bits set."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def request_id(given: str | None) -> str:
    """`given` when it is printable ASCII of at most MAX_REQUEST_ID characters, else a
    new id."""
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return new_request_id()
