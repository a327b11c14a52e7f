"""The SDK retries UNAVAILABLE (and only it) with backoff, per its service config."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import numpy as np
import pytest
from _running import make_client, running, settings

import actgrad
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

    def activate(self, call: Any, x: Any) -> Any:
        if self._armed:
            with self._lock:
                self.calls += 1
                failing = self.calls <= self.failures
            if failing:
                raise self.error("injected failure")
        return super().activate(call, x)


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
