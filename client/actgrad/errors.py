"""The SDK's exception tree, one class per gRPC status family.

Every error the SDK raises for a failed call is an `ActgradError` carrying the
status `code` (a `grpc.StatusCode`) and the server's `details`, raised `from` the
original `grpc.RpcError`. Catch a subclass to handle one family, or
`ActgradError` for all of them::

    from actgrad import Client, InvalidArgumentError, NotFoundError

    with Client() as client:
        try:
            client.activate([1.0], "no_such_function")
        except NotFoundError as exc:
            print(exc.code.name, exc.details)   # NOT_FOUND unknown function ...

Programming mistakes found before any network call (an integer array, a
parameter of an unsupported type) raise `TypeError` instead.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "ActgradError",
    "CallCancelledError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnexpectedStatusError",
    "UnimplementedError",
    "from_grpc_error",
]


class ActgradError(Exception):
    """A call that ended with a non-OK gRPC status.

    `code` is the `grpc.StatusCode`, `details` the server's message. Callers branch
    on the class or on `code`, never on the text::

        try:
            client.softmax(x, temperature=0.0)
        except ActgradError as exc:
            if exc.code is grpc.StatusCode.INVALID_ARGUMENT:
                ...
    """

    #: The status code this class stands for; `None` on classes covering several.
    grpc_status_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(self, details: str, *, code: grpc.StatusCode | None = None) -> None:
        resolved = code if code is not None else self.grpc_status_code
        if resolved is None:
            resolved = grpc.StatusCode.UNKNOWN
        super().__init__(details, resolved)
        self.code: grpc.StatusCode = resolved
        self.details: str = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the keyword-only `code` when pickled (e.g. across processes).
        return (_rebuild, (type(self), self.details, self.code))


def _rebuild(cls: type[ActgradError], details: str, code: grpc.StatusCode) -> ActgradError:
    return cls(details, code=code)


class InvalidArgumentError(ActgradError):
    """INVALID_ARGUMENT: the request was wrong (dtype, shape, parameter value).

    Example: ``client.activate(x, "leaky_relu", alpha="high")`` raises it.
    """

    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ActgradError):
    """NOT_FOUND: unknown function name; `details` lists close matches.

    Example: ``client.activate(x, "relux")`` raises it.
    """

    grpc_status_code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(ActgradError):
    """RESOURCE_EXHAUSTED: transient overload, or a message over the size limit.

    Example: ``except ResourceExhaustedError: time.sleep(backoff)`` then retry.
    """

    grpc_status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnauthenticatedError(ActgradError):
    """UNAUTHENTICATED: missing or bad credentials.

    Example: ``except UnauthenticatedError: refresh_token()``.
    """

    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(ActgradError):
    """PERMISSION_DENIED: the credentials do not allow this call.

    Example: ``except PermissionDeniedError as exc: log.error(exc.details)``.
    """

    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(ActgradError):
    """UNAVAILABLE: no server reachable, or it is shutting down; retry elsewhere.

    Example: ``Client("localhost:1").functions()`` raises it when nothing listens.
    """

    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ActgradError):
    """DEADLINE_EXCEEDED: the call's `timeout` passed before the answer came.

    Example: ``client.activate(big, "gelu", timeout=0.001)`` may raise it.
    """

    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class CallCancelledError(ActgradError):
    """CANCELLED: the call was cancelled (named so as not to shadow asyncio's).

    Example: ``except CallCancelledError: pass`` around a call another thread cancels.
    """

    grpc_status_code = grpc.StatusCode.CANCELLED


class UnimplementedError(ActgradError):
    """UNIMPLEMENTED: the server does not serve this RPC (an older server).

    Example: ``except UnimplementedError: fall_back_to_local()``.
    """

    grpc_status_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ActgradError):
    """INTERNAL: a bug on the server side (or a malformed response it sent).

    Example: ``except InternalError as exc: report(exc.details)``.
    """

    grpc_status_code = grpc.StatusCode.INTERNAL


class UnexpectedStatusError(ActgradError):
    """Any other status (UNKNOWN, ABORTED, ...); `code` says which.

    Example: ``except UnexpectedStatusError as exc: print(exc.code.name)``.
    """


_BY_CODE: dict[grpc.StatusCode, type[ActgradError]] = {
    cls.grpc_status_code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        ResourceExhaustedError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnavailableError,
        DeadlineExceededError,
        CallCancelledError,
        UnimplementedError,
        InternalError,
    )
    if cls.grpc_status_code is not None
}


def from_grpc_error(exc: grpc.RpcError) -> ActgradError:
    """Maps a `grpc.RpcError` (sync or `grpc.aio.AioRpcError`) to its `ActgradError`.

    The caller raises the result `from exc`::

        try:
            response = stub.Activate(request, timeout=30.0)
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from exc
    """
    # Sync errors are also grpc.Call objects with code()/details(); an RpcError
    # raised by an interceptor may have neither.
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    if not isinstance(details, str):
        details = str(exc) or code.name
    cls = _BY_CODE.get(code, UnexpectedStatusError)
    return cls(details, code=code)
