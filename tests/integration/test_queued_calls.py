"""Calls that end while they wait for a thread are logged and counted like any call.

grpcio never runs the handler of a call whose caller cancelled, or whose deadline
passed, before a thread took it (its unary request is not even read), so the
interceptor never saw them: 0 of 60 such calls had an access-log line (issue 20).
Every call thread is held here by a slow call; the calls queued behind it end in
the queue, and each must have its line (its request id and code) and be counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from _running import SlowEngine, running, sample, scrape, settings

from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc, tensor_pb2

LATE, CANCELLED = 4, 3
RPCS = {"unary": "Activate", "stream": "ActivateStream"}
_REQUEST = pb.ActivateRequest(
    function="sigmoid",
    input=tensor_pb2.Tensor(
        dtype=tensor_pb2.DTYPE_FLOAT64, shape=[2], data=np.array([0.5, -0.5]).tobytes()
    ),
)


def _calls(stub: activation_pb2_grpc.ActivationServiceStub, kind: str) -> Callable[..., Any]:
    """A function starting one call of `kind` (a future-like object with result/cancel)."""
    if kind == "unary":
        return lambda **options: stub.Activate.future(_REQUEST, **options)

    def stream(**options: Any) -> Any:
        return stub.ActivateStream(iter([_REQUEST]), **options)

    return stream


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _received(port: int, rpc: str) -> float:
    return sample(scrape(port), "actgrad_requests_received_total", rpc=rpc) or 0.0


def _ended(call: Any, kind: str) -> grpc.StatusCode:
    try:
        if kind == "unary":
            call.result(timeout=30)
        else:  # a response stream: read (its result() would wait for that forever)
            list(call)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("kind", RPCS)
def test_calls_ended_in_the_queue_have_their_access_log_line_and_count(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    rpc = f"actgrad.v1.ActivationService/{RPCS[kind]}"
    engine = SlowEngine()
    # One call thread, and one stream thread (half of --threads, at least one).
    config = settings(threads=1, metrics_port=0, access_log=True)
    with (
        running(config, engine=engine) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        futures.ThreadPoolExecutor(LATE + CANCELLED + 1) as pool,
    ):
        start = _calls(activation_pb2_grpc.ActivationServiceStub(channel), kind)
        port = server.metrics_port or 0
        try:
            held = start(timeout=30, metadata=[("x-request-id", "held")])
            held_code = pool.submit(_ended, held, kind)
            engine.wait_entered(1)
            late = [
                start(timeout=1.0, metadata=[("x-request-id", f"late-{i}")]) for i in range(LATE)
            ]
            late_codes = [pool.submit(_ended, call, kind) for call in late]
            cancelled = [
                start(timeout=30, metadata=[("x-request-id", f"cancelled-{i}")])
                for i in range(CANCELLED)
            ]
            _wait_for(lambda: _received(port, rpc) >= 1 + LATE + CANCELLED, "the calls to queue")
            for call in cancelled:
                call.cancel()
            assert [f.result(30) for f in late_codes] == [grpc.StatusCode.DEADLINE_EXCEEDED] * LATE
        finally:
            engine.release.set()
        assert held_code.result(30) == grpc.StatusCode.OK
        assert engine.entered == 1, "a call that ended in the queue reached the engine"

        def logged() -> dict[str, str]:
            return {
                getattr(r, "request_id", ""): getattr(r, "code", "")
                for r in caplog.records
                if r.name == "actgrad_server.access"
            }

        _wait_for(lambda: len(logged()) >= 1 + LATE + CANCELLED, "every access-log line", 10)
        lines = logged()
        assert lines["held"] == "OK"
        for i in range(LATE):
            assert lines.get(f"late-{i}") == "DEADLINE_EXCEEDED", lines
        for i in range(CANCELLED):
            assert lines.get(f"cancelled-{i}") == "CANCELLED", lines
        text = scrape(port)
        for code, count in (("DEADLINE_EXCEEDED", LATE), ("CANCELLED", CANCELLED), ("OK", 1)):
            assert sample(text, "actgrad_requests_total", rpc=rpc, code=code) == count, code
        assert sample(text, "actgrad_requests_in_flight") == 0
