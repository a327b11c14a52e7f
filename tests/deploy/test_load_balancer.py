"""docker/nginx.conf.template for real: nginx in front of three `actgrad serve` replicas.

The template is rendered for loopback (the replicas' ports, a unix socket to listen
on) exactly as the compose file's nginx renders it for the containers, and every
call goes through the SDK. Which replica served a call is read twice: from nginx's
access log (`upstream=`) and from the replica's own access log, joined on the
request id that nginx makes and forwards.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_support import (
    LoadBalancer,
    Replica,
    nginx_check,
    render_template,
    template_variables,
    write_nginx_config,
)

from actgrad import Client

CALL_TIMEOUT = 30.0


def _served_by(entry: dict[str, str]) -> str:
    # After nginx tried several replicas, upstream= lists them all; the last answered.
    return entry["upstream"].split(", ")[-1]


def _activate_entries(balancer: LoadBalancer) -> list[dict[str, str]]:
    return [e for e in balancer.access_entries() if "/Activate" in e["request"]]


def test_template_names_exactly_the_variables_compose_sets() -> None:
    assert template_variables() == {
        "ACTGRAD_LB_LISTEN",
        "ACTGRAD_LB_UPSTREAMS",
        "ACTGRAD_LB_RESOLVER",
        "ACTGRAD_LB_ACCESS_LOG",
    }
    with pytest.raises(KeyError, match="ACTGRAD_LB_RESOLVER"):
        render_template("resolver ${ACTGRAD_LB_RESOLVER};", {})
    # nginx's own variables are left alone, as envsubst with a filter leaves them.
    rendered = render_template(
        "listen ${ACTGRAD_LB_LISTEN}; log $upstream_addr $ACTGRAD_LB_LISTEN;",
        {"ACTGRAD_LB_LISTEN": "8080"},
    )
    assert rendered == "listen 8080; log $upstream_addr 8080;"


def test_rendered_config_passes_nginx_syntax_check(nginx_prefix: Path) -> None:
    config = write_nginx_config(nginx_prefix, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    result = nginx_check(config)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_calls_spread_over_all_three_replicas(
    replicas: list[Replica], load_balancer: LoadBalancer
) -> None:
    calls = 30
    x = np.linspace(-3.0, 3.0, 1001, dtype=np.float32)
    with Client(load_balancer.target, timeout=CALL_TIMEOUT) as client:
        for _ in range(calls):
            np.testing.assert_array_equal(client.activate(x, "relu"), np.maximum(x, 0))
        assert client.health() == "SERVING"

    entries = _activate_entries(load_balancer)
    assert len(entries) == calls
    assert {e["status"] for e in entries} == {"200"}
    assert {e["grpc_status"] for e in entries} == {"0"}
    by_replica = collections.Counter(_served_by(e) for e in entries)
    assert set(by_replica) == {r.address for r in replicas}, by_replica

    # Each replica logged exactly the calls nginx says it sent there.
    for replica in replicas:
        expected = {e["request_id"] for e in entries if _served_by(e) == replica.address}
        logged = {
            entry["request_id"]
            for entry in replica.access_entries()
            if entry.get("rpc", "").endswith("Activate")
        }
        assert logged == expected, replica.address


def _unread_request_on(port: int) -> bool:
    """True once a connection to `port` holds bytes its (stopped) owner has not read."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            columns = row.split()
            local_port = int(columns[1].rsplit(":", 1)[1], 16)
            state = columns[3]
            rx_queue = int(columns[4].split(":")[1], 16)
            if local_port == port and state == "01" and rx_queue > 0:
                return True
    return False


def test_killing_a_replica_mid_run_loses_no_call(
    replicas: list[Replica], load_balancer: LoadBalancer
) -> None:
    """A replica hangs, then dies, with calls in flight on it: every call succeeds.

    The victim first serves its share of calls. Then it is frozen while idle and
    the concurrent callers start: to least_conn it looks free, so nginx hands it
    calls that it never reads; once the kernel holds one of those unread, it is
    killed. nginx answers those calls UNAVAILABLE and the SDK sends them again.
    (A replica dying halfway through writing an answer is another matter: the
    caller then already has response headers, and gRPC never retries such a call.)
    """
    workers, calls_per_worker = 6, 40
    # 64 Ki float32 = 256 KiB per request: exactly the size gRPC would no longer
    # retry without the SDK's retry buffer setting.
    x = np.linspace(-4.0, 4.0, 1 << 16, dtype=np.float32)
    expected = np.tanh(x)
    victim = replicas[1]
    with Client(load_balancer.target, timeout=CALL_TIMEOUT) as client:
        for _ in range(2 * len(replicas)):
            np.testing.assert_allclose(client.activate(x, "tanh"), expected, rtol=1e-6, atol=1e-6)
    before = _activate_entries(load_balancer)
    assert any(_served_by(e) == victim.address for e in before)

    results: list[np.ndarray] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        with Client(load_balancer.target, timeout=CALL_TIMEOUT) as client:
            for _ in range(calls_per_worker):
                try:
                    y = client.activate(x, "tanh")
                except Exception as exc:  # every failure is reported below
                    with lock:
                        failures.append(exc)
                else:
                    with lock:
                        results.append(y)

    victim.proc.send_signal(signal.SIGSTOP)
    threads = [threading.Thread(target=work, name=f"caller-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + CALL_TIMEOUT / 2
        while not _unread_request_on(victim.port):
            assert time.monotonic() < deadline, "nginx sent the frozen replica no call"
            time.sleep(0.02)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
    finally:
        for thread in threads:
            thread.join(timeout=CALL_TIMEOUT * 4)
    assert not any(t.is_alive() for t in threads)

    assert failures == []
    assert len(results) == workers * calls_per_worker
    for y in results:
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)

    entries = _activate_entries(load_balancer)[len(before) :]
    # The calls caught on the victim reached the caller as UNAVAILABLE (a gRPC
    # status made by the template's error_page) and were tried again by the SDK.
    caught = [e for e in entries if victim.address in e["upstream"] and e["grpc_status"] == "14"]
    assert caught, "no call was in flight on the killed replica"
    answered = [e for e in entries if e["grpc_status"] == "0"]
    assert len(answered) == workers * calls_per_worker
    survivors = {r.address for r in replicas if r is not victim}
    assert {_served_by(e) for e in answered} == survivors
