"""``actgrad serve --workers N``: N server processes on one port, and their supervisor.

The supervisor (the ``actgrad serve`` process) starts the workers with
multiprocessing's *spawn* context: each is a fresh interpreter, so no gRPC or
onnxruntime state is ever forked. Every worker runs one `ActgradServer` bound with
SO_REUSEPORT to the same address, and the kernel spreads incoming *connections*
over them; every call on one connection (one client channel) goes to one worker.

Start-up: worker 0 binds first (with port 0 the kernel picks the port) and reports
the port it got; the others then bind that port. Once every worker has warmed up
and says SERVING, the supervisor logs ``serving actgrad.v1 on HOST:PORT``, once.

Signals: SIGTERM or SIGINT to the supervisor is forwarded to every worker as
SIGTERM, and each drains within ``--grace``; a second signal is forwarded too and
cancels what is left. Workers ignore SIGINT, since a Ctrl-C in a terminal reaches
the whole process group and must count once. The supervisor exits 0 when every
worker exited 0, 1 otherwise.

A worker that exits on its own once the server is serving (killed, crashed) is
restarted in place on the same port, so that one bad call costs at most that
worker's calls in flight, not the server: the others keep serving meanwhile. Each
restart is logged as an error. A crash loop is bounded: a worker that would be
restarted for the RESTART_LIMIT-th time within RESTART_WINDOW seconds is not; the
supervisor drains the others and exits 1 instead, and the orchestrator's restart
policy takes over, where operators look (exit status, restart count). A worker that
fails during start-up is never restarted. A worker whose supervisor vanished
(SIGKILL) sees its pipe close and drains.

Metrics: with ``--metrics-port``, the supervisor creates a private directory for
prometheus-client's multiprocess mode, passes it to the workers as
PROMETHEUS_MULTIPROC_DIR, serves ``/metrics`` from it (counters and histograms
summed over the workers, gauges combined as each declares) and removes it at exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from actgrad_server._malloc import retain_large_buffers
from actgrad_server.app import ActgradServer, WorkerRole, install_drain_signals
from actgrad_server.config import Settings
from actgrad_server.errors import ConfigError
from actgrad_server.http.server import HTTP_PORT_HINT
from actgrad_server.logs import configure_logging

__all__ = ["cgroup_cpu_limit", "supervise", "usable_cpus", "worker_count"]

_LOGGER = logging.getLogger(__name__)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A crash loop: this many unexpected worker exits within RESTART_WINDOW seconds end
#: the server (status 1) instead of another restart.
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
# After the grace period, workers get this much longer to exit (one still warming
# up drains after its warm-up) before the supervisor kills them.
_EXIT_MARGIN = 30.0


# -- how many ---------------------------------------------------------------------------


def cgroup_cpu_limit(
    cgroup_fs: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self")
) -> int | None:
    """CPUs allowed by the cgroup v2 CPU quota of this process (a container's ``cpus``
    limit), rounded up; None without a quota or outside cgroup v2.

    The tightest ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" for none) on the way
    from this process's cgroup up to the root counts.
    """
    try:
        lines = (proc_self / "cgroup").read_text().splitlines()
    except OSError:
        return None
    # cgroup v2 has one line: "0::/path/of/the/group".
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    group = cgroup_fs / relative.lstrip("/")
    limits: list[int] = []
    for directory in (group, *group.parents):
        if not directory.is_relative_to(cgroup_fs):
            break
        limit = _cpu_max(directory / "cpu.max")
        if limit is not None:
            limits.append(limit)
    return min(limits, default=None)


def _cpu_max(path: Path) -> int | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity outside Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, limit)
    return max(1, count)


def worker_count(settings: Settings) -> int:
    """`settings.workers`, or one per usable CPU when it is 0; 1 with --uds, whose
    socket path one process owns."""
    if settings.uds:
        if settings.workers > 1:
            raise ConfigError(f"--uds needs --workers 1 (got {settings.workers})")
        return 1
    return settings.workers or usable_cpus()


# -- the worker process ---------------------------------------------------------------


@dataclass(frozen=True)
class _Hello:
    """The worker handles SIGTERM from here on."""


@dataclass(frozen=True)
class _Bound:
    port: int
    address: str
    http_port: int | None = None


@dataclass(frozen=True)
class _Serving:
    providers: tuple[str, ...]


@dataclass(frozen=True)
class _Failed:
    message: str
    config_error: bool


class _WorkerTag(logging.Filter):
    """Adds ``worker`` (index) and ``pid`` to records (JSON log lines carry them)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._index
        record.pid = record.process
        return True


