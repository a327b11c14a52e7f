"""Throughput with h2load (Debian's ``nghttp2-client``): calls kept in flight by a C
client, over gRPC's HTTP/2 (h2c) and plain HTTP/1.1 alike.

A Python client cannot keep 64 calls in flight on a 2-core machine without becoming
the limit itself (issue 21: 185-280 us of client CPU a call), so every throughput
cell of ``python -m bench`` sends its exact request bytes with h2load: a gRPC call as
its protobuf request behind gRPC's 5-byte message prefix, with ``content-type:
application/grpc`` and ``te: trailers``, over ``connections x streams``; an HTTP call
as its body over HTTP/1.1 (``--h1``), one connection per call in flight.

h2load counts an HTTP 200 as a success even when the gRPC status in the trailers is
an error, so a cell is *verified* before it gives a figure (`measure`): every call
answered 2xx, none failed, errored or timed out, the DATA h2load received is exactly
the calls times the size of the answer a real client got and checked just before
(a gRPC error sends no message: its answer has no DATA), a checked answer of that
size again just after (`Sample`), and, where the server counts its calls by status
(actgrad's ``/metrics``), exactly that many more OK calls and no more errors. A cell
that fails any of these has no calls/s: its `problems` say why.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INSTALL_HINT",
    "H2loadMissing",
    "H2loadResult",
    "Load",
    "Sample",
    "grpc_frame",
    "h2load_path",
    "h2load_version",
    "measure",
    "run",
    "settle",
]

INSTALL_HINT = (
    "h2load is needed for the throughput phases: install Debian's nghttp2-client "
    "(sudo apt-get install nghttp2-client), or leave throughput and http out of --phases"
)
GRPC_HEADERS = (("content-type", "application/grpc"), ("te", "trailers"))


class H2loadMissing(RuntimeError):
    """h2load is not on PATH."""


def h2load_path() -> str:
    """h2load's path, or `H2loadMissing` saying how to install it."""
    path = shutil.which("h2load")
    if path is None:
        raise H2loadMissing(INSTALL_HINT)
    return path


def h2load_version() -> str | None:
    path = shutil.which("h2load")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length."""
    return b"\0" + len(message).to_bytes(4, "big") + message


@dataclass(frozen=True)
class Load:
    """What h2load sends: one body to one URL, `connections` x `streams` in flight."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    h1: bool
    connections: int
    streams: int = 1  # concurrent streams per connection (HTTP/2 only)

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "protocol": "http/1.1" if self.h1 else "h2c",
            "connections": self.connections,
            "streams_per_connection": self.streams,
            "request_body_bytes": len(self.body),
        }


@dataclass(frozen=True)
class H2loadResult:
    requests: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: Mapping[str, int]  # 2xx, 3xx, 4xx, 5xx
    data_bytes: int
    seconds: float  # h2load's own "finished in"
    client_cpu_s: float  # h2load's user + system CPU

    @property
    def calls_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_DATA = re.compile(r"\((\d+)\) data")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse(text: str, client_cpu_s: float = 0.0) -> H2loadResult:
    """h2load's summary (its stdout) as numbers; ValueError if a line is missing."""
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    status = _STATUS.search(text)
    data = _DATA.search(text)
    if not (finished and requests and status and data):
        raise ValueError(f"not an h2load summary:\n{text[-2000:]}")
    counts = [int(v) for v in requests.groups()]
    return H2loadResult(
        requests=counts[0],
        started=counts[1],
        done=counts[2],
        succeeded=counts[3],
        failed=counts[4],
        errored=counts[5],
        timeout=counts[6],
        status=dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, status.groups()), strict=True)),
        data_bytes=int(data.group(1)),
        seconds=float(finished.group(1)) * _UNIT[finished.group(2)],
        client_cpu_s=client_cpu_s,
    )


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def run(
    load: Load, *, requests: int | None = None, seconds: float | None = None, timeout: float
) -> H2loadResult:
    """One h2load run: `requests` calls in all, or as many as fit in `seconds`.

    One h2load thread: on a small machine a second one takes a core from the server.
    """
    if (requests is None) == (seconds is None):
        raise ValueError("give requests or seconds")
    with tempfile.NamedTemporaryFile(prefix="bench-h2load-", suffix=".bin") as body:
        body.write(load.body)
        body.flush()
        argv = [h2load_path(), "--threads=1", f"--clients={load.connections}"]
        argv += [f"--max-concurrent-streams={load.streams}", f"--data={body.name}"]
        argv += [f"--header={name}: {value}" for name, value in load.headers]
        if load.h1:
            argv.append("--h1")
        if requests is not None:
            argv.append(f"--requests={max(requests, load.connections)}")
        else:
            assert seconds is not None
            argv.append(f"--duration={_duration(seconds)}")
        argv.append(load.url)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(
            f"h2load exited {proc.returncode}: {' '.join(argv)}\n{proc.stderr[-2000:]}"
            f"{proc.stdout[-2000:]}"
        )
    return parse(proc.stdout, cpu)


@dataclass(frozen=True)
class Sample:
    """A call made by a real client, its answer checked: `call()` returns the answer's
    body as h2load counts it (the gRPC message with its 5-byte prefix, or the HTTP
    body) and raises if the answer is wrong."""

    call: Callable[[], bytes]


