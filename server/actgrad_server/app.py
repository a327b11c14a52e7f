"""Assembles the server: front ends, health, reflection, limits, security, metrics, drain.

What applies to every call (request id, access log, metrics, bearer tokens, the
drain's refusal and open-call account) is `actgrad_server.calls`, one `Admission` and
one `CallRecords` per process, run by each transport's adapter: on gRPC the server's
one interceptor (`api._interceptors.CallInterceptor`, also the stream pool), so each
gRPC service is one `_register` line below and is covered by health, reflection and
the interceptor without more code; on HTTP (`--http-port`, `actgrad_server.http`: the
OIP's REST binding and actgrad's JSON calls, on its own thread, over the same
DataPlane and engine) its pipeline (`http.pipeline`). Both drain together.

`actgrad_server.cli.serve` runs one `ActgradServer` in its process (``--workers 1``)
or hands over to the supervisor in `actgrad_server.workers`, whose worker processes
each run one `ActgradServer` with a `WorkerRole`. Nothing here imports either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from actgrad.v1 import activation_pb2
from actgrad_server import health, security
from actgrad_server._malloc import release_free_memory
from actgrad_server.api import activation
from actgrad_server.api._interceptors import CallInterceptor, CallPool, StreamGuard
from actgrad_server.calls.admission import Admission
from actgrad_server.calls.records import CallRecords
from actgrad_server.config import OPEN_SLOTS, Settings
from actgrad_server.engine import Engine
from actgrad_server.errors import ConfigError
from actgrad_server.http.app import build_app
from actgrad_server.http.server import HttpServer
from actgrad_server.metrics import ServerMetrics
from actgrad_server.oip import servicer as oip
from actgrad_server.oip.dataplane import DataPlane
from actgrad_server.ops import Operations
from actgrad_server.tracing import Tracing

__all__ = ["ActgradServer", "WorkerRole", "install_drain_signals"]

_LOGGER = logging.getLogger(__name__)

#: How long a stopping process keeps its connections open after the drain.
LINGER_SECONDS = 1.0
#: A process whose drain has not ended this long after the grace exits (status 1).
DRAIN_MARGIN_SECONDS = 5.0
_RPC_THREAD_PREFIX = "actgrad-rpc"
#: After the last call of a drain, connections stay open this long before gRPC's stop.
DRAIN_SETTLE_SECONDS = 0.5
#: Free memory goes back to the kernel once no call has run for this long.
IDLE_TRIM_SECONDS = 5.0


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True)
class WorkerRole:
    """How one worker process of ``actgrad serve --workers N`` differs from a lone server.

    It binds the shared port with SO_REUSEPORT, logs its own readiness as
    ``worker <index> serving on ...`` (the supervisor logs the server's one
    ``serving actgrad.v1 on ...`` line), and with `shared_metrics` records its
    metrics in prometheus-client's multiprocess files for the supervisor to serve.
    """

    index: int
    shared_metrics: bool = False


def _reflection_pool(services: list[ServiceDescriptor]) -> descriptor_pool.DescriptorPool:
    """One pool describing every served service, for reflection.

    The OIP stubs live in a private pool (see actgrad_server.oip), which the
    reflection service would not see in protobuf's default pool; this pool holds
    copies of the files of all of them, health and reflection included.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for service in (
        *services,
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ):
        add(service.file)
    return pool