def _worker_main(index: int, settings: Settings, conn: Connection, shared_metrics: bool) -> None:
    """The body of worker `index` (in a spawned process)."""
    # Until the server can drain, a SIGTERM is remembered and handled after start().
    early: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        early.append(signum)

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards it
    configure_logging(settings.log_level, settings.log_format)
    tag = _WorkerTag(index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
    conn.send(_Hello())
    retain_large_buffers()

    try:
        server = ActgradServer(settings, worker=WorkerRole(index, shared_metrics=shared_metrics))
        conn.send(_Bound(server.port, server.address, server.http_port))
        server.start()
    except ConfigError as exc:
        conn.send(_Failed(str(exc), config_error=True))
        sys.exit(2)
    except Exception as exc:
        _LOGGER.exception("worker %d could not start", index)
        conn.send(_Failed(f"{type(exc).__name__}: {exc}", config_error=False))
        sys.exit(1)
    install_drain_signals(server, (signal.SIGTERM,))
    for signum in early:
        signal.raise_signal(signum)
    conn.send(_Serving(tuple(server.engine.providers)))

    def watch_supervisor() -> None:
        # The supervisor never writes: recv() ends when its end of the pipe closes.
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        if not server.health.draining:
            _LOGGER.warning("worker %d: the supervisor is gone; draining", index)
            server.stop()

    threading.Thread(target=watch_supervisor, name="actgrad-supervisor-watch", daemon=True).start()
    server.wait()
    server.linger()
    _LOGGER.info("worker %d stopped", index)


# -- the supervisor -------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    hello: bool = False
    bound: _Bound | None = None
    serving: _Serving | None = None
    signals_sent: int = 0
    pipe_open: bool = True
    exit_code: int | None = None

    @property
    def exited(self) -> bool:
        return self.exit_code is not None


class _Supervisor:
    def __init__(self, settings: Settings, count: int, metrics_dir: str | None) -> None:
        self._settings = settings
        self._count = count
        self._metrics_dir = metrics_dir
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._received: list[int] = []  # signals, appended by the handler
        self._handled = 0
        self._stop_deadline: float | None = None
        self._target_signals = 0  # SIGTERMs every worker is to get: 1 drain, 2 now
        self._failed = False
        self._start_failure: _Failed | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        # Set once every worker served: from then on a worker that dies is restarted
        # with these settings (the port resolved).
        self._restart_settings: Settings | None = None
        self._crashes: list[float] = []  # monotonic times of unexpected exits

    # signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only recorded: the loop acts on it, woken through the wakeup fd.
        self._received.append(signum)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self._wake_r.close()
            self._wake_w.close()

    @property
    def _stopping(self) -> bool:
        return self._stop_deadline is not None

    def _stop(self, signals: int = 1) -> None:
        """Asks every worker to drain (signals=1) or to stop now (signals=2)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._settings.grace + _EXIT_MARGIN
        self._target_signals = max(self._target_signals, signals)
        self._forward()

    def _forward(self) -> None:
        target = self._target_signals
        for worker in self._workers:
            # A worker that has not said hello yet would die of the default action.
            while worker.hello and not worker.exited and worker.signals_sent < target:
                worker.signals_sent += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid(worker), signal.SIGTERM)

    @staticmethod
    def _pid(worker: _Worker) -> int:
        pid = worker.process.pid
        assert pid is not None, "a started process has a pid"
        return pid

    def _handle_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(64):
                pass
        while self._handled < len(self._received):
            signum = self._received[self._handled]
            self._handled += 1
            now = self._handled > 1
            _LOGGER.info(
                "received %s%s; %s workers",
                signal.Signals(signum).name,
                "" if not now else " again",
                "stopping" if now else "draining",
            )
            self._stop(2 if now else 1)

    # workers

    def _start_worker(
        self, index: int, settings: Settings, replacing: _Worker | None = None
    ) -> _Worker:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(index, settings, child_end, self._metrics_dir is not None),
            name=f"actgrad-worker-{index}",
        )
        process.start()
        child_end.close()
        worker = _Worker(index, process, parent_end)
        if replacing is None:
            self._workers.append(worker)
        else:
            # In its place (the loops of _pump may be iterating over the list).
            self._workers[self._workers.index(replacing)] = worker
            replacing.conn.close()
        _LOGGER.info("started worker %d (pid %d)", index, process.pid)
        return worker

    def _on_message(self, worker: _Worker) -> None:
        try:
            message: Any = worker.conn.recv()
        except (EOFError, OSError):
            worker.pipe_open = False
            return
        if isinstance(message, _Hello):
            worker.hello = True
            self._forward()
        elif isinstance(message, _Bound):
            worker.bound = message
        elif isinstance(message, _Serving):
            worker.serving = message
        elif isinstance(message, _Failed):
            _LOGGER.error("worker %d could not start: %s", worker.index, message.message)
            self._start_failure = self._start_failure or message
            self._failed = True
            self._stop()

    def _on_exit(self, worker: _Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        worker.exit_code = 1 if code is None else code
        if self._metrics_dir is not None:
            # Its live gauges (in flight, serving, cache) leave the sums.
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                self._pid(worker), self._metrics_dir
            )
        if not self._stopping:
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < RESTART_WINDOW] + [now]
            settings = self._restart_settings
            if settings is not None and len(self._crashes) < RESTART_LIMIT:
                _LOGGER.error(
                    "worker %d (pid %d) exited unexpectedly with status %d; restarting it "
                    "(%d unexpected exits in the last %.0fs, limit %d)",
                    worker.index,
                    self._pid(worker),
                    worker.exit_code,
                    len(self._crashes),
                    RESTART_WINDOW,
                    RESTART_LIMIT,
                )
                self._start_worker(worker.index, settings, replacing=worker)
                return
            reason = "during start-up" if settings is None else "in a crash loop"
            _LOGGER.error(
                "worker %d (pid %d) exited unexpectedly with status %d %s; stopping the server",
                worker.index,
                self._pid(worker),
                worker.exit_code,
                reason,
            )
            self._failed = True
            self._stop()
        elif worker.exit_code != 0:
            self._failed = True
            _LOGGER.warning("worker %d exited with status %d", worker.index, worker.exit_code)

    def _pump(self, done: Callable[[], bool]) -> None:
        """Handles messages, exits and signals until `done()` or every worker exited."""
        while not done() and not all(w.exited for w in self._workers):
            waitables: list[Any] = [self._wake_r]
            for worker in self._workers:
                if worker.pipe_open:
                    waitables.append(worker.conn)
                if not worker.exited:
                    waitables.append(worker.process.sentinel)
            timeout = None
            if self._stop_deadline is not None:
                timeout = max(0.0, self._stop_deadline - time.monotonic())
            ready = connection.wait(waitables, timeout)
            for worker in self._workers:
                if worker.conn in ready:
                    self._on_message(worker)
            for worker in self._workers:
                if not worker.exited and worker.process.sentinel in ready:
                    # Messages sent before it exited come first.
                    while worker.pipe_open and worker.conn.poll():
                        self._on_message(worker)
                    self._on_exit(worker)
            if self._wake_r in ready or self._handled < len(self._received):
                self._handle_signals()
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                self._kill_the_rest()

    def _kill_the_rest(self) -> None:
        for worker in self._workers:
            if not worker.exited:
                _LOGGER.error("worker %d did not exit in time; killing it", worker.index)
                worker.process.kill()
        self._failed = True
        self._stop_deadline = time.monotonic() + _EXIT_MARGIN

    def run(self) -> int:
        settings = dataclasses.replace(self._settings, metrics_port=-1, workers=1)
        with self._signals():
            try:
                first = self._start_worker(0, settings)
                if settings.port == 0 or settings.http_port == 0:
                    # The others bind the ports the kernel gave worker 0.
                    self._pump(lambda: first.bound is not None or self._stopping)
                    if first.bound is not None:
                        settings = dataclasses.replace(
                            settings,
                            port=first.bound.port,
                            http_port=(
                                settings.http_port
                                if first.bound.http_port is None
                                else first.bound.http_port
                            ),
                        )
                if not self._stopping:
                    for index in range(1, self._count):
                        self._start_worker(index, settings)
                self._pump(
                    lambda: self._stopping or all(w.serving is not None for w in self._workers)
                )
                if not self._stopping and first.bound is not None and first.serving is not None:
                    self._restart_settings = settings
                    _LOGGER.info(
                        "serving actgrad.v1 on %s (providers: %s; %s; %d workers)%s",
                        first.bound.address,
                        ", ".join(first.serving.providers),
                        "TLS" if self._settings.tls else "plaintext",
                        self._count,
                        ""
                        if first.bound.http_port is None
                        else f"; HTTP on port {first.bound.http_port}",
                    )
                self._pump(lambda: False)
            finally:
                for worker in self._workers:
                    if not worker.exited:  # only after an exception in this process
                        worker.process.kill()
                        worker.process.join()
                    worker.conn.close()
        if self._start_failure is not None and self._start_failure.config_error:
            raise ConfigError(self._start_failure.message)
        _LOGGER.info("stopped")
        return 1 if self._failed else 0


def _check_port_free(host: str, port: int, what: str = "", hint: str = "") -> None:
    """Raises OSError when host:port is taken, by a listener of any kind.

    The workers bind with SO_REUSEPORT, which would let them join the listeners of
    another server of the same user on that port; a plain bind first refuses that.
    """
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As grpc's listeners: a connection in TIME_WAIT does not hold the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot bind {what}{host}:{port}: {exc.strerror}{hint}"
                ) from None


@contextlib.contextmanager
def _shared_metrics(settings: Settings) -> Iterator[str | None]:
    """With metrics on: a private multiprocess directory for the workers (passed to
    them as PROMETHEUS_MULTIPROC_DIR) and ``/metrics`` serving it; None otherwise."""
    previous = os.environ.pop(_MULTIPROC_ENV, None)
    directory: str | None = None
    http = thread = None
    try:
        if settings.metrics_port >= 0:
            directory = tempfile.mkdtemp(prefix="actgrad-metrics-")
            # Spawned workers inherit the environment of the moment they start.
            os.environ[_MULTIPROC_ENV] = directory
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                registry, path=directory
            )
            http, thread = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=registry
            )
            host = settings.metrics_host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            _LOGGER.info("metrics on http://%s:%d/metrics", host, http.server_port)
        yield directory
    finally:
        if http is not None and thread is not None:
            http.shutdown()
            http.server_close()
            thread.join()
        os.environ.pop(_MULTIPROC_ENV, None)
        if previous is not None:
            os.environ[_MULTIPROC_ENV] = previous
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def supervise(settings: Settings, count: int) -> int:
    """Runs `count` worker processes on one port until SIGTERM or SIGINT; returns the
    exit status (0 when every worker drained and exited 0).

    Raises ConfigError when a worker could not start because of its settings.
    """
    if count < 2:
        raise ValueError(f"supervise() runs 2 or more workers, got {count}")
    if settings.port != 0:
        _check_port_free(settings.host, settings.port)
    if settings.http_port > 0:
        _check_port_free(settings.host, settings.http_port, "HTTP ", HTTP_PORT_HINT)
    with _shared_metrics(settings) as metrics_dir:
        return _Supervisor(settings, count, metrics_dir).run()
