"""The SDK retries UNAVAILABLE (and only it) with backoff, per its service config."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
from _running import make_client, running, settings

import actgrad
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

    def restart() -> None:
        time.sleep(2.5)
        second = ActgradServer(settings(port=port))
        second.start()
        restarted.append(second)

    try:
        assert client.activate([-1.0, 1.0], "relu").tolist() == [0.0, 1.0]
        first.stop(0)
        first.wait()
        thread = threading.Thread(target=restart)
        thread.start()
        started = time.monotonic()
        assert client.activate([-2.0, 2.0], "relu").tolist() == [0.0, 2.0]
        assert time.monotonic() - started >= 2.0  # it did wait for the new server
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
    started = time.monotonic()
    with (
        actgrad.Client(f"127.0.0.1:{port}", timeout=30.0, max_attempts=1) as client,
        pytest.raises(actgrad.UnavailableError),
    ):
        client.activate([1.0], "relu")
    assert time.monotonic() - started < 10
