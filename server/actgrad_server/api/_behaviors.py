"""gRPC method handlers observed call by call: what runs around a servicer's behavior.

`wrap` makes a streaming handler (either direction) whose calls are `Observed` from
their handler's start to their end, with their messages counted (`Sizes`), their
requests' labels read, malformed requests refused (INVALID_ARGUMENT), and every step
under the call's request id (`request_id_scope`). `run_unary` is the same for one
unary request (the interceptor's unary handlers, built once per method, call it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from actgrad_server.api._observed import (
    Behavior,
    Handler,
    Malformed,
    MalformedRequest,
    Observed,
    Sizes,
    behavior_of,
)
from actgrad_server.logs import request_id_scope

__all__ = ["refuse_malformed", "run_unary", "wrap"]


def wrap(
    handler: Handler,
    begin: Callable[[grpc.ServicerContext], Observed],
    sizes: Sizes,
    pool: futures.ThreadPoolExecutor | None = None,
) -> Handler:
    """A streaming handler (either direction) observed for one call; a server-streaming
    one runs on `pool` when given (request-streaming ones on their own, StreamGuard's)."""
    serializers = {
        "request_deserializer": sizes.deserializer(handler.request_deserializer),
        "response_serializer": sizes.serializer(handler.response_serializer),
    }
    if handler.request_streaming and handler.response_streaming:
        inner = behavior_of(handler.stream_stream)
        return grpc.stream_stream_rpc_method_handler(
            _same_pool(_observe_stream_stream(inner, begin), inner), **serializers
        )
    if handler.request_streaming:
        inner = behavior_of(handler.stream_unary)
        return grpc.stream_unary_rpc_method_handler(
            _same_pool(_observe_stream_unary(inner, begin), inner), **serializers
        )
    # Unary calls have handlers of their own, built once (`_interceptors._Route._observed_unary`).
    behavior = _observe_unary_stream(behavior_of(handler.unary_stream), begin)
    if pool is not None:
        behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return grpc.unary_stream_rpc_method_handler(behavior, **serializers)


def _same_pool(outer: Behavior, inner: Behavior) -> Behavior:
    """`outer` runs on the thread pool `inner` asked for (StreamGuard's)."""
    pool = getattr(inner, "experimental_thread_pool", None)
    if pool is not None:
        outer.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return outer


def refuse_malformed(request: Any, call: Observed, context: grpc.ServicerContext) -> None:
    """INVALID_ARGUMENT for a request that could not be parsed (unary requests)."""
    if isinstance(request, Malformed):
        call.finish(grpc.StatusCode.INVALID_ARGUMENT)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _abort_gone(context: grpc.ServicerContext, code: grpc.StatusCode) -> None:
    # The code the call was finished with (and logged as), so the caller sees it too.
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        context.abort(code, "the deadline passed before the call started")
    context.abort(code, "the caller cancelled the call")


def run_unary(
    behavior: Callable[..., Any], request: Any, call: Observed, context: grpc.ServicerContext
) -> Any:
    """Runs a behavior on one request for an observed call: a malformed request is
    refused, a call nobody waits for any more is not computed, and an error finishes
    the call with its code. Returns what the behavior returned."""
    call.received(request)
    with request_id_scope(call.request_id, call.trace_id):
        refuse_malformed(request, call, context)
        code = call.gone()
        if code is not None:
            # Nobody waits for the answer: do not compute it.
            _abort_gone(context, code)
        try:
            return behavior(request, context)
        except BaseException as exc:
            call.finish_on_error(exc)
            raise


def _observed_responses(
    responses: Iterator[Any], call: Observed, context: grpc.ServicerContext
) -> Iterator[Any]:
    try:
        while True:
            with request_id_scope(call.request_id, call.trace_id):
                try:
                    response = next(responses)
                except StopIteration:
                    break
                except MalformedRequest as exc:
                    call.finish(grpc.StatusCode.INVALID_ARGUMENT)
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            yield response
    except BaseException as exc:
        call.finish_on_error(exc)
        raise
    call.finish()


def _observe_unary_stream(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], Observed]
) -> Callable[..., Any]:
    if getattr(behavior, "experimental_non_blocking", False):
        return _observe_non_blocking(behavior, begin)

    def unary_stream(request: Any, context: grpc.ServicerContext) -> Any:
        call = begin(context)
        responses = run_unary(behavior, request, call, context)
        return _observed_responses(iter(responses), call, context)

    return unary_stream


def _observe_non_blocking(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], Observed]
) -> Callable[..., Any]:
    """A server-streaming handler that sends through a callback (health Watch).

    It returns at once and the stream lives on, so the call ends in the
    termination callback rather than when the handler returns.
    """

    def non_blocking(
        request: Any, context: grpc.ServicerContext, send_response_callback: Callable[[Any], None]
    ) -> Any:
        call = begin(context)
        call.received(request)

        def send(response: Any) -> None:
            send_response_callback(response)

        with request_id_scope(call.request_id, call.trace_id):
            refuse_malformed(request, call, context)
            try:
                return behavior(request, context, send)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise

    # The server looks for these attributes on the behavior to call it this way.
    non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]
    non_blocking.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
        behavior, "experimental_thread_pool", None
    )
    return non_blocking


def _observed_requests(requests: Iterator[Any], call: Observed) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            # Our servicers turn this into INVALID_ARGUMENT like any bad request;
            # for other handlers, _observed_responses and stream_unary do.
            raise MalformedRequest(request.message)
        call.received(request)
        yield request


def _observe_stream_unary(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], Observed]
) -> Callable[..., Any]:
    def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id, call.trace_id):
            try:
                response = behavior(_observed_requests(requests, call), context)
            except MalformedRequest as exc:
                call.finish(grpc.StatusCode.INVALID_ARGUMENT)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return response

    return stream_unary


def _observe_stream_stream(
    behavior: Callable[..., Any], begin: Callable[[grpc.ServicerContext], Observed]
) -> Callable[..., Any]:
    def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        with request_id_scope(call.request_id, call.trace_id):
            try:
                responses = behavior(_observed_requests(requests, call), context)
            except BaseException as exc:
                call.finish_on_error(exc)
                raise
        return _observed_responses(iter(responses), call, context)

    return stream_stream