def measure(
    load: Load,
    *,
    sample: Sample,
    warmup_s: float,
    seconds: float,
    server_cpu: Callable[[], float],
    ok_calls: Callable[[], tuple[int, int]] | None = None,
    min_calls: int = 0,
) -> dict[str, Any]:
    """One verified throughput cell (see the module's docstring).

    An unmeasured h2load run of `warmup_s` sets the call count of the measured one
    (as many calls as the warm-up's rate fits in `seconds`); the measured run sends
    exactly that many, so that every one of them is accounted for. `server_cpu` is
    the server's CPU time in seconds (read around the measured run); `ok_calls`, the
    server's own count of (OK, not OK) calls where it has one.
    """
    expected = sample.call()
    warm = run(load, seconds=warmup_s, timeout=warmup_s + 60)
    rate = warm.done / warmup_s if warmup_s > 0 else 0.0
    calls = max(int(rate * seconds), min_calls, 2 * load.in_flight, 1)
    # h2load stops the warm-up with calls in flight, which the server still finishes:
    # neither their CPU nor their count may land in the measured run.
    settle(server_cpu)
    ok0 = ok_calls() if ok_calls else None
    cpu0 = server_cpu()
    wall0 = time.perf_counter()
    # Generous: a server that stalls is reported by h2load's own timeout counts.
    result = run(load, requests=calls, timeout=10 * seconds + 120)
    wall = time.perf_counter() - wall0
    cpu1 = server_cpu()
    ok1 = ok_calls() if ok_calls else None
    after = sample.call()
    problems = verify(result, calls, len(expected))
    if len(after) != len(expected):
        # Sizes, not bytes: some servers answer with a fresh id every call (MLServer).
        problems.append(
            f"a checked call after the run answered {len(after)} bytes, {len(expected)} before it"
        )
    if ok0 is not None and ok1 is not None:
        ok, bad = ok1[0] - ok0[0], ok1[1] - ok0[1]
        if ok != result.done or bad:
            problems.append(
                f"the server counted {ok} OK and {bad} failed calls for {result.done} sent"
            )
    server_cpu_s = cpu1 - cpu0
    row: dict[str, Any] = {
        "calls": result.done,
        "seconds": round(result.seconds, 4),
        "wall_seconds": round(wall, 4),
        "calls_per_s": None if problems else result.calls_per_s,
        "server_cpu_us_per_call": (
            None if problems or not result.done else server_cpu_s / result.done * 1e6
        ),
        "server_cpu_cores": server_cpu_s / result.seconds if result.seconds else None,
        "client_cpu_cores": result.client_cpu_s / result.seconds if result.seconds else None,
        "answer_bytes": len(expected),
        "data_bytes": result.data_bytes,
        "status": dict(result.status),
        "errors": {
            k: v
            for k, v in (
                ("failed", result.failed),
                ("errored", result.errored),
                ("timeout", result.timeout),
                ("not 2xx", result.done - result.status["2xx"]),
            )
            if v
        },
        "verified": not problems,
        "problems": problems,
        # Whether the server's own count of OK calls was checked too (actgrad's).
        "server_counted": ok_calls is not None,
        "warmup_calls_per_s": round(rate, 1),
    }
    return row


def settle(
    server_cpu: Callable[[], float],
    *,
    interval: float = 0.2,
    idle_cores: float = 0.05,
    limit: float = 30.0,
) -> None:
    """Waits until the server uses less than `idle_cores` of a core (at most `limit` s)."""
    end = time.monotonic() + limit
    before = server_cpu()
    while time.monotonic() < end:
        time.sleep(interval)
        now = server_cpu()
        if now - before < idle_cores * interval:
            return
        before = now


def verify(result: H2loadResult, calls: int, answer_bytes: int) -> list[str]:
    """What is wrong with a run of `calls` calls each answered `answer_bytes` bytes."""
    problems = []
    if result.done != calls or result.succeeded != calls:
        problems.append(f"{result.succeeded} of {calls} calls succeeded ({result.done} done)")
    if result.failed or result.errored or result.timeout:
        problems.append(
            f"{result.failed} failed, {result.errored} errored, {result.timeout} timed out"
        )
    if result.status["2xx"] != result.done:
        problems.append(f"{result.done - result.status['2xx']} answers were not 2xx")
    if result.data_bytes != calls * answer_bytes:
        problems.append(
            f"{result.data_bytes} bytes of answers, not {calls} x {answer_bytes}: some calls "
            "did not get the checked answer (a gRPC error in the trailers sends none)"
        )
    return problems


def grpc_load(target: str, method: str, message: bytes, *, connections: int, streams: int) -> Load:
    """A unary gRPC call of `method` (``/package.Service/Method``) with `message`."""
    return Load(
        url=f"http://{target}{method}",
        body=grpc_frame(message),
        headers=GRPC_HEADERS,
        h1=False,
        connections=connections,
        streams=streams,
    )


def http_load(
    target: str, path: str, body: bytes, headers: Sequence[tuple[str, str]], *, in_flight: int
) -> Load:
    """An HTTP/1.1 POST of `body`, one connection per call in flight (no pipelining)."""
    return Load(
        url=f"http://{target}{path}",
        body=body,
        headers=tuple(headers),
        h1=True,
        connections=in_flight,
    )


def environment() -> dict[str, Any]:
    """h2load's version and the machine's CPU count, for the report."""
    return {"h2load": h2load_version(), "cpus": os.cpu_count()}
