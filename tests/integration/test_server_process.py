"""`actgrad serve` as a real process: start-up, a call, INTERNAL on bugs, SIGTERM exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import numpy as np
import pytest

import actgrad
from actgrad import Client
from actgrad_server.app import ActgradServer
from actgrad_server.config import Settings
from actgrad_server.engine import Engine
from actgrad_server.statuses import INTERNAL_MESSAGE


def _wait_for_port(proc: subprocess.Popen[str], deadline: float) -> int:
    assert proc.stderr is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving actgrad\.v1 on [^ ]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("server did not start:\n" + "".join(lines))


def test_serve_command_answers_and_exits_zero_on_sigterm() -> None:
    env = dict(os.environ, ACTGRAD_DEVICE="cpu", ACTGRAD_GRACE="2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actgrad",
            "serve",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = _wait_for_port(proc, time.monotonic() + 60)
        with Client(f"127.0.0.1:{port}", timeout=10) as c:
            np.testing.assert_allclose(c.activate([0.0], "sigmoid"), [0.5])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_cuda_device_without_cuda_fails_at_start() -> None:
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actgrad",
            "serve",
            "--port",
            "0",
            "--device",
            "cuda",
            "--http-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "CUDAExecutionProvider" in proc.stderr


class _BrokenEngine(Engine):
    def warm_up(self, dtypes: Any = ("float32",)) -> None:
        pass

    def activate(self, call: Any, x: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")


def test_unexpected_errors_are_internal_with_a_generic_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(host="127.0.0.1", port=0, http_port=0, device="cpu")
    server = ActgradServer(settings, engine=_BrokenEngine(device="cpu"))
    server.start()
    try:
        with Client(f"127.0.0.1:{server.port}", timeout=10) as c:
            with pytest.raises(actgrad.InternalError) as info:
                c.activate([1.0], "relu")
            assert info.value.code == grpc.StatusCode.INTERNAL
            assert info.value.details == INTERNAL_MESSAGE
            assert "secret" not in info.value.details
            # The server keeps serving other RPCs.
            assert c.gradient([1.0], "relu")[0] == 1.0
    finally:
        server.stop(0).wait(10)
    assert "secret internal detail" in caplog.text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_clear_line_and_exit_1(workers: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "actgrad", "serve", "--host", "127.0.0.1"]
        command += ["--http-port", "0"]
        proc = subprocess.run(
            [*command, "--port", str(port), "--workers", workers, "--device", "cpu"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr


_HANGING_SERVER = """
import sys, threading
from actgrad_server import app
from actgrad_server.app import ActgradServer, install_drain_signals
from actgrad_server.config import Settings
from actgrad_server.engine import Engine
from actgrad_server.logs import configure_logging

class Stuck(Engine):
    def warm_up(self, dtypes=("float32",)):
        pass

    def activate(self, call, x, **kwargs):
        threading.Event().wait()  # a handler that never returns

app.DRAIN_MARGIN_SECONDS = 1.0
configure_logging("INFO", "plain")
server = ActgradServer(
    Settings(host="127.0.0.1", port=0, http_port=0, device="cpu", grace=0.5, threads=2),
    engine=Stuck(device="cpu"),
)
install_drain_signals(server)
server.start()
print(server.port, flush=True)
server.wait()
print("drained", flush=True)
"""


def test_a_drain_that_cannot_end_exits_1_after_the_grace() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANGING_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with (
            Client(f"127.0.0.1:{port}", timeout=1.0, max_attempts=1) as c,
            pytest.raises(actgrad.DeadlineExceededError),
        ):
            c.activate([1.0], "relu")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
        # grace 0.5 s + margin 1 s, and not much more
        assert time.monotonic() - started < 30
        _, stderr = proc.communicate(timeout=10)
        assert "did not end within the grace" in stderr
        # gRPC gave the call up at its deadline; the thread running it is what is left,
        # and the log says where it is.
        assert "1 handler thread(s) still busy; actgrad-rpc" in stderr
        assert "in wait (" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_unix_domain_socket_besides_tcp(kind: str, tmp_path: Any) -> None:
    from _running import make_client, running, settings

    path = str(tmp_path / "actgrad.sock")
    with running(settings(uds=path)) as server:
        assert server.uds == path
        for target in (f"unix:{path}", f"127.0.0.1:{server.port}"):
            client = make_client(kind, target, timeout=10.0)
            try:
                np.testing.assert_array_equal(
                    client.activate(np.float32([-1.0, 2.0]), "relu"), [0.0, 2.0]
                )
            finally:
                client.close()


def test_uds_with_several_workers_is_refused() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actgrad",
            "serve",
            "--uds",
            "/tmp/x.sock",
            "--workers",
            "2",
            "--http-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--uds needs --workers 1" in proc.stderr
