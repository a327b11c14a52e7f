"""The SDK retries UNAVAILABLE (and only it) with backoff within the deadline; a target
it never reached fails fast unless it waits for ready; drains and restarts lose no call.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from _running import SlowEngine, make_client, running, settings

import actgrad
from actgrad import cli
from actgrad_server.app import ActgradServer
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument, Unavailable

KINDS = ["sync", "async"]


class _FlakyEngine(Engine):
    """Fails the first `failures` calls after the warm-up with `error`."""

    def __init__(self, failures: int, error: type[Exception]) -> None:
        super().__init__(device="cpu")
        self.failures = failures
        self.error = error
        self.calls = 0
        self._lock = threading.Lock()
        self._armed = False

    def warm_up(self, dtypes: Any = ("float32",)) -> None:
        super().warm_up(dtypes)
        self._armed = True

    def activate(self, call: Any, x: Any, **kwargs: Any) -> Any:
        if self._armed:
            with self._lock:
                self.calls += 1
                failing = self.calls <= self.failures
            if failing:
                raise self.error("injected failure")
        return super().activate(call, x, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_unavailable_is_retried_until_it_succeeds(kind: str) -> None:
    engine = _FlakyEngine(2, Unavailable)
    with running(settings(), engine=engine) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            assert client.activate(np.array([-1.0, 1.0]), "relu").tolist() == [0.0, 1.0]
        finally:
            client.close()
    assert engine.calls == 3


@pytest.mark.parametrize("kind", KINDS)
def test_retries_give_up_after_max_attempts(kind: str) -> None:
    engine = _FlakyEngine(100, Unavailable)
    with running(settings(), engine=engine) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}", max_attempts=3)
        try:
            with pytest.raises(actgrad.UnavailableError) as info:
                client.activate([1.0], "relu")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        finally:
            client.close()
    assert engine.calls == 3


@pytest.mark.parametrize("kind", KINDS)
def test_max_attempts_one_turns_retries_off(kind: str) -> None:
    engine = _FlakyEngine(1, Unavailable)
    with running(settings(), engine=engine) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}", max_attempts=1)
        try:
            with pytest.raises(actgrad.UnavailableError):
                client.activate([1.0], "relu")
        finally:
            client.close()
    assert engine.calls == 1


@pytest.mark.parametrize("kind", KINDS)
def test_other_codes_are_not_retried(kind: str) -> None:
    engine = _FlakyEngine(1, InvalidArgument)
    with running(settings(), engine=engine) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(actgrad.InvalidArgumentError):
                client.activate([1.0], "relu")
            assert client.activate([2.0], "relu").tolist() == [2.0]
        finally:
            client.close()
    assert engine.calls == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_waits_for_a_server_that_restarts_within_its_deadline(kind: str) -> None:
    # Down for about 2.5 s, longer than gRPC's retry policy used to cover (1.6 s):
    # the call waits for the new server on the same port and is answered.
    first = ActgradServer(settings())
    first.start()
    port = first.port
    client = make_client(kind, f"127.0.0.1:{port}", timeout=30.0)
    restarted: list[ActgradServer] = []
    # Set just before the new server starts: nothing listened on the port before.
    starting = threading.Event()

    def restart() -> None:
        time.sleep(2.5)
        second = ActgradServer(settings(port=port))
        starting.set()
        second.start()
        restarted.append(second)

    try:
        assert client.activate([-1.0, 1.0], "relu").tolist() == [0.0, 1.0]
        first.stop(0)
        first.wait()
        thread = threading.Thread(target=restart)
        thread.start()
        assert client.activate([-2.0, 2.0], "relu").tolist() == [0.0, 2.0]
        assert starting.is_set()  # answered by the new server: the call waited for it
        thread.join(60)
    finally:
        client.close()
        for server in restarted:
            server.stop(0)
            server.wait()


def test_a_client_with_retries_off_fails_at_once_without_a_server() -> None:
    first = ActgradServer(settings())
    first.start()
    port = first.port
    first.stop(0)
    first.wait()
    # UNAVAILABLE, not the DEADLINE_EXCEEDED of a call that waited 30 s.
    with (
        actgrad.Client(f"127.0.0.1:{port}", timeout=30.0, max_attempts=1) as client,
        pytest.raises(actgrad.UnavailableError),
    ):
        client.activate([1.0], "relu")


def _port_with_nothing_listening() -> int:
    """The port of a server that was started and stopped (a server gone, a wrong port)."""
    server = ActgradServer(settings())
    server.start()
    port = server.port
    server.stop(0)
    server.wait()
    return port


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_listening_fails_fast_with_unavailable_naming_target_and_cause(kind: str) -> None:
    # It used to wait the whole deadline (wait-for-ready) and say DEADLINE_EXCEEDED.
    target = f"127.0.0.1:{_port_with_nothing_listening()}"
    client = make_client(kind, target, timeout=30.0)
    try:
        with pytest.raises(actgrad.UnavailableError) as info:
            client.activate([1.0], "relu")
    finally:
        client.close()
    # UNAVAILABLE after FIRST_CONTACT_SECONDS of tries, not the DEADLINE_EXCEEDED of a
    # call that waited its 30 s.
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"cannot reach {target}" in info.value.details
    assert "refused" in info.value.details.lower(), info.value.details


def test_the_cli_says_unavailable_when_nothing_listens() -> None:
    target = f"127.0.0.1:{_port_with_nothing_listening()}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(["call", "relu", "1", "--target", target])
    assert status == 1
    assert err.getvalue().startswith(f"error: UNAVAILABLE: cannot reach {target}")
    assert "refused" in err.getvalue().lower()


@pytest.mark.parametrize("kind", KINDS)
def test_wait_for_ready_waits_for_a_server_never_reached(kind: str) -> None:
    port = _port_with_nothing_listening()
    client = make_client(kind, f"127.0.0.1:{port}", timeout=30.0, wait_for_ready=True)
    started_servers: list[ActgradServer] = []
    # Set just before the server starts: nothing listened on the port before.
    starting = threading.Event()

    def start_later() -> None:
        time.sleep(2.5)
        server = ActgradServer(settings(port=port))
        starting.set()
        server.start()
        started_servers.append(server)

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        assert client.activate([-1.0, 1.0], "relu").tolist() == [0.0, 1.0]
        assert starting.is_set()  # it waited for the server
    finally:
        thread.join(60)
        client.close()
        for server in started_servers:
            server.stop(0)
            server.wait()


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_call_during_a_drain_and_restart_is_answered_by_the_new_server(
    kind: str, streamed: bool
) -> None:
    # One held call keeps the old server draining (refusing new calls with
    # UNAVAILABLE) for 1.5 s; the new server listens 1 s after the old one stopped.
    # A default client's 5 attempts used to be spent in well under a second, and a
    # stream was never tried again.
    engine = SlowEngine()
    old = ActgradServer(settings(grace=60.0), engine=engine)
    old.start()
    port = old.port
    target = f"127.0.0.1:{port}"
    # Streamed: 64 float64 elements over a 256-byte threshold go as 4 chunks.
    chunking = {"stream_threshold_bytes": 256, "chunk_bytes": 128} if streamed else {}
    x = np.linspace(-2.0, 2.0, 64 if streamed else 2)
    client = make_client(kind, target, timeout=30.0, **chunking)
    holder = make_client(kind, target, timeout=60.0)
    new: list[ActgradServer] = []
    # Set just before the new server starts, once the old one has stopped.
    restarting = threading.Event()

    def release_then_restart() -> None:
        time.sleep(1.5)
        engine.release.set()
        assert stopped.wait(30)
        old.wait()
        time.sleep(1.0)
        server = ActgradServer(settings(port=port))
        restarting.set()
        server.start()
        new.append(server)

    try:
        # This client has reached the server (and, streamed, learnt how to chunk).
        np.testing.assert_array_equal(client.gradient(x, "relu"), (x > 0).astype(x.dtype))
        with futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(holder.activate, [2.0], "relu")
            engine.wait_entered(1)
            stopped = old.stop()
            restarter = threading.Thread(target=release_then_restart)
            restarter.start()
            time.sleep(0.05)
            np.testing.assert_array_equal(client.activate(x, "relu"), np.maximum(x, 0.0))
            # Answered by the new server: the old one only refused from before the call.
            answered_by_new = restarting.is_set()
            assert held.result(30).tolist() == [2.0]
            restarter.join(60)
        assert new, "the new server did not start"
        assert answered_by_new
    finally:
        engine.release.set()
        client.close()
        holder.close()
        old.stop(0)
        old.wait()
        for server in new:
            server.stop(0)
            server.wait()