class ActgradServer:
    """One gRPC server over one Engine. `start()` listens, warms up, then says SERVING.

    >>> server = ActgradServer(Settings(port=0)); server.start()  # doctest: +SKIP
    >>> server.port  # the port it got  # doctest: +SKIP
    >>> server.stop(); server.wait()  # drain, then release everything  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.engine = engine or Engine(
            device=settings.device,
            cache_size=settings.session_cache_size,
            intra_op_threads=settings.intra_op_threads,
            chunk_elements=settings.chunk_elements,
        )
        limits = settings.limits
        credentials = security.server_credentials(settings)
        tokens = (
            security.load_tokens(settings.auth_token_file) if settings.auth_token_file else None
        )
        tracing = Tracing() if settings.tracing else None
        self.metrics = ServerMetrics(
            self.engine.cache_info, shared=worker is not None and worker.shared_metrics
        )
        #: Set when the drain starts: new calls but health get UNAVAILABLE.
        self.refusing = threading.Event()
        # Streaming calls run on their own pool, within an idle timeout.
        self._streams = StreamGuard(settings.stream_slots, settings.stream_idle_timeout)
        # Health runs on a pool of its own: a probe never waits behind the work.
        self._open_executor = CallPool(max_workers=OPEN_SLOTS, thread_name_prefix="actgrad-health")
        # Health stays open: orchestrators probe it without credentials, and it
        # says NOT_SERVING through the drain.
        #: The account and record of every front end's calls (metrics, access log).
        self.records = CallRecords(self.metrics, access_log=settings.access_log)
        # Whether a call may start: the drain, tokens; one for every front end.
        admission = Admission(self.refusing, tokens)
        interceptor = CallInterceptor(
            self.records,
            admission,
            streams=self._streams,
            open_pool=self._open_executor,
            open_services=[health.SERVICE_NAME],
            tracing=tracing,
        )
        # Calls that end while they wait for a thread are logged and counted (CallPool).
        self._executor = CallPool(
            max_workers=settings.threads, thread_name_prefix=_RPC_THREAD_PREFIX
        )
        self._server = grpc.server(
            self._executor,
            options=[
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                # Off for a lone server: a second one on its port fails to bind.
                ("grpc.so_reuseport", 0 if worker is None else 1),
                # Until the client's HTTP/2 settings arrive (after TLS), not only TLS.
                ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout * 1000)),
                *_connection_age_options(settings),
            ],
            interceptors=[interceptor],
            # Checked before a call is queued for a thread: over the cap a call gets
            # RESOURCE_EXHAUSTED at once. Health and reflection calls count too. The
            # cap has a call per thread above --max-concurrent-rpcs (Settings.call_cap).
            maximum_concurrent_rpcs=settings.call_cap,
        )

        # Front ends: one line each.
        self._services: list[str] = []
        self._descriptors: list[ServiceDescriptor] = []
        self._register(
            activation.add_to_server,
            activation.ActivationServicer(
                self.engine, limits, allow_shared_memory=settings.allow_shared_memory
            ),
            activation_pb2.DESCRIPTOR.services_by_name["ActivationService"],
        )
        # The Open Inference Protocol's core, over the same engine: every OIP front end
        # calls this one DataPlane, and so shares its statistics.
        self.oip = DataPlane(self.engine, limits, is_ready=lambda: self.health.serving)
        self._register(
            oip.add_to_server, oip.OipServicer(self.engine, limits, plane=self.oip), oip.SERVICE
        )

        self.health = health.HealthState(self._services)
        self.health.add_to_server(self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME],
                self._server,
                pool=_reflection_pool(self._descriptors),
            )

        address = _address(settings.host, settings.port)
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
            raise OSError(
                f"cannot bind {address} (in use, or not an address of this host)"
            ) from exc
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        self.address = _address(settings.host, self.port)
        #: The Unix-domain socket path served besides TCP (--uds), None when none.
        self.uds: str | None = None
        if settings.uds:
            self.uds = self._listen_on_uds(settings.uds, credentials)
        #: The HTTP front end (--http-port; None when off): the OIP's REST binding over
        #: the same DataPlane, actgrad's JSON calls, on its own thread and event loop.
        self.http: HttpServer | None = None
        #: The port HTTP got (--http-port 0: the kernel's pick), None when off.
        self.http_port: int | None = None
        if settings.http_port >= 0:
            self.http = HttpServer(
                build_app(
                    self.oip,
                    Operations(self.engine, limits),
                    admission=admission,
                    records=self.records,
                    max_body_bytes=settings.max_message_bytes,
                    max_open=settings.call_cap,
                    threads=settings.threads,
                    tracing=tracing,
                    with_playground=settings.playground,
                ),
                settings.host,
                settings.http_port,
                reuse_port=worker is not None,
                tls_cert=settings.tls_cert,
                tls_key=settings.tls_key,
                tls_client_ca=settings.tls_client_ca,
            )
            self.http_port = self.http.port
        #: The port of /metrics once started, None when metrics are off.
        self.metrics_port: int | None = None
        self._drain_lock = threading.Lock()
        self._draining = False
        #: Set by `install_drain_signals`: a process that serves until a signal must
        #: end, whatever a call or a library bug holds open (see `_bound_the_drain`).
        self.exit_if_drain_hangs = False
        self._finished = threading.Event()  # set when wait() has released everything
        self._stopped = threading.Event()  # set when gRPC has stopped (see stop())
        self._drain_end = float("inf")  # monotonic end of the grace, once draining

    def _listen_on_uds(self, path: str, credentials: grpc.ServerCredentials | None) -> str:
        """Also listens on a Unix-domain socket, for callers on this host (a sidecar
        sharing the socket's directory): no TCP/IP stack on the way."""
        if self.worker is not None:
            raise ConfigError("--uds needs --workers 1 (one process owns a socket path)")
        target = f"unix:{path}"
        try:
            if credentials is None:
                bound = self._server.add_insecure_port(target)
            else:
                bound = self._server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {target} (directory missing or not ours?)") from exc
        if bound == 0:
            raise OSError(f"cannot listen on {target}")
        return path

    def _register(
        self,
        add_to_server: Callable[[Any, grpc.Server], None],
        servicer: Any,
        service: ServiceDescriptor,
    ) -> None:
        add_to_server(servicer, self._server)
        self._services.append(service.full_name)
        self._descriptors.append(service)

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
            if self.http is not None:
                self.http.start()
                _LOGGER.info(
                    "HTTP on %s://%s",
                    "https" if self.settings.tls else "http",
                    _address(self.settings.host, self.http.port),
                )
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
            if self.http is not None:
                self.http.stop(0)
            self.metrics.stop_http()
            raise
        self.health.set_serving()
        if self.health.serving:
            self.metrics.serving.set(1)
        self.metrics.start_cache_sync()
        threading.Thread(target=self._trim_when_idle, name="actgrad-idle-trim", daemon=True).start()
        if self.worker is not None:
            _LOGGER.info("worker %d serving on %s", self.worker.index, self.address)
            return
        _LOGGER.info(
            "serving actgrad.v1 on %s (providers: %s; %s)%s",
            self.address,
            ", ".join(self.engine.providers),
            "TLS" if self.settings.tls else "plaintext",
            "" if self.http is None else f"; HTTP on port {self.http.port}",
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
            self._drain_end = min(self._drain_end, time.monotonic() + grace)
        if not first:
            if grace <= 0:
                self._server.stop(0)  # cancels what is left; _drain then ends at once
                if self.http is not None:
                    self.http.cancel()
            return self._stopped
        _LOGGER.info("draining (grace %.1fs)", grace)
        # From here the servers' calls are refused with UNAVAILABLE by our interceptor
        # (health stays open, saying NOT_SERVING), while every connection stays open:
        # see _drain for why gRPC's own stop comes only once the calls are done.
        self.refusing.set()
        self.health.start_drain()
        self.metrics.serving.set(0)
        # Watch streams were told NOT_SERVING; they would hold the drain for the grace.
        self.health.end_watches()
        threading.Thread(target=self._drain, name="actgrad-drain", daemon=True).start()
        if self.exit_if_drain_hangs:
            threading.Thread(
                target=self._bound_the_drain,
                args=(grace,),
                name="actgrad-drain-bound",
                daemon=True,
            ).start()
        return self._stopped

    def _drain(self) -> None:
        """Waits for the calls in flight, then stops gRPC within what is left of the grace.

        gRPC's stop sends GOAWAY and closes each connection as soon as its last call
        is done, while the client may still be reading a large answer and sending
        window updates: the kernel then resets the connection and the client loses
        the end of the answer (seen in about 1 of 30 drains). Connections that stay
        open until the calls are answered, and a moment more, lose nothing.
        """
        while self._open() > 0 and time.monotonic() < self._drain_end:
            time.sleep(0.01)
        settle = min(DRAIN_SETTLE_SECONDS, self._drain_end - time.monotonic())
        if settle > 0:
            time.sleep(settle)
        done = self._server.stop(max(self._drain_end - time.monotonic(), 0.0))
        self.health.end_watches()
        if self.http is not None:
            # New requests are refused (503) since the drain began; the listener and
            # the connections close now, requests still open get what is left.
            self.http.stop(max(self._drain_end - time.monotonic(), 0.0))
        done.wait()
        self._stopped.set()

    def _open(self) -> int:
        """Calls in flight, gRPC and HTTP (what the drain waits for)."""
        return self.records.open_calls()

    def _received(self) -> int:
        """Calls received since start, gRPC and HTTP (what the idle trim watches)."""
        return self.records.calls_received()

    def _trim_when_idle(self) -> None:
        """Gives free memory back once the server has been idle IDLE_TRIM_SECONDS.

        The allocator keeps large freed buffers for the next call (`_malloc`); after
        a burst, that high-water mark would stay resident for good.
        """
        seen = self._received()
        idle_since = time.monotonic()
        trimmed = True
        while not self._finished.wait(min(1.0, IDLE_TRIM_SECONDS)):
            now = time.monotonic()
            received = self._received()
            if received != seen or self._open() > 0:
                seen, idle_since, trimmed = received, now, False
                continue
            if not trimmed and now - idle_since >= IDLE_TRIM_SECONDS:
                trimmed = True
                if release_free_memory():
                    _LOGGER.debug("idle: free memory returned to the kernel")

    def _bound_the_drain(self, grace: float) -> None:
        """Ends the process when the drain outlives the grace by DRAIN_MARGIN_SECONDS.

        gRPC cancels what is left at the end of the grace, so a drain that goes on
        is a call that gRPC cannot release (grpcio has had such bugs) or a handler
        thread that does not return; no pod may stay up past its grace because of
        one. The exit status says it went wrong.
        """
        if self._finished.wait(grace + DRAIN_MARGIN_SECONDS):
            return
        busy = _busy_handlers()
        _LOGGER.error(
            "the drain did not end within the grace (%.1fs) plus %.1fs: %d call(s) still "
            "open in gRPC, %d handler thread(s) still busy%s; exiting with status 1",
            grace,
            DRAIN_MARGIN_SECONDS,
            self.metrics.open_calls(),
            len(busy),
            "".join(f"; {where}" for where in busy[:5]),
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(1)

    def wait(self) -> None:
        """Blocks until the server stopped, then releases its threads and /metrics."""
        self._server.wait_for_termination()
        self._executor.shutdown(wait=True)
        self._streams.close()  # the streaming calls' threads
        self._open_executor.shutdown(wait=True)
        self.metrics.stop_http()
        self._finished.set()

    def linger(self, seconds: float = LINGER_SECONDS) -> None:
        """Keeps the process, and so its connections, alive a moment after a drain.

        The last answers may still be in flight when the server has stopped; if the
        process exited at once, the kernel would reset connections on which the
        client had sent anything since (window updates, pings), and the client
        would lose the end of an answer it was still reading. Clients close their
        connections after the GOAWAY of the drain, so a short wait is enough.
        """
        time.sleep(min(seconds, max(self.settings.grace, 0.0)))


def _connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC's connection-age arguments; none when max_connection_age is 0 (never)."""
    if settings.max_connection_age <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * 1000)),
    ]


