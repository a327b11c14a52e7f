"""Prometheus metrics of one server, in a registry of its own (no module globals).

Each `ActgradServer` owns a `ServerMetrics`; every front end records its calls in it
through `calls.records.CallRecords` (labelled by protocol, "grpc" or "http"), and the
engine's session cache is read at scrape time. `serve_http` exposes
``/metrics`` on its own port (prometheus-client's WSGI server, a daemon thread).

A worker of ``actgrad serve --workers N`` records in prometheus-client's
multiprocess files instead (``shared=True``; the supervisor sets
PROMETHEUS_MULTIPROC_DIR before it starts the workers and serves their sum, see
`actgrad_server.workers`). Its cache cannot be read at scrape time from another
process, so a worker copies it into gauges every `CACHE_SYNC_SECONDS`. Each update of
a multiprocess value takes one process-wide lock and writes into a mapped file, so a
worker tallies its finished calls (the calls counter, latency histogram and byte
counters) per thread and writes them every `CALL_FLUSH_SECONDS`, and once more when
it stops: /metrics may lag a worker's last calls by that much. The in-flight gauge
and the received counter stay exact (the drain and the idle trim read them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from actgrad_server.engine import CacheInfo

__all__ = ["CACHE_SYNC_SECONDS", "CALL_FLUSH_SECONDS", "ServerMetrics"]

_LOGGER = logging.getLogger(__name__)

# From half a millisecond (a small tensor over loopback) to ten seconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# How stale a worker's session cache metrics may be under several workers.
CACHE_SYNC_SECONDS = 1.0
# How stale a worker's finished-call metrics may be under several workers.
CALL_FLUSH_SECONDS = 0.1


class _CacheCollector(Collector):
    """Reads the engine's session cache when scraped."""

    def __init__(self, cache_info: Callable[[], CacheInfo]) -> None:
        self._cache_info = cache_info

    def collect(self) -> Iterator[Any]:
        info = self._cache_info()
        yield GaugeMetricFamily(
            "actgrad_session_cache_size", "onnxruntime sessions in the cache", value=info.size
        )
        yield GaugeMetricFamily(
            "actgrad_session_cache_capacity",
            "most onnxruntime sessions the cache keeps",
            value=info.capacity,
        )
        yield CounterMetricFamily(
            "actgrad_graph_builds", "ONNX graphs built into sessions", value=info.builds
        )


class _Tally:
    """One thread's finished calls not yet written to the multiprocess files."""

    __slots__ = ("lock", "outcomes", "per_rpc")

    def __init__(self) -> None:
        # Taken by its own thread once per call and by the flush: never contended long.
        self.lock = threading.Lock()
        self.outcomes: dict[tuple[str, str, str, str, str], int] = {}
        # (protocol, rpc) -> [bytes in, bytes out, latencies]
        self.per_rpc: dict[tuple[str, str], list[Any]] = {}


@dataclass(frozen=True)
class RpcChildren:
    """One method's label children of the metrics labelled by rpc."""

    received: Any
    latency: Any
    bytes_in: Any
    bytes_out: Any


