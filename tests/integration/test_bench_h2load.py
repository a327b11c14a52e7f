"""`bench.h2load`: a throughput figure from failed calls is impossible.

h2load counts an HTTP 200 as a success even when the gRPC status in the trailers is an
error. These tests send calls that fail that way (a method the server does not have:
HTTP 200, grpc-status 12 in a trailers-only answer) and calls that succeed, to a real
grpcio echo server, and check that only the second get a figure. Nothing here looks
at how fast anything was.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from bench import h2load  # noqa: E402  (the repository root is not a package path)
from bench._proc import ServerProcess  # noqa: E402
from bench.echo_server import ECHO_METHOD  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="h2load is missing (apt-get install nghttp2-client): bench's throughput needs it",
)

MESSAGE = bytes(range(64))
SUMMARY = (
    "finished in 1.50s, 2081.33 req/s, 375.53KB/s\n"
    "requests: 3122 total, 3186 started, 3122 done, 3122 succeeded, 0 failed, 0 errored, "
    "0 timeout\n"
    "status codes: 3122 2xx, 0 3xx, 0 4xx, 0 5xx\n"
    "traffic: 563.29KB (576813) total, 9.73KB (9966) headers (space savings 96.06%), "
    "240.86KB (246638) data\n"
)


@pytest.fixture(scope="module")
def echo() -> Iterator[ServerProcess]:
    args = ["--threads=4", "--max-message-bytes=4194304", "--max-concurrent-rpcs=64"]
    with ServerProcess("echo", "bench.echo_server", args, start_timeout=60) as server:
        yield server


def _sample(server: ServerProcess) -> h2load.Sample:
    channel = grpc.insecure_channel(server.target)
    echo = channel.unary_unary(ECHO_METHOD, None, None)

    def call() -> bytes:
        answer: bytes = echo(MESSAGE, timeout=10)
        assert answer == MESSAGE
        return h2load.grpc_frame(answer)

    return h2load.Sample(call)


def test_parse_reads_the_summary() -> None:
    result = h2load.parse(SUMMARY, client_cpu_s=0.5)
    assert (result.done, result.succeeded, result.failed) == (3122, 3122, 0)
    assert result.status["2xx"] == 3122
    assert result.data_bytes == 246638
    assert result.seconds == pytest.approx(1.5)
    assert h2load.verify(result, 3122, 79) == []  # 3122 x 79 = 246638
    assert h2load.verify(result, 3122, 80)  # one byte more a call: not these answers
    with pytest.raises(ValueError, match="not an h2load summary"):
        h2load.parse("connection refused")


def test_grpc_frame_is_the_length_prefixed_message() -> None:
    assert h2load.grpc_frame(b"abc") == b"\0\0\0\0\3abc"


def test_calls_that_succeed_get_a_figure(echo: ServerProcess) -> None:
    load = h2load.grpc_load(echo.target, ECHO_METHOD, MESSAGE, connections=2, streams=2)
    row = h2load.measure(
        load,
        sample=_sample(echo),
        warmup_s=0.1,
        seconds=0.2,
        server_cpu=echo.cpu_seconds,
    )
    assert row["verified"] is True and row["problems"] == []
    assert row["calls_per_s"] > 0 and row["server_cpu_us_per_call"] > 0
    assert row["data_bytes"] == row["calls"] * (5 + len(MESSAGE))


def test_calls_failed_in_the_trailers_get_no_figure(echo: ServerProcess) -> None:
    # HTTP 200 with grpc-status 12 (UNIMPLEMENTED): h2load counts every one a success.
    load = h2load.grpc_load(echo.target, "/bench.v1.Echo/Nope", MESSAGE, connections=2, streams=2)
    row = h2load.measure(
        load,
        sample=_sample(echo),
        warmup_s=0.1,
        seconds=0.2,
        server_cpu=echo.cpu_seconds,
    )
    assert row["status"]["2xx"] == row["calls"] > 0  # what h2load alone would report
    assert row["verified"] is False
    assert row["calls_per_s"] is None and row["server_cpu_us_per_call"] is None
    assert any("bytes of answers" in p for p in row["problems"])


def test_a_server_count_that_disagrees_gets_no_figure(echo: ServerProcess) -> None:
    load = h2load.grpc_load(echo.target, ECHO_METHOD, MESSAGE, connections=1, streams=2)
    counts = iter([(0, 0), (1, 1)])  # one OK and one failed call, whatever was sent
    row = h2load.measure(
        load,
        sample=_sample(echo),
        warmup_s=0.1,
        seconds=0.1,
        server_cpu=echo.cpu_seconds,
        ok_calls=lambda: next(counts),
    )
    assert row["verified"] is False and row["calls_per_s"] is None
    assert any("the server counted 1 OK and 1 failed" in p for p in row["problems"])
