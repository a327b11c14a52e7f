"""Bounds on streaming gRPC calls: their own thread pool and an idle timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from actgrad_server.api._observed import Behavior, Handler, behavior_of
from actgrad_server.api._queue import CallPool

__all__ = ["StreamGuard"]

_LOGGER = logging.getLogger(__name__)


class StreamGuard:
    """Bounds what streaming calls may hold: threads and idle time.

    Request-streaming calls run on a thread pool of their own (`slots` threads; more
    wait their turn there), so unary calls always find a thread of the server's
    pool; and a stream with no message either way for `idle_timeout` seconds is
    cancelled. A client that stops reading leaves the server blocked sending an
    answer (its flow-control window is full); one that stops sending leaves it
    waiting for the next chunk: either way a thread and the messages in flight are
    held until the call ends, which cancelling brings about. `CallInterceptor`
    leaves the open services (health, whose Watch streams are long by design)
    unguarded.
    """

    def __init__(self, slots: int, idle_timeout: float) -> None:
        self.pool = CallPool(max_workers=slots, thread_name_prefix="actgrad-rpc-stream")
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[list[float], grpc.ServicerContext]] = {}
        self._stop = threading.Event()
        if idle_timeout > 0:
            threading.Thread(target=self._watch, name="actgrad-stream-idle", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True)

    def _watch(self) -> None:
        period = min(1.0, self._idle_timeout / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                idle = [
                    c for last, c in self._streams.values() if now - last[0] > self._idle_timeout
                ]
            for context in idle:
                _LOGGER.warning("cancelling a stream idle for more than %.1fs", self._idle_timeout)
                context.cancel()  # type: ignore[no-untyped-call]

    def guard(self, handler: Handler) -> Handler:
        """`handler` as it runs under the guard: request-streaming ones on the pool,
        within the idle timeout; others as they are."""
        if not handler.request_streaming:
            return handler
        if handler.response_streaming:
            behavior = self._guard_stream_stream(behavior_of(handler.stream_stream))
            make: Callable[..., Handler] = grpc.stream_stream_rpc_method_handler
        else:
            behavior = self._guard_stream_unary(behavior_of(handler.stream_unary))
            make = grpc.stream_unary_rpc_method_handler
        # grpc runs a behavior with this attribute on that pool (_wrap passes it on).
        behavior.experimental_thread_pool = self.pool  # type: ignore[attr-defined]
        return make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _enter(self, context: grpc.ServicerContext) -> list[float]:
        """Registers the stream's last progress, until the call ends."""
        last = [time.monotonic()]
        key = id(context)
        with self._lock:
            self._streams[key] = (last, context)

        def leave() -> None:
            with self._lock:
                self._streams.pop(key, None)

        if not context.add_callback(leave):
            leave()
        return last

    @staticmethod
    def _touching(items: Iterator[Any], last: list[float]) -> Iterator[Any]:
        for item in items:
            last[0] = time.monotonic()
            yield item
            last[0] = time.monotonic()

    def _guard_stream_stream(self, behavior: Behavior) -> Behavior:
        def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            last = self._enter(context)
            responses = behavior(self._touching(requests, last), context)
            return self._touching(iter(responses), last)

        return stream_stream

    def _guard_stream_unary(self, behavior: Behavior) -> Behavior:
        def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            last = self._enter(context)
            return behavior(self._touching(requests, last), context)

        return stream_unary