class ServerMetrics:
    """The metrics of one server. `registry` is what ``/metrics`` shows.

    With `shared`, the values go to prometheus-client's multiprocess files (the
    process must have started with PROMETHEUS_MULTIPROC_DIR set); gauges say how
    the workers' values combine (`multiprocess_mode`, ignored otherwise).
    """

    def __init__(self, cache_info: Callable[[], CacheInfo], *, shared: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "actgrad_requests_received",
            "Calls accepted, counted before they wait for a thread, by protocol and rpc",
            ["protocol", "rpc"],
            registry=self.registry,
        )
        self.requests = Counter(
            "actgrad_requests",
            "Finished calls by protocol, rpc, function, dtype and status code",
            ["protocol", "rpc", "function", "dtype", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "actgrad_request_duration_seconds",
            "Time from the handler's start to its end, by protocol and rpc",
            ["protocol", "rpc"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "actgrad_requests_in_flight",
            "Calls being handled now, every protocol together",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.bytes_in = Counter(
            "actgrad_request_bytes",
            "Serialized request message bytes (HTTP: body bytes), by protocol and rpc",
            ["protocol", "rpc"],
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "actgrad_response_bytes",
            "Serialized response message bytes (HTTP: body bytes), by protocol and rpc",
            ["protocol", "rpc"],
            registry=self.registry,
        )
        self.serving = Gauge(
            "actgrad_serving",
            "1 while health says SERVING, 0 while warming up or draining",
            registry=self.registry,
            # Several workers: 1 only while every live worker serves.
            multiprocess_mode="livemin",
        )
        self._cache_info = cache_info
        self._shared = shared
        # Label children, looked up once each: `labels()` validates and locks on every
        # call, about 3 us, five times per call. The label values are bounded (served
        # methods, catalog names, dtypes, status codes), and so are these dicts.
        self._per_rpc: dict[tuple[str, str], RpcChildren] = {}
        self._outcomes: dict[tuple[str, str, str, str, str], Any] = {}
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        # Shared: finished calls tallied per thread until `flush_calls`.
        self._tallies: list[_Tally] = []
        self._tallies_lock = threading.Lock()
        self._own_tally = threading.local()
        if not shared:
            self.registry.register(_CacheCollector(cache_info))
            return
        # The supervisor sums these over the live workers.
        self._cache_size = Gauge(
            "actgrad_session_cache_size",
            "onnxruntime sessions in the cache",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._cache_capacity = Gauge(
            "actgrad_session_cache_capacity",
            "most onnxruntime sessions the cache keeps",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._graph_builds = Counter(
            "actgrad_graph_builds", "ONNX graphs built into sessions", registry=self.registry
        )
        self._builds_seen = 0
        self._sync_lock = threading.Lock()

    def rpc(self, rpc: str, protocol: str = "grpc") -> RpcChildren:
        """The children of one method's metrics labelled by protocol and rpc alone."""
        found = self._per_rpc.get((protocol, rpc))
        if found is None:
            found = self._per_rpc[protocol, rpc] = RpcChildren(
                received=self.received.labels(protocol, rpc),
                latency=self.latency.labels(protocol, rpc),
                bytes_in=self.bytes_in.labels(protocol, rpc),
                bytes_out=self.bytes_out.labels(protocol, rpc),
            )
        return found

    def finished(
        self, rpc: str, function: str, dtype: str, code: str, protocol: str = "grpc"
    ) -> Any:
        """The `requests` counter child of one outcome."""
        key = (protocol, rpc, function, dtype, code)
        found = self._outcomes.get(key)
        if found is None:
            found = self._outcomes[key] = self.requests.labels(*key)
        return found

    def record_finished(
        self,
        rpc: str,
        function: str,
        dtype: str,
        code: str,
        elapsed: float,
        bytes_in: int,
        bytes_out: int,
        protocol: str = "grpc",
    ) -> None:
        """One finished call: its outcome, latency and sizes (tallied when shared)."""
        if not self._shared:
            self.finished(rpc, function, dtype, code, protocol).inc()
            children = self.rpc(rpc, protocol)
            children.latency.observe(elapsed)
            children.bytes_in.inc(bytes_in)
            children.bytes_out.inc(bytes_out)
            return
        tally = self._tally()
        key = (protocol, rpc, function, dtype, code)
        with tally.lock:
            tally.outcomes[key] = tally.outcomes.get(key, 0) + 1
            sums = tally.per_rpc.get((protocol, rpc))
            if sums is None:
                sums = tally.per_rpc[protocol, rpc] = [0, 0, []]
            sums[0] += bytes_in
            sums[1] += bytes_out
            sums[2].append(elapsed)

    def _tally(self) -> _Tally:
        tally: _Tally | None = getattr(self._own_tally, "tally", None)
        if tally is None:
            tally = self._own_tally.tally = _Tally()
            with self._tallies_lock:
                self._tallies.append(tally)
        return tally

    def flush_calls(self) -> None:
        """Writes the tallied finished calls into the metrics (shared: the files)."""
        with self._tallies_lock:
            tallies = list(self._tallies)
        for tally in tallies:
            with tally.lock:
                outcomes, tally.outcomes = tally.outcomes, {}
                per_rpc, tally.per_rpc = tally.per_rpc, {}
            for (protocol, rpc, function, dtype, code), count in outcomes.items():
                self.finished(rpc, function, dtype, code, protocol).inc(count)
            for (protocol, rpc), (bytes_in, bytes_out, latencies) in per_rpc.items():
                children = self.rpc(rpc, protocol)
                children.bytes_in.inc(bytes_in)
                children.bytes_out.inc(bytes_out)
                for elapsed in latencies:
                    children.latency.observe(elapsed)

    def calls_received(self) -> int:
        """Calls this process has accepted since it started (the received counter)."""
        total = 0.0
        for metric in self.received.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        return int(total)

    def open_calls(self) -> int:
        """Calls of this process being handled now (the in-flight gauge's value)."""
        total = 0.0
        for metric in self.in_flight.collect():
            for sample in metric.samples:
                total += sample.value
        return int(total)

    def sync_cache(self) -> None:
        """Copies the session cache's numbers into the shared metrics (no-op unless shared)."""
        if not self._shared:
            return
        info = self._cache_info()
        with self._sync_lock:
            self._cache_size.set(info.size)
            self._cache_capacity.set(info.capacity)
            if info.builds > self._builds_seen:
                self._graph_builds.inc(info.builds - self._builds_seen)
                self._builds_seen = info.builds

    def start_cache_sync(
        self, interval: float = CACHE_SYNC_SECONDS, calls_interval: float = CALL_FLUSH_SECONDS
    ) -> None:
        """Shared metrics: syncs the cache now, then every `interval` seconds, and
        writes the tallied finished calls every `calls_interval`, until `stop_http`.
        Without `shared` the cache is read at scrape time and calls are recorded as
        they finish."""
        if not self._shared or self._sync_thread is not None:
            return
        self.sync_cache()

        def run() -> None:
            next_cache = time.monotonic() + interval
            while not self._sync_stop.wait(calls_interval):
                self.flush_calls()
                if time.monotonic() >= next_cache:
                    self.sync_cache()
                    next_cache = time.monotonic() + interval

        self._sync_thread = threading.Thread(target=run, name="actgrad-metrics-sync", daemon=True)
        self._sync_thread.start()

    def serve_http(self, host: str, port: int) -> int:
        """Starts ``/metrics`` on host:port (0 = any free port); returns the port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound: int = self._http.server_port
        return bound

    def stop_http(self) -> None:
        """Stops ``/metrics`` and the cache sync, where they run."""
        if self._sync_thread is not None:
            self._sync_stop.set()
            self._sync_thread.join()
            self._sync_thread = None
            self.sync_cache()
        self.flush_calls()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
