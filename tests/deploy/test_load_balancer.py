"""docker/nginx.conf.template for real: nginx in front of three `actgrad serve` replicas.

The template is rendered for loopback (the replicas' gRPC and HTTP ports, a unix
socket for each to listen on) exactly as the compose file's nginx renders it for the
containers. gRPC calls go through the SDK, HTTP requests through httpx. Which
replica served a call is read twice: from nginx's access log (`upstream=`) and from
the replica's own access log, joined on the request id that nginx makes (or takes
from the caller) and forwards.
"""

from __future__ import annotations

import collections
import inspect
import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import running_nginx
from deploy_support import (
    MAX_MESSAGE_BYTES,
    NGINX_TEMPLATE,
    REPO,
    LoadBalancer,
    Replica,
    nginx_check,
    render_template,
    template_variables,
    write_nginx_config,
)

from actgrad import Client

CALL_TIMEOUT = 30.0
# How long a log line may trail the answer it records (see `_logged`).
LOG_WAIT = 10.0
SOFTMAX_REQUEST = {"x": [2, 1, 0.1]}
SOFTMAX_ANSWER = [0.659, 0.242, 0.099]
NO_REPLICA = {"error": "no actgrad replica available"}


def _served_by(entry: dict[str, str]) -> str:
    # After nginx tried several replicas, upstream= lists them all; the last answered.
    return entry["upstream"].split(", ")[-1]


def _activate_entries(balancer: LoadBalancer) -> list[dict[str, str]]:
    return [e for e in balancer.access_entries() if "/Activate" in e["request"]]


T = TypeVar("T")


def _logged(read: Callable[[], list[T]], count: int) -> list[T]:
    """What `read` returns once it holds `count` entries (at most LOG_WAIT seconds).

    nginx and the replicas write a call's log line after its last byte is sent, so
    the caller may hold the answer a moment before the line is there: a count read at
    once may miss the last call (a run once counted 241 calls against 240 because
    the warm-up's last line landed after `before` was read). The assertions that
    follow compare exactly.
    """
    deadline = time.monotonic() + LOG_WAIT
    entries = read()
    while len(entries) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        entries = read()
    return entries


def test_template_names_exactly_the_variables_compose_sets() -> None:
    assert template_variables() == {
        "ACTGRAD_LB_LISTEN",
        "ACTGRAD_LB_UPSTREAMS",
        "ACTGRAD_LB_HTTP_LISTEN",
        "ACTGRAD_LB_HTTP_UPSTREAMS",
        "ACTGRAD_LB_MAX_BODY_BYTES",
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
    config = write_nginx_config(
        nginx_prefix, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], ["127.0.0.1:4"]
    )
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

    entries = _logged(lambda: _activate_entries(load_balancer), calls)
    assert len(entries) == calls
    assert {e["status"] for e in entries} == {"200"}
    assert {e["grpc_status"] for e in entries} == {"0"}
    by_replica = collections.Counter(_served_by(e) for e in entries)
    assert set(by_replica) == {r.address for r in replicas}, by_replica

    # Each replica logged exactly the calls nginx says it sent there.
    for replica in replicas:
        expected = {e["request_id"] for e in entries if _served_by(e) == replica.address}
        lines = _logged(
            lambda r=replica: [
                e for e in r.access_entries() if e.get("rpc", "").endswith("Activate")
            ],
            len(expected),
        )
        logged = {entry["request_id"] for entry in lines}
        assert logged == expected, replica.address


def _connections_to(port: int) -> list[int]:
    """The established connections to local `port`: the bytes each holds unread."""
    unread = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            columns = row.split()
            local_port = int(columns[1].rsplit(":", 1)[1], 16)
            state = columns[3]
            if local_port == port and state == "01":
                unread.append(int(columns[4].split(":")[1], 16))
    return unread


def _unread_request_on(port: int) -> bool:
    """True once a connection to `port` holds bytes its (stopped) owner has not read."""
    return any(_connections_to(port))


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
    earlier = len(_activate_entries(load_balancer))
    with Client(load_balancer.target, timeout=CALL_TIMEOUT) as client:
        for _ in range(2 * len(replicas)):
            np.testing.assert_allclose(client.activate(x, "tanh"), expected, rtol=1e-6, atol=1e-6)
    before = _logged(lambda: _activate_entries(load_balancer), earlier + 2 * len(replicas))
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

    def answered_since() -> list[dict[str, str]]:
        later = _activate_entries(load_balancer)[len(before) :]
        return [e for e in later if e["grpc_status"] == "0"]

    answered = _logged(answered_since, workers * calls_per_worker)
    entries = _activate_entries(load_balancer)[len(before) :]
    # The calls caught on the victim reached the caller as UNAVAILABLE (a gRPC
    # status made by the template's error_page) and were tried again by the SDK.
    caught = [e for e in entries if victim.address in e["upstream"] and e["grpc_status"] == "14"]
    assert caught, "no call was in flight on the killed replica"
    assert len(answered) == workers * calls_per_worker
    survivors = {r.address for r in replicas if r is not victim}
    assert {_served_by(e) for e in answered} == survivors


