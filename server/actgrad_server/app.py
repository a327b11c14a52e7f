"""Assembles the server: front ends, health, reflection, limits, security, metrics, drain.

What applies to every call (request id, access log, metrics, bearer tokens) is a
server interceptor, so each front end is one `_register` line below and is covered
by health, reflection and the interceptors without more code.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection

from actgrad.v1 import activation_pb2, activation_pb2_grpc
from actgrad_server import health, security
from actgrad_server.api import oip
from actgrad_server.api._interceptors import AuthInterceptor, ObserveInterceptor
from actgrad_server.api.activation import ActivationServicer, Limits
from actgrad_server.config import Settings
from actgrad_server.engine import Engine
from actgrad_server.metrics import ServerMetrics

__all__ = ["ActgradServer", "serve"]

_LOGGER = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class ActgradServer:
    """One gRPC server over one Engine. `start()` listens, warms up, then says SERVING.

    >>> server = ActgradServer(Settings(port=0)); server.start()  # doctest: +SKIP
    >>> server.port  # the port it got  # doctest: +SKIP
    >>> server.stop(); server.wait()  # drain, then release everything  # doctest: +SKIP
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(
            device=settings.device,
            cache_size=settings.session_cache_size,
            intra_op_threads=settings.intra_op_threads,
            chunk_elements=settings.chunk_elements,
        )
        limits = Limits(
            max_message_bytes=settings.max_message_bytes,
            max_elements=settings.max_elements,
            max_rank=settings.max_rank,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        credentials = security.server_credentials(settings)
        self.metrics = ServerMetrics(self.engine.cache_info)
        interceptors: list[Any] = [ObserveInterceptor(self.metrics, access_log=settings.access_log)]
        if settings.auth_token_file:
            tokens = security.load_tokens(settings.auth_token_file)
            # Health stays open: orchestrators probe it without credentials.
            interceptors.append(AuthInterceptor(tokens, open_services=[health.SERVICE_NAME]))
        self._executor = futures.ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="actgrad-rpc"
        )
        self._server = grpc.server(
            self._executor,
            options=[
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            interceptors=interceptors,
            # Checked before a call is queued for a thread: over the limit a call
            # gets RESOURCE_EXHAUSTED at once. Health and reflection calls count too.
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )

        # Front ends: one line each.
        self._services: list[str] = []
        self._register(
            activation_pb2_grpc.add_ActivationServiceServicer_to_server,
            ActivationServicer(self.engine, limits),
            activation_pb2.DESCRIPTOR.services_by_name["ActivationService"],
        )
        self._register(  # the Open Inference Protocol, over the same engine
            oip.add_to_server,
            oip.OipServicer(self.engine, limits, is_ready=lambda: self.health.serving),
            oip.SERVICE,
        )

        self.health = health.HealthState(self._services)
        self.health.add_to_server(self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
            )

        address = _address(settings.host, settings.port)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        self.address = _address(settings.host, self.port)
        #: The port of /metrics once started, None when metrics are off.
        self.metrics_port: int | None = None
        self._drain_lock = threading.Lock()
        self._draining = False

    def _register(
        self,
        add_to_server: Callable[[Any, grpc.Server], None],
        servicer: Any,
        service: ServiceDescriptor,
    ) -> None:
        add_to_server(servicer, self._server)
        self._services.append(service.full_name)

    @property
    def services(self) -> list[str]:
        """Full names of the served front-end services (health reports each of them)."""
        return list(self._services)

    def start(self) -> None:
        """Listens (health NOT_SERVING), warms the sessions up, then reports SERVING.

        Calls that arrive during the warm-up are answered; they may build a session.
        """
        self._server.start()
        try:
            if self.settings.metrics_port >= 0:
                self.metrics_port = self.metrics.serve_http(
                    self.settings.metrics_host, self.settings.metrics_port
                )
                _LOGGER.info(
                    "metrics on http://%s/metrics",
                    _address(self.settings.metrics_host, self.metrics_port),
                )
            _LOGGER.info("listening on %s; warming up", self.address)
            self.engine.warm_up()
        except BaseException:
            self._server.stop(0).wait()
            self.metrics.stop_http()
            raise
        self.health.set_serving()
        if self.health.serving:
            self.metrics.serving.set(1)
        _LOGGER.info(
            "serving actgrad.v1 on %s (providers: %s; %s)",
            self.address,
            ", ".join(self.engine.providers),
            "TLS" if self.settings.tls else "plaintext",
        )

    def stop(self, grace: float | None = None) -> threading.Event:
        """Starts the drain: health NOT_SERVING, new calls refused, in-flight calls get
        `grace` seconds to finish. Returns an event set once the server has stopped;
        call `wait()` to release the threads and the metrics endpoint.

        A second call may shorten the grace (`stop(0)` cancels what is left).
        """
        grace = self.settings.grace if grace is None else grace
        with self._drain_lock:
            first = not self._draining
            self._draining = True
        if first:
            _LOGGER.info("draining (grace %.1fs)", grace)
        # grpc refuses new calls from here on (the caller sees UNAVAILABLE); calls
        # in flight, Watch streams included, go on. So a watcher that hears
        # NOT_SERVING knows that new calls are already refused.
        done = self._server.stop(grace)
        if first:
            self.health.start_drain()
            self.metrics.serving.set(0)
        # Watch streams were told NOT_SERVING; they would hold the drain for the grace.
        self.health.end_watches()
        return done

    def wait(self) -> None:
        """Blocks until the server stopped, then releases its threads and /metrics."""
        self._server.wait_for_termination()
        self._executor.shutdown(wait=True)
        self.metrics.stop_http()


def serve(settings: Settings) -> int:
    """Runs until SIGTERM or SIGINT, then drains within the grace period.

    A second signal during the drain cancels the calls still running.
    """
    server = ActgradServer(settings)
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        grace = None if signals == 1 else 0.0
        _LOGGER.info(
            "received %s%s", signal.Signals(signum).name, "" if grace is None else "; stopping now"
        )
        # stop() only starts the drain; wait() below returns once it is done.
        threading.Thread(
            target=server.stop, args=(grace,), name="actgrad-drain", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.wait()
    _LOGGER.info("stopped")
    return 0
