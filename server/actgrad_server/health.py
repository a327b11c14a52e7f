"""grpc.health.v1 for the server: NOT_SERVING until warm, SERVING, NOT_SERVING on drain.

One more name, LIVENESS ("liveness"), answers a Check with SERVING whenever the
server answers at all, warm-up and drain included: what a liveness probe needs
(a probe of "" would have an orchestrator kill a pod that is draining as asked).

Built on grpcio-health-checking's `HealthServicer` (Check and a non-blocking
Watch). On top of it, `drain()` ends the open Watch streams after telling them
NOT_SERVING: a Watch is an RPC in flight, and the server's graceful stop would
otherwise wait the whole grace period for watchers that never hang up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["LIVENESS", "OVERALL", "SERVICE_NAME", "HealthState"]

OVERALL = health.OVERALL_HEALTH
SERVICE_NAME: str = health.SERVICE_NAME
#: The health name of a liveness probe: SERVING while this process answers gRPC.
LIVENESS = "liveness"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Servicer(health.HealthServicer):
    """HealthServicer that remembers its Watch streams so that a drain can end them."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._watchers: set[Callable[[Any], None]] = set()
        self._watchers_lock = threading.Lock()

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        if send_response_callback is None:  # a server without non-blocking streams
            return super().Watch(request, context)
        callback = send_response_callback
        with self._watchers_lock:
            self._watchers.add(callback)

        def forget() -> None:
            with self._watchers_lock:
                self._watchers.discard(callback)

        context.add_callback(forget)
        return super().Watch(request, context, send_response_callback)

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS:
            # Answering is the whole test: a process that cannot run this handler
            # (every thread stuck, the loop dead) fails the probe by its deadline.
            return health_pb2.HealthCheckResponse(status=_SERVING)
        return super().Check(request, context)

    def end_watches(self) -> None:
        with self._watchers_lock:
            watchers, self._watchers = list(self._watchers), set()
        for callback in watchers:
            callback(None)  # completes the stream with OK


class HealthState:
    """The health of one server: "" (overall) and each served service.

    >>> state = HealthState(["actgrad.v1.ActivationService"])
    >>> state.serving
    False
    """

    def __init__(self, services: Iterable[str]) -> None:
        self._services = [OVERALL, *services]
        self._servicer = _Servicer()
        self._serving = False
        self._draining = False
        for service in self._services:
            self._servicer.set(service, _NOT_SERVING)

    @property
    def serving(self) -> bool:
        return self._serving

    @property
    def draining(self) -> bool:
        return self._draining

    def add_to_server(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def set_serving(self) -> None:
        """Warm-up done: every service SERVING (ignored once a drain started)."""
        if self._draining:
            return
        for service in self._services:
            self._servicer.set(service, _SERVING)
        self._serving = True

    def start_drain(self) -> None:
        """Every service NOT_SERVING, for good; Watch streams are told so."""
        self._draining = True
        self._serving = False
        self._servicer.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """Ends the open Watch streams (after `start_drain` told them NOT_SERVING)."""
        self._servicer.end_watches()