# -- HTTP/1.1 ---------------------------------------------------------------------------


def _http(balancer: LoadBalancer) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(balancer.http_socket))
    return httpx.Client(transport=transport, base_url="http://actgrad-lb", timeout=CALL_TIMEOUT)


def _http_entries(balancer: LoadBalancer, path: str) -> list[dict[str, str]]:
    return [e for e in balancer.access_entries() if e["request"].split(" ")[1:2] == [path]]


def _http_served_by(entry: dict[str, str]) -> str:
    return entry["upstream"].split(", ")[-1]


def test_http_upstream_connections_close_before_the_replicas_close_them() -> None:
    """nginx drops an idle connection to a replica before the replica does: a request
    sent down a connection the replica is closing fails, and a POST is not resent."""
    upstream = re.search(
        r"upstream actgrad_http_replicas \{(.*?)\n\}", NGINX_TEMPLATE.read_text(), re.S
    )
    assert upstream
    nginx_idle = re.search(r"keepalive_timeout (\d+)s;", upstream[1])
    assert nginx_idle
    # The replicas run uvicorn with its default keep-alive timeout (5 s).
    server = (REPO / "server" / "actgrad_server" / "http" / "server.py").read_text()
    assert "timeout_keep_alive" not in server
    replica_idle = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert 0 < int(nginx_idle[1]) < replica_idle


