"""Limits and backpressure: concurrency, message size, deadlines and cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from _running import SlowEngine, make_client, running, sample, scrape, settings

import actgrad
import actgrad.v1.activation_pb2
import actgrad.wire
from actgrad import Client
from actgrad_server.config import OPEN_SLOTS

KINDS = ["sync", "async"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATE = "actgrad.v1.ActivationService/Activate"


def _wait_received(port: int, count: int, timeout: float = 30.0) -> None:
    """Until the server has accepted `count` Activate calls (counted before they queue)."""
    deadline = time.monotonic() + timeout
    while (sample(scrape(port), "actgrad_requests_received_total", rpc=ACTIVATE) or 0) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never accepted {count} calls")
        time.sleep(0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_over_the_call_cap_a_call_is_refused_at_once(kind: str) -> None:
    engine = SlowEngine()
    config = settings(max_concurrent_rpcs=2, threads=4, max_streams=1, metrics_port=0)
    cap = config.call_cap
    assert cap == 2 + 4 + 1 + OPEN_SLOTS  # the limit, plus a call per thread of each pool
    x = np.linspace(-4.0, 4.0, 9)
    with running(config, engine=engine) as server, futures.ThreadPoolExecutor(cap) as pool:
        target = f"127.0.0.1:{server.port}"
        held = [pool.submit(_activate, target, x) for _ in range(cap)]
        engine.wait_entered(config.threads)  # the others wait for a thread
        _wait_received(server.metrics_port or 0, cap)
        client = make_client(kind, target, timeout=30.0)
        try:
            # The engine is still held: a hang would end in DEADLINE_EXCEEDED instead.
            with pytest.raises(actgrad.ResourceExhaustedError) as info:
                client.activate(x, "sigmoid")
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert not any(f.done() for f in held)
            engine.release.set()
            for future in held:
                np.testing.assert_allclose(future.result(30), _sigmoid(x), rtol=1e-12)
            np.testing.assert_allclose(client.activate(x, "sigmoid"), _sigmoid(x), rtol=1e-12)
        finally:
            engine.release.set()
            client.close()
        assert engine.entered == cap + 1  # the refused call never reached the engine
        text = scrape(server.metrics_port or 0)
        assert sample(text, "actgrad_requests_in_flight") == 0


def test_a_caller_keeping_the_limit_in_flight_is_never_refused() -> None:
    """grpcio counts a call until its thread's task has ended, after the caller has the
    answer and has sent the next call: with the cap at --max-concurrent-rpcs itself,
    a caller that keeps that many calls in flight was refused some (1 to 6 in 2,000
    here). The cap has a call per thread more (Settings.call_cap)."""
    config = settings(max_concurrent_rpcs=4, threads=4)
    x = np.linspace(-4.0, 4.0, 16, dtype=np.float32)
    calls = 4000

    async def keep_in_flight(target: str) -> tuple[int, list[str]]:
        done = 0
        refused: list[str] = []
        async with actgrad.AsyncClient(target, timeout=30.0) as client:

            async def caller() -> None:
                nonlocal done
                while done + len(refused) < calls:
                    try:
                        y = await client.activate(x, "sigmoid")
                    except actgrad.ResourceExhaustedError as exc:
                        refused.append(exc.details)
                    else:
                        np.testing.assert_allclose(y, _sigmoid(x), rtol=1e-6)
                        done += 1

            await asyncio.gather(*(caller() for _ in range(config.max_concurrent_rpcs)))
        return done, refused

    with running(config) as server:
        done, refused = asyncio.run(keep_in_flight(f"127.0.0.1:{server.port}"))
    assert refused == []
    assert done >= calls


def _activate(target: str, x: np.ndarray) -> np.ndarray:
    with Client(target, timeout=60.0) as client:
        return client.activate(x, "sigmoid")


@pytest.mark.parametrize("kind", KINDS)
def test_oversized_message_is_resource_exhausted_and_the_next_call_works(kind: str) -> None:
    limit = 1 << 20
    with running(settings(max_message_bytes=limit)) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")  # the client allows 64 MiB
        try:
            big = np.ones(limit // 8 + 1024, dtype=np.float64)  # just over 1 MiB of data
            with pytest.raises(actgrad.ResourceExhaustedError) as info:
                client.activate(big, "relu")
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            small = np.array([-1.0, 2.0], dtype=np.float32)
            y = client.activate(small, "relu")
            assert y.dtype == np.float32 and y.tolist() == [0.0, 2.0]
        finally:
            client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_response_over_the_limit_is_resource_exhausted_and_the_next_call_works(
    kind: str,
) -> None:
    limit = 1 << 20
    with running(settings(max_message_bytes=limit)) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            # The request fits; grad_input and output together do not.
            x = np.ones(limit // 8 - 4096, dtype=np.float64)
            with pytest.raises(actgrad.ResourceExhaustedError) as info:
                client.vjp(x, "relu", return_output=True)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            np.testing.assert_array_equal(client.gradient(x, "relu"), np.ones_like(x))
        finally:
            client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_over_max_elements_is_invalid_argument(kind: str) -> None:
    with running(settings(max_elements=1000, max_rank=3)) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(actgrad.InvalidArgumentError) as info:
                client.activate(np.zeros(1001, dtype=np.float32), "relu")
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(actgrad.InvalidArgumentError):
                client.activate(np.zeros((1, 1, 1, 1), dtype=np.float32), "relu")
            assert client.activate(np.zeros(1000, dtype=np.float32), "relu").shape == (1000,)
        finally:
            client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_whose_deadline_passed_in_the_queue_is_not_computed(kind: str) -> None:
    # One thread: a second call waits in the queue behind the held one.
    engine = SlowEngine()
    config = settings(threads=1, metrics_port=0)
    x = np.array([0.5, -0.5])
    with running(config, engine=engine) as server, futures.ThreadPoolExecutor(1) as pool:
        target = f"127.0.0.1:{server.port}"
        held = pool.submit(_activate, target, x)
        engine.wait_entered(1)
        client = make_client(kind, target)
        try:
            with pytest.raises(actgrad.DeadlineExceededError) as info:
                client.activate(x, "sigmoid", timeout=0.5)
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            engine.release.set()
            np.testing.assert_allclose(held.result(30), _sigmoid(x), rtol=1e-12)
            # With one thread, this call runs after the expired one was taken off the queue.
            np.testing.assert_allclose(client.activate(x, "sigmoid"), _sigmoid(x), rtol=1e-12)
        finally:
            engine.release.set()
            client.close()
        assert engine.entered == 2, "the expired call reached the engine"
        text = scrape(server.metrics_port or 0)
        assert sample(text, "actgrad_requests_in_flight") == 0
        assert client_health(target) == "SERVING"


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_cancelled_while_computing_leaks_nothing(kind: str) -> None:
    engine = SlowEngine()
    config = settings(threads=2, metrics_port=0)
    x = np.array([1.0, 2.0])
    with running(config, engine=engine) as server:
        target = f"127.0.0.1:{server.port}"
        client = make_client(kind, target)
        try:
            with pytest.raises(actgrad.DeadlineExceededError):
                client.activate(x, "sigmoid", timeout=0.5)
            assert engine.entered == 1
            engine.release.set()
            for _ in range(4):  # more calls than threads: no thread was lost
                np.testing.assert_allclose(client.activate(x, "sigmoid"), _sigmoid(x), rtol=1e-12)
        finally:
            engine.release.set()
            client.close()
        text = scrape(server.metrics_port or 0)
        assert sample(text, "actgrad_requests_in_flight") == 0
        rpc = "actgrad.v1.ActivationService/Activate"
        ok = sample(
            text, "actgrad_requests_total", rpc=rpc, function="sigmoid", dtype="float64", code="OK"
        )
        assert ok == 4
        late = sample(
            text,
            "actgrad_requests_total",
            rpc=rpc,
            function="sigmoid",
            dtype="float64",
            code="DEADLINE_EXCEEDED",
        )
        assert late == 1


def client_health(target: str) -> Any:
    with Client(target, timeout=10.0) as client:
        return client.health()


def _big_chunks(chunks: int, elements: int) -> Any:
    x = np.linspace(-3.0, 3.0, elements, dtype=np.float32)
    for _ in range(chunks):
        request = actgrad.v1.activation_pb2.ActivateRequest(function="sigmoid")
        actgrad.wire.encode(x, out=request.input)
        yield request.SerializeToString()


def test_clients_that_never_read_do_not_starve_other_callers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each stream sends 30 chunks of 4 MiB and reads nothing: once its flow-control
    # window is full the server blocks sending, holding a thread. Streams run on their
    # own --max-streams threads, so other callers are served meanwhile, and the idle
    # timeout cancels the stalled ones, letting the queued streams have their turn.
    # Which four streams the server takes first is the transport's choice, not the
    # order they were opened in, and a stream whose answers fit in the windows ends
    # in full: so each stream is checked for one of the two ends, and the streams
    # cancelled are exactly those the server says it cancelled.
    config = settings(threads=8, max_streams=4, stream_idle_timeout=2.0, max_concurrent_rpcs=64)
    big = [("grpc.max_receive_message_length", 1 << 26), ("grpc.max_send_message_length", 1 << 26)]
    caplog.set_level(logging.WARNING, logger="actgrad_server.api._streams")
    with (
        running(config) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}", options=big) as hog,
    ):
        stream = hog.stream_stream(
            "/actgrad.v1.ActivationService/ActivateStream", lambda b: b, lambda b: b
        )
        stuck = [stream(_big_chunks(30, 1 << 20), timeout=60) for _ in range(12)]
        with Client(f"127.0.0.1:{server.port}", timeout=5.0, max_attempts=1) as other:
            for _ in range(3):
                assert other.activate(np.float32([0.0]), "sigmoid").tolist() == [0.5]
            time.sleep(config.stream_idle_timeout + 2.0)  # still reading nothing
            cancelled = 0
            for call in stuck:
                try:
                    assert len(list(call)) == 30
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.CANCELLED
                    cancelled += 1
            assert other.activate(np.float32([0.0]), "sigmoid").tolist() == [0.5]
    said = [r for r in caplog.records if "cancelling a stream idle" in r.getMessage()]
    # Streams stalled: 120 MiB of answers each do not fit in the flow-control windows.
    assert cancelled >= 1
    assert cancelled == len(said)
