"""The HTTP front end as a server: tokens, the drain, workers, and the docs' curl examples.

Real servers on port 0 for gRPC and HTTP; curl is Debian's /usr/bin/curl (the tests
that need it skip loudly without it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from _running import SlowEngine, running, sample, scrape, settings

from actgrad_server.app import ActgradServer
from actgrad_server.http.runner import INLINE_BYTES

REPO = Path(__file__).resolve().parents[2]
CURL = shutil.which("curl")
_INFER_X = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [-1, 0, 3]}]}


def _url(server: ActgradServer, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


def test_tokens_guard_everything_but_health(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("s3cret\n")
    with (
        running(settings(auth_token_file=str(token_file))) as server,
        httpx.Client(timeout=30.0) as http,
    ):
        assert http.get(_url(server, "/v2/health/live")).status_code == 200
        assert http.get(_url(server, "/v2/health/ready")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "s3cret"}):
            answer = http.get(_url(server, "/v2"), headers=headers)
            assert answer.status_code == 401, headers
            assert "bearer token" in answer.json()["error"]
            assert answer.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert http.get(_url(server, "/v2"), headers=good).status_code == 200
        answer = http.post(_url(server, "/v2/models/relu/infer"), json=_INFER_X, headers=good)
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"] == [0.0, 0.0, 3.0]


def test_drain_refuses_new_requests_and_finishes_those_in_flight() -> None:
    engine = SlowEngine()
    server = ActgradServer(settings(grace=60.0), engine=engine)
    server.start()
    try:
        with httpx.Client(timeout=60.0) as http, futures.ThreadPoolExecutor(1) as pool:
            # A small request is computed on the event loop itself (http.runner): the
            # one held in flight here is over the inline limit, so it waits on the
            # routes' pool while the loop answers the others.
            padded = orjson.dumps(_INFER_X) + b" " * INLINE_BYTES
            url = _url(server, "/v2/models/relu/infer")
            held = pool.submit(http.post, url, content=padded)
            engine.wait_entered(1)
            done = server.stop()
            with httpx.Client(timeout=30.0) as late:
                assert late.get(_url(server, "/v2/health/live")).status_code == 200
                ready = late.get(_url(server, "/v2/health/ready"))
                assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
                refused = late.post(_url(server, "/v2/models/relu/infer"), json=_INFER_X)
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
                assert "draining" in refused.json()["error"]
            assert not done.is_set()
            engine.release.set()
            answer = held.result(30)
            assert answer.status_code == 200
            assert answer.json()["outputs"][0]["data"] == [0.0, 0.0, 3.0]
            assert done.wait(30)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.http_port), 2):
            pass
    finally:
        engine.release.set()
        server.stop(0)
        server.wait()


def test_requests_are_in_the_metrics_by_route() -> None:
    with running(settings(metrics_port=0)) as server, httpx.Client(timeout=30.0) as http:
        for _ in range(2):
            assert http.post(_url(server, "/v2/models/silu/infer"), json=_INFER_X).is_success
        assert http.get(_url(server, "/v2/models/nope")).status_code == 404
        assert http.get(_url(server, "/no/such/route")).status_code == 404
        assert server.metrics_port is not None
        text = scrape(server.metrics_port)
    infer = "HTTP POST /v2/models/{model_name}/infer"
    ok = {"protocol": "http", "rpc": infer, "function": "swish", "code": "200"}  # silu: swish
    assert sample(text, "actgrad_requests_total", **ok) == 2
    missing = {"rpc": "HTTP GET /v2/models/{model_name}", "function": "unknown", "code": "404"}
    assert sample(text, "actgrad_requests_total", **missing) == 1
    assert sample(text, "actgrad_request_duration_seconds_count", rpc=infer) == 2
    # Counted when received, like gRPC's calls (the idle trim reads the sum), and
    # no longer open once answered (the drain waits for the in-flight gauge).
    assert sample(text, "actgrad_requests_received_total", protocol="http", rpc=infer) == 2
    unmatched = {"protocol": "http", "rpc": "HTTP GET unmatched", "code": "404"}
    assert sample(text, "actgrad_requests_total", **unmatched) == 1
    assert sample(text, "actgrad_requests_in_flight") == 0


def test_a_stalled_body_neither_blocks_others_nor_outlives_the_grace() -> None:
    server = ActgradServer(settings(grace=1.0))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), 10) as stalled:
            stalled.sendall(
                b"POST /v2/models/relu/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ['
            )
            with httpx.Client(timeout=10.0) as http:
                answer = http.post(_url(server, "/v2/models/relu/infer"), json=_INFER_X)
                assert answer.status_code == 200
            # The drain does not wait for the stalled body past the grace: it ends,
            # and the stalled connection is closed (or answered), not left open.
            assert server.stop().wait(10)
            stalled.settimeout(10)
            try:
                rest = stalled.recv(65536)
            except ConnectionResetError:
                rest = b""
            assert rest == b"" or rest.startswith(b"HTTP/1.1 ")
    finally:
        server.stop(0)
        server.wait()


def test_http_can_be_turned_off() -> None:
    with running(settings(http_port=-1)) as server:
        assert server.http is None and server.http_port is None


def test_a_taken_http_port_fails_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind HTTP 127.0.0.1:{port}") as info:
            ActgradServer(settings(http_port=port))
        assert "--http-port" in str(info.value)
        command = [sys.executable, "-m", "actgrad", "serve", "--host=127.0.0.1", "--port=0"]
        for workers in ("1", "2"):
            done = subprocess.run(
                [*command, f"--http-port={port}", f"--workers={workers}", "--device=cpu"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 1, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert f"cannot bind HTTP 127.0.0.1:{port}" in last and "--http-port" in last


def test_workers_share_the_http_port() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTGRAD_")}
    command = [sys.executable, "-m", "actgrad", "serve", "--host=127.0.0.1", "--port=0"]
    command += ["--http-port=0", "--workers=2", "--device=cpu", "--grace=5"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "serving actgrad.v1 on" in line:
                serving.set()
        serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert serving.wait(120), "".join(lines)
        found = re.search(r"HTTP on port (\d+)", "".join(lines))
        assert found, "".join(lines)
        port = int(found.group(1))
        for _ in range(16):  # a new connection each: the kernel spreads them
            with httpx.Client(timeout=30.0) as http:
                answer = http.post(f"http://127.0.0.1:{port}/v2/models/relu/infer", json=_INFER_X)
                assert answer.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
    # Each worker bound the port worker 0 got.
    assert sum("HTTP on http://127.0.0.1:" in line for line in lines) == 2, "".join(lines)


# -- curl, running the docs' own examples ------------------------------------------------


def _curl_examples() -> list[tuple[str, str]]:
    examples = []
    for page in ("README.md", "docs/oip.md"):
        for line in (REPO / page).read_text().splitlines():
            if line.startswith("curl ") and "localhost:8000/v2" in line:
                examples.append((page, line))
    return examples


EXAMPLES = _curl_examples()


@pytest.fixture(scope="module")
def curl() -> str:
    if CURL is None:
        pytest.skip("SKIPPED LOUDLY: curl not found (apt-get install curl); docs' examples unrun")
    return CURL


def test_the_docs_have_curl_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(EXAMPLES)])
def test_docs_curl_example(curl: str, server: ActgradServer, example: tuple[str, str]) -> None:
    _, line = example
    command = line.replace("localhost:8000", f"127.0.0.1:{server.http_port}")
    command = command.replace("curl ", f"{curl} -sS --fail-with-body ", 1)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    answer: Any = json.loads(done.stdout)
    assert "error" not in answer
    if "softmax/infer" in line:
        y = answer["outputs"][0]["data"]
        np.testing.assert_allclose(y, [0.659, 0.242, 0.099], atol=5e-4)


def test_curl_sees_an_error_as_json(curl: str, server: ActgradServer) -> None:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/gelu/infer"
    done = subprocess.run(
        [curl, "-sS", "-w", "\n%{http_code}", "-d", '{"inputs": [{"name": "x"}]}', url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    body, _, code = done.stdout.rpartition("\n")
    assert code == "400" and "inputs[0].datatype" in json.loads(body)["error"]
    assert httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/ready").status_code == 200


def test_the_seeds_example_over_a_real_server(curl: str, server: ActgradServer) -> None:
    # actgrad's own JSON calls (http/actgrad_routes.py) are mounted beside the OIP's.
    url = f"http://127.0.0.1:{server.http_port}/v1/softmax"
    done = subprocess.run(
        [curl, "-sS", "--fail-with-body", "-d", '{"x": [2, 1, 0.1]}', url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(json.loads(done.stdout)["output"], [0.659, 0.242, 0.099], atol=5e-4)