def _assert_softmax(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dtype"] == "float64"
    np.testing.assert_allclose(body["output"], SOFTMAX_ANSWER, atol=1e-3)


def test_http_is_balanced_over_all_three_replicas_with_request_ids(
    replicas: list[Replica], load_balancer: LoadBalancer
) -> None:
    calls = 30
    with _http(load_balancer) as http:
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        # The caller's id goes to the replica and comes back; without one, nginx makes one.
        given = http.post("/v1/softmax", json=SOFTMAX_REQUEST, headers={"X-Request-Id": "lb-42"})
        _assert_softmax(given)
        assert given.headers["x-request-id"] == "lb-42"
        made = set()
        for _ in range(calls):
            response = http.post("/v1/softmax", json=SOFTMAX_REQUEST)
            _assert_softmax(response)
            made.add(response.headers["x-request-id"])
        assert len(made) == calls and "" not in made

    entries = _logged(lambda: _http_entries(load_balancer, "/v1/softmax"), calls + 1)
    assert len(entries) == calls + 1
    assert {e["status"] for e in entries} == {"200"}
    assert {e["request_id"] for e in entries} == made | {"lb-42"}
    by_replica = collections.Counter(_http_served_by(e) for e in entries)
    assert set(by_replica) == {r.http_address for r in replicas}, by_replica
    # nginx keeps its connections to the replicas open for the next request (one
    # nginx worker, requests one at a time: one connection each).
    open_connections = [len(_connections_to(r.http_port)) for r in replicas]
    assert open_connections == [1, 1, 1], open_connections

    for replica in replicas:
        expected = {e["request_id"] for e in entries if _http_served_by(e) == replica.http_address}
        lines = _logged(
            lambda r=replica: [
                e
                for e in r.access_entries()
                if e.get("protocol") == "http" and e.get("rpc", "").endswith("/softmax")
            ],
            len(expected),
        )
        logged = {entry["request_id"] for entry in lines}
        assert logged == expected, replica.http_address


def test_http_body_over_the_replicas_limit_is_refused_with_their_error(
    replicas: list[Replica], load_balancer: LoadBalancer
) -> None:
    """nginx's limit is the replicas' own (--max-message-bytes), no smaller: a body at
    the limit reaches a replica, one byte more is refused at once, in JSON."""
    padding = MAX_MESSAGE_BYTES - len(json.dumps(SOFTMAX_REQUEST))
    at_limit = json.dumps(SOFTMAX_REQUEST) + " " * padding
    assert len(at_limit) == MAX_MESSAGE_BYTES
    headers = {"Content-Type": "application/json", "X-Request-Id": "too-big"}
    with _http(load_balancer) as http:
        _assert_softmax(http.post("/v1/softmax", content=at_limit, headers=headers))
        refused = http.post("/v1/softmax", content=at_limit + " ", headers=headers)
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["x-request-id"] == "too-big"
        assert refused.json() == {
            "error": f"body: over the server's limit of {MAX_MESSAGE_BYTES} bytes "
            "(--max-message-bytes)"
        }
    # The same answer as a replica's own.
    direct = httpx.post(
        f"http://{replicas[0].http_address}/v1/softmax",
        content=at_limit + " ",
        headers=headers,
        timeout=CALL_TIMEOUT,
        trust_env=False,
    )
    assert (direct.status_code, direct.json()) == (413, refused.json())
    with _http(load_balancer) as http:
        # No replica was involved, nor taken out of rotation.
        for _ in range(3 * len(replicas)):
            _assert_softmax(http.post("/v1/softmax", json=SOFTMAX_REQUEST))
    logged = _logged(lambda: _http_entries(load_balancer, "/v1/softmax"), 2 + 3 * len(replicas))
    entry = logged[1]
    assert entry["status"] == "413" and entry["upstream"] == "-", entry
    served = {_http_served_by(e) for e in logged[2:]}
    assert served == {r.http_address for r in replicas}


def test_http_without_a_replica_is_a_json_503_with_retry_after(nginx_prefix: Path) -> None:
    # Nothing listens on port 1: every replica refuses the connection.
    config = write_nginx_config(nginx_prefix, ["127.0.0.1:1"], ["127.0.0.1:1", "127.0.0.1:2"])
    with running_nginx(nginx_prefix, config) as balancer, _http(balancer) as http:
        for method, path, body in (
            ("GET", "/v2/health/ready", None),
            ("POST", "/v1/softmax", SOFTMAX_REQUEST),
            ("POST", "/v2/models/relu/infer", {"inputs": []}),
        ):
            response = http.request(method, path, json=body, headers={"X-Request-Id": "none-up"})
            assert response.status_code == 503, (path, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.headers["retry-after"] == "1"
            assert response.headers["x-request-id"] == "none-up"
            assert response.json() == NO_REPLICA


def _stuck_on(
    victim: Replica,
    balancer: LoadBalancer,
    send: Callable[[httpx.Client], httpx.Response],
) -> list[httpx.Response]:
    """Freezes `victim`, sends requests one after another until one sits unread on
    it, kills it, and returns every answer (the last one: the caught request's)."""
    answers: list[httpx.Response] = []
    failures: list[BaseException] = []
    caught = threading.Event()

    def caller() -> None:
        try:
            with _http(balancer) as http:
                while not caught.is_set():
                    answers.append(send(http))
        except BaseException as exc:  # reported below
            failures.append(exc)

    victim.proc.send_signal(signal.SIGSTOP)
    thread = threading.Thread(target=caller, name="http-caller")
    thread.start()
    try:
        deadline = time.monotonic() + CALL_TIMEOUT / 2
        while not _unread_request_on(victim.http_port):
            assert time.monotonic() < deadline, "nginx sent the frozen replica no request"
            time.sleep(0.02)
        caught.set()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
    finally:
        caught.set()
        thread.join(timeout=CALL_TIMEOUT * 2)
    assert not thread.is_alive() and failures == []
    return answers


def test_http_request_caught_on_a_dying_replica_get_is_retried_post_is_not(
    replicas: list[Replica], load_balancer: LoadBalancer
) -> None:
    """A replica freezes, then dies, with a request sent to it. nginx sends a GET
    again, to another replica; a POST it never sends twice (HTTP does not call POST
    idempotent): its caller gets the JSON 503 with Retry-After and may resend it."""
    get_victim, post_victim = replicas[0], replicas[1]

    gets = _stuck_on(get_victim, load_balancer, lambda http: http.get("/v2/health/ready"))
    assert {r.status_code for r in gets} == {200}, [r.text for r in gets]
    retried = [e for e in _http_entries(load_balancer, "/v2/health/ready") if "," in e["upstream"]]
    assert len(retried) == 1, retried
    assert retried[0]["upstream"].split(", ")[0] == get_victim.http_address
    assert retried[0]["status"] == "200"

    posts = _stuck_on(
        post_victim, load_balancer, lambda http: http.post("/v1/softmax", json=SOFTMAX_REQUEST)
    )
    *answered, lost = posts
    for response in answered:
        _assert_softmax(response)
    assert lost.status_code == 503 and lost.json() == NO_REPLICA
    assert lost.headers["retry-after"] == "1"
    entry = next(
        e
        for e in _http_entries(load_balancer, "/v1/softmax")
        if e["request_id"] == lost.headers["x-request-id"]
    )
    # Tried once, on the victim only.
    assert entry["upstream"] == post_victim.http_address and entry["status"] == "503", entry

    # The one replica left answers everything, connection refusals included: a
    # request that never reached a dead replica is sent on, POST or not.
    with _http(load_balancer) as http:
        for _ in range(6):
            _assert_softmax(http.post("/v1/softmax", json=SOFTMAX_REQUEST))
            assert http.get("/v2/health/ready").status_code == 200
