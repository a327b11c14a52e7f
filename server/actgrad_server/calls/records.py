"""The process's account of its calls, and the record of each finished one.

`CallRecords` is shared by every front end of a process:

- `received(protocol, rpc)` is the counter child a front end increments when it
  accepts a call, before the call waits for a thread (the idle trim watches the sum);
- `opened()` and `closed()` move the in-flight gauge: the calls being handled now,
  which the drain waits for, whichever protocol carried them;
- `finished(...)` writes one finished call's metrics (labelled by protocol, rpc,
  function, dtype and outcome) and, when on, its access log line.

A front end ends its own tracing span (it knows its status's number) and passes the
trace id here.
"""

from __future__ import annotations

import logging
from typing import Any

from actgrad_server.metrics import ServerMetrics

__all__ = ["GRPC", "HTTP", "CallRecords"]

#: The protocol label of each front end.
GRPC = "grpc"
HTTP = "http"

_ACCESS = logging.getLogger("actgrad_server.access")


class CallRecords:
    """Metrics and access log of one process's calls, whichever front end."""

    __slots__ = ("_in_flight", "access_log", "metrics")

    def __init__(self, metrics: ServerMetrics, *, access_log: bool = True) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self._in_flight = metrics.in_flight

    def received(self, protocol: str, rpc: str) -> Any:
        """The received counter's child of one method (increment it per call)."""
        return self.metrics.rpc(rpc, protocol).received

    def opened(self) -> None:
        self._in_flight.inc()

    def closed(self) -> None:
        self._in_flight.dec()

    def open_calls(self) -> int:
        """Calls of this process being handled now, every front end together."""
        return self.metrics.open_calls()

    def calls_received(self) -> int:
        """Calls this process has accepted since it started, every front end together."""
        return self.metrics.calls_received()

    def finished(
        self,
        protocol: str,
        rpc: str,
        outcome: str,
        elapsed: float,
        *,
        request_id: str,
        trace_id: str,
        function: str,
        dtype: str,
        bytes_in: int,
        bytes_out: int,
        peer: str,
        target: str | None = None,
    ) -> None:
        """One finished call: `outcome` is its status (a gRPC code's name, an HTTP
        status); `target` what the log shows as the call when other than `rpc` (an
        HTTP request's path, where `rpc` is its route's template)."""
        self.metrics.record_finished(
            rpc, function, dtype, outcome, elapsed, bytes_in, bytes_out, protocol
        )
        if not self.access_log:
            return
        shown = rpc if target is None else target
        _ACCESS.info(
            "%s %s %.2fms in=%dB out=%dB",
            shown,
            outcome,
            elapsed * 1e3,
            bytes_in,
            bytes_out,
            extra={
                "request_id": request_id,
                "trace_id": trace_id,
                "protocol": protocol,
                "rpc": shown,
                "code": outcome,
                "duration_ms": round(elapsed * 1e3, 3),
                "function": function,
                "dtype": dtype,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "peer": peer,
            },
        )
