"""Assembles the server: front ends, limits, lifetime and signal handling."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc

from actgrad.v1 import activation_pb2_grpc
from actgrad_server.api.activation import ActivationServicer, Limits
from actgrad_server.config import Settings
from actgrad_server.engine import Engine

__all__ = ["ActgradServer", "serve"]

_LOGGER = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class ActgradServer:
    """One gRPC server over one Engine. `start()` warms up, then listens.

    >>> server = ActgradServer(Settings(port=0)); server.start()  # doctest: +SKIP
    >>> server.port  # the port it got  # doctest: +SKIP
    """

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(
            device=settings.device,
            cache_size=settings.session_cache_size,
            intra_op_threads=settings.intra_op_threads,
        )
        limits = Limits(
            max_message_bytes=settings.max_message_bytes,
            max_elements=settings.max_elements,
            max_rank=settings.max_rank,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
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
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        activation_pb2_grpc.add_ActivationServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ActivationServicer(self.engine, limits), self._server
        )
        address = _address(settings.host, settings.port)
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        self.address = _address(settings.host, self.port)
        self._stopped = threading.Event()

    def start(self) -> None:
        self.engine.warm_up()
        self._server.start()
        _LOGGER.info(
            "serving actgrad.v1 on %s (providers: %s)",
            self.address,
            ", ".join(self.engine.providers),
        )

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stops accepting calls; in-flight calls get `grace` seconds to finish."""
        grace = self.settings.grace if grace is None else grace
        _LOGGER.info("draining (grace %.1fs)", grace)
        done = self._server.stop(grace)
        self._stopped.set()
        return done

    def wait(self) -> None:
        self._server.wait_for_termination()
        self._executor.shutdown(wait=True)


def serve(settings: Settings) -> int:
    """Runs until SIGTERM or SIGINT, then drains within the grace period."""
    server = ActgradServer(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("received %s", signal.Signals(signum).name)
        # stop() only starts the drain; wait() below returns once it is done.
        threading.Thread(target=server.stop, name="actgrad-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.wait()
    _LOGGER.info("stopped")
    return 0
