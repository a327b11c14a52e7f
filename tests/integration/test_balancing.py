"""Calls spread over servers: the SDK's round_robin, and connections that age out."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest
from _running import make_client, settings

import actgrad
from actgrad_server.app import ActgradServer

KINDS = ["sync", "async"]


def _start(stack: ExitStack, **changes: Any) -> ActgradServer:
    server = ActgradServer(settings(**changes))
    server.start()

    def stop() -> None:
        server.stop(0)
        server.wait()

    stack.callback(stop)
    return server


@pytest.mark.parametrize("kind", KINDS)
def test_round_robin_reaches_every_server_and_a_drain_loses_no_call(kind: str) -> None:
    with ExitStack() as stack:
        servers = [_start(stack) for _ in range(3)]
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        client = make_client(kind, target, timeout=30.0, load_balancing="round_robin")
        stack.callback(client.close)
        before = [s.metrics.calls_received() for s in servers]
        x = np.linspace(-2.0, 2.0, 5)
        for _ in range(30):
            np.testing.assert_allclose(client.activate(x, "relu"), np.maximum(x, 0))
        reached = [s.metrics.calls_received() - b for s, b in zip(servers, before, strict=True)]
        assert all(count >= 5 for count in reached), reached

        # One server drains while the client keeps calling: no call is lost.
        failures: list[BaseException] = []
        answered = 0
        stop = threading.Event()

        def keep_calling() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    client.activate(x, "relu")
                    answered += 1
                except BaseException as exc:
                    failures.append(exc)

        caller = threading.Thread(target=keep_calling)
        caller.start()
        time.sleep(0.3)
        assert servers[1].stop(5.0).wait(30)
        time.sleep(0.5)
        stop.set()
        caller.join(60)
        assert not failures, failures
        assert answered > 10


def test_a_client_without_round_robin_uses_one_server() -> None:
    with ExitStack() as stack:
        servers = [_start(stack) for _ in range(2)]
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        with actgrad.Client(target, timeout=30.0) as client:
            before = [s.metrics.calls_received() for s in servers]
            for _ in range(10):
                client.activate([1.0], "relu")
            reached = [s.metrics.calls_received() - b for s, b in zip(servers, before, strict=True)]
        assert sorted(reached) == [0, 10], reached


def test_connections_past_their_age_are_replaced_and_no_call_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Behind a connection balancer (a Kubernetes Service), a new connection may land
    # on another replica; here one server shows its client's connection replaced.
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    with ExitStack() as stack:
        server = _start(
            stack, max_connection_age=0.5, max_connection_age_grace=5.0, access_log=True
        )
        with actgrad.Client(f"127.0.0.1:{server.port}", timeout=30.0) as client:
            end = time.monotonic() + 3.0
            calls = 0
            while time.monotonic() < end:
                assert client.activate([2.0], "relu").tolist() == [2.0]
                calls += 1
                time.sleep(0.02)
    peers = {
        getattr(r, "peer", "")
        for r in caplog.records
        if r.name == "actgrad_server.access" and getattr(r, "rpc", "").endswith("/Activate")
    }
    assert calls > 20
    assert len(peers) >= 2, peers  # the client's connection (its port) changed


def _activate_peers(records: list[logging.LogRecord]) -> Counter[str]:
    return Counter(
        getattr(r, "peer", "")
        for r in records
        if r.name == "actgrad_server.access" and getattr(r, "rpc", "").endswith("/Activate")
    )


@pytest.mark.parametrize("kind", KINDS)
def test_connections_spread_one_clients_calls_over_connections_of_its_own(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    x = np.array([-1.0, 2.0], dtype=np.float32)
    with ExitStack() as stack:
        server = _start(stack, access_log=True)
        target = f"127.0.0.1:{server.port}"
        spread = make_client(kind, target, connections=3)
        stack.callback(spread.close)
        for _ in range(9):
            assert spread.activate(x, "relu").tolist() == [0.0, 2.0]
        by_peer = _activate_peers(caplog.records)
        # Three connections (three client ports), each taking every third call.
        assert sorted(by_peer.values()) == [3, 3, 3], by_peer

        caplog.clear()
        one = make_client(kind, target)
        stack.callback(one.close)
        for _ in range(4):
            assert one.activate(x, "relu").tolist() == [0.0, 2.0]
        by_peer = _activate_peers(caplog.records)
        assert list(by_peer.values()) == [4], by_peer


@pytest.mark.parametrize("connections", [0, 65, True, 2.0, "2"])
def test_connections_must_be_a_small_positive_int(connections: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="connections"):
        actgrad.Client("127.0.0.1:1", connections=connections)
    with pytest.raises((TypeError, ValueError), match="connections"):
        actgrad.AsyncClient("127.0.0.1:1", connections=connections)


def test_load_balancing_must_be_a_known_policy() -> None:
    with pytest.raises(ValueError, match="load_balancing"):
        actgrad.Client("127.0.0.1:1", load_balancing="random")
