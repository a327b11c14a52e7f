"""Whether a call may start: the drain, bearer tokens, the concurrency and size limits.

The answer is a `Refusal` (or None): a reason and a message in plain words, which each
front end maps to its own status (gRPC: UNAVAILABLE, UNAUTHENTICATED; HTTP: 503, 401,
429, 413 with their headers). The order is the same everywhere: a draining server
refuses before tokens are looked at, so a probe of a draining replica never reads as
an auth failure. The open services (health) are admitted without either check; that
choice is the front end's, which knows its routes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from actgrad_server.security import TokenSet

__all__ = ["DRAINING", "UNAUTHENTICATED", "Admission", "Refusal", "overloaded", "too_large"]


@dataclass(frozen=True)
class Refusal:
    """Why a call was not admitted. `reason` is one of "draining", "unauthenticated",
    "overloaded" or "too_large"; `retry` says whether the same call may succeed later
    (or on another replica)."""

    reason: str
    message: str
    retry: bool


DRAINING = Refusal(
    "draining", "the server is draining; try again (another replica, or once restarted)", True
)
UNAUTHENTICATED = Refusal(
    "unauthenticated", "a valid bearer token is required (authorization: Bearer <token>)", False
)


def overloaded(limit: int) -> Refusal:
    """More calls open than the front end may hold."""
    return Refusal("overloaded", f"the server holds {limit} requests; try again shortly", True)


def too_large(limit: int) -> Refusal:
    """A request over the size limit."""
    return Refusal(
        "too_large",
        f"body: over the server's limit of {limit} bytes (--max-message-bytes)",
        False,
    )


class Admission:
    """The drain's flag and the token set, shared by every front end of a process."""

    __slots__ = ("_refusing", "tokens")

    def __init__(self, refusing: threading.Event, tokens: TokenSet | None = None) -> None:
        self._refusing = refusing
        #: None when no token is required; front ends read the header only if set.
        self.tokens = tokens

    def check(self, authorization: str | None) -> Refusal | None:
        """None when a call with this ``authorization`` value may start now."""
        if self._refusing.is_set():
            return DRAINING
        if self.tokens is not None and not self.tokens.accepts(authorization):
            return UNAUTHENTICATED
        return None

    @property
    def draining(self) -> bool:
        return self._refusing.is_set()