def _busy_handlers() -> list[str]:
    """Where each RPC thread that is running a call is (its innermost frame)."""
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is None or not thread.name.startswith(_RPC_THREAD_PREFIX):
            continue
        stack = traceback.extract_stack(frame)
        # An idle pool thread waits in concurrent.futures; a busy one runs grpc's handler.
        if any(f.filename.endswith("grpc/_server.py") for f in stack):
            last = stack[-1]
            busy.append(f"{thread.name} in {last.name} ({last.filename}:{last.lineno})")
    return busy


def install_drain_signals(
    server: ActgradServer, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """One of `signals` starts the drain of `server`; a second one cancels what is left.

    Call from the main thread; `server.wait()` returns once the drain is done, and
    a drain that outlives the grace by DRAIN_MARGIN_SECONDS ends the process with
    status 1.
    """
    server.exit_if_drain_hangs = True
    received = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        grace = None if received == 1 else 0.0
        _LOGGER.info(
            "received %s%s", signal.Signals(signum).name, "" if grace is None else "; stopping now"
        )
        # stop() only starts the drain; server.wait() returns once it is done.
        threading.Thread(
            target=server.stop, args=(grace,), name="actgrad-drain", daemon=True
        ).start()

    for signum in signals:
        signal.signal(signum, on_signal)
