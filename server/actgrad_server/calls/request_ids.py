"""Request ids: the caller's (``x-request-id`` on either front end) when it is sane,
else a new one, so that a call's log lines, trailers and headers can be matched."""

from __future__ import annotations

import os
import random

__all__ = ["MAX_REQUEST_ID", "REQUEST_ID_KEY", "new_request_id", "request_id"]

#: The metadata key (gRPC) and header (HTTP, any case) of a request id.
REQUEST_ID_KEY = "x-request-id"
#: A longer id than this is the caller's mistake (or an attack on the logs): replaced.
MAX_REQUEST_ID = 128


# Request ids must be unique, not secret: a per-process generator seeded from the OS
# (a child of a fork reseeds, see below) costs a fraction of a getrandom syscall per call.
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)
_VERSION_4 = 0x4 << 76
_VARIANT = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def new_request_id() -> str:
    """A uuid4's hex form (32 digits; 122 random bits, the version (4) and variant
    (RFC 4122) bits set) without building a UUID object."""
    return "%032x" % ((_RANDOM.getrandbits(128) & _KEEP) | _VERSION_4 | _VARIANT)


def request_id(given: str | None) -> str:
    """`given` when it is printable ASCII of at most MAX_REQUEST_ID characters, else a
    new id."""
    if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return new_request_id()
