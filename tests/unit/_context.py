"""A stand-in for `grpc.ServicerContext`, for servicers called in process."""

from __future__ import annotations

from typing import NoReturn

import grpc

__all__ = ["Aborted", "FakeContext"]


class Aborted(Exception):
    """What `FakeContext.abort` raises: the status a servicer ended the call with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """The context methods the servicers call: abort, and is_active (always True)."""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)

    def is_active(self) -> bool:
        return True
