"""Calls that gRPC ends in its queue, before their handler ever starts.

grpcio does not run the handler of a unary-request call that its caller cancelled, or
whose deadline passed, before a thread took it, so the interceptor never sees its end.
The interceptor marks each call it accepts (`ACCEPTED`, in the call's own context);
`CallPool`, the thread pool of the server's calls, finishes those whose handler never
started.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, Protocol

from actgrad_server.api._observed import ended_code, metadata_value, record_call
from actgrad_server.calls.records import CallRecords
from actgrad_server.calls.request_ids import REQUEST_ID_KEY, request_id
from actgrad_server.tracing import Tracing

__all__ = ["ACCEPTED", "Accepted", "CallPool", "Owner"]


class Owner(Protocol):
    """What an accepted call needs of the interceptor that accepted it."""

    @property
    def records(self) -> CallRecords: ...

    @property
    def tracing(self) -> Tracing | None: ...


class Accepted:
    """A call from the moment gRPC accepted it (the interceptor ran) until its
    handler starts (`begun`, set by `CallInterceptor.begin`)."""

    __slots__ = ("begun", "metadata", "owner", "rpc", "since")

    def __init__(self, owner: Owner, rpc: str, metadata: Any) -> None:
        self.owner = owner
        self.rpc = rpc
        self.metadata = metadata
        self.since = time.perf_counter()
        self.begun = False

    def dropped(self, deadline: float | None) -> None:
        """gRPC ended the call without running its handler: logged and counted as
        DEADLINE_EXCEEDED or CANCELLED, with the time it waited."""
        remaining = None if deadline is None else deadline - time.time()
        tracing = self.owner.tracing
        record_call(
            self.owner.records,
            self.rpc,
            ended_code(remaining),
            time.perf_counter() - self.since,
            request_id=request_id(metadata_value(self.metadata, REQUEST_ID_KEY)),
            span=None if tracing is None else tracing.start(self.rpc, self.metadata),
            labels=("", ""),  # the request was never read
            bytes_in=0,
            bytes_out=0,
            peer="-",
        )


# The call gRPC accepted, set by the interceptor in the call's own contextvars.Context:
# grpcio runs the interceptor and, later, the call's thread-pool task in that context.
ACCEPTED: contextvars.ContextVar[Accepted] = contextvars.ContextVar("actgrad_accepted")


def _accepted(task: Callable[..., Any]) -> Accepted | None:
    """The accepted call whose thread-pool task `task` is, None for any other task.

    grpcio submits each call as ``pool.submit(state.context.run, handle, rpc_event,
    ...)``: the task is the `run` of the call's context.
    """
    context = getattr(task, "__self__", None)
    return context.get(ACCEPTED) if isinstance(context, contextvars.Context) else None


def _deadline(args: tuple[Any, ...]) -> float | None:
    """The call's deadline (time.time()'s clock) from the arguments grpcio passes its
    task: the call's event, whose call_details hold it; None if none is found."""
    for arg in args:
        details = getattr(arg, "call_details", None)
        if details is not None:
            deadline = getattr(details, "deadline", None)
            return float(deadline) if isinstance(deadline, int | float) else None
    return None


def _run_accepted(
    accepted: Accepted,
    task: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        return task(*args, **kwargs)
    finally:
        if not accepted.begun:
            accepted.dropped(_deadline(args))


class CallPool(futures.ThreadPoolExecutor):
    """A thread pool for gRPC's calls that logs and counts those it never ran.

    grpcio does not run the handler of a unary-request call that its caller
    cancelled, or whose deadline passed, before a thread took it (it does not even
    read the request), so the interceptor never sees its end. Each call's task is
    watched here: one whose handler never started is finished as DEADLINE_EXCEEDED
    or CANCELLED (its access log line has no function, dtype or peer, and its
    duration is the time it waited). Every pool that runs calls is one of these:
    the server's, the streams' (`StreamGuard`) and the open services'.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        accepted = _accepted(fn)
        if accepted is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_run_accepted, accepted, fn, args, kwargs)
