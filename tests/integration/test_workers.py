"""`actgrad serve --workers N`: worker processes on one port under a supervisor.

Every test runs the real command on 127.0.0.1 port 0 with JSON logs: worker log
lines carry the worker's `pid`, so the access log tells which process answered
each call. A gRPC channel is one connection, and SO_REUSEPORT hands each
connection to one worker; the clients here each get a connection of their own
(`grpc.use_local_subchannel_pool`), and a first health call on each one, matched
with its access log line, tells which worker it landed on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime
import pytest
from _running import sample, scrape

import actgrad
from actgrad import Client
from actgrad_server import workers as workers_module

START_TIMEOUT = 120.0
WAIT = 60.0  # bound of every wait on the server's logs or exit
ACTIVATE = "actgrad.v1.ActivationService/Activate"
GRADIENT = "actgrad.v1.ActivationService/Gradient"
GRADIENT_STREAM = "actgrad.v1.ActivationService/GradientStream"
HEALTH_CHECK = "grpc.health.v1.Health/Check"
SERVING_LINE = "serving actgrad.v1 on "
_SERVING = re.compile(r"serving actgrad\.v1 on [^ ]+:(\d+)")  # as tools parse it
# A client with a connection of its own (gRPC shares subchannels between channels
# to the same target by default), with retries off so that the first answer shows.
OWN_CONNECTION: dict[str, Any] = {
    "options": [("grpc.use_local_subchannel_pool", 1)],
    "max_attempts": 1,
    "timeout": 60.0,
}


class Serve:
    """`actgrad serve` as a child process; its JSON log lines are collected."""

    def __init__(self, *flags: str, new_session: bool = False) -> None:
        # ACTGRAD_* variables of the caller would change the server's settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTGRAD_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actgrad",
                "serve",
                "--host=127.0.0.1",
                "--port=0",
                "--http-port=0",
                "--device=cpu",
                "--log-format=json",
                "--access-log",
                *flags,
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=new_session,  # a process group of its own
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="serve-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def entries(self) -> list[dict[str, Any]]:
        with self._changed:
            lines = list(self.lines)
        parsed = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                parsed.append(entry)
        return parsed

    def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"waited in vain for {what}:\n{''.join(self.lines)}")
                self._changed.wait(min(remaining, 1.0))

    def messages(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if str(e.get("message", "")).startswith(prefix)]

    def wait_serving(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        with self._changed:
            while SERVING_LINE not in "".join(self.lines):
                if time.monotonic() > deadline or (
                    self.proc.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError("actgrad serve did not start:\n" + "".join(self.lines))
                self._changed.wait(1.0)
        match = _SERVING.search(self.text)
        assert match is not None
        return int(match.group(1))

    def metrics_port(self) -> int:
        (line,) = self.messages("metrics on http://")
        return int(str(line["message"]).split(":")[-1].split("/")[0])

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, from the workers' own readiness lines."""
        return {
            int(e["worker"]): int(e["pid"])
            for e in self.messages("worker ")
            if "serving on" in e["message"]
        }

    def access(self, rpc: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries()
            if e.get("logger") == "actgrad_server.access" and e.get("rpc") == rpc
        ]

    def wait_access(self, rpc: str, count: int) -> None:
        """Waits until `count` calls of `rpc` are in the access log."""
        self.wait_for(f"{count} access lines of {rpc}", lambda: len(self.access(rpc)) >= count)

    def wait_exit(self) -> int:
        code = self.proc.wait(timeout=WAIT)
        self._reader.join(WAIT)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@contextmanager
def serve(*flags: str, new_session: bool = False) -> Iterator[Serve]:
    server = Serve(*flags, new_session=new_session)
    try:
        yield server
    finally:
        server.close()


def _clients_by_worker(
    server: Serve, port: int, stack: ExitStack, per_worker: int, workers: int
) -> dict[int, list[Client]]:
    """Clients on connections of their own, `per_worker` of them on each worker (by
    pid). Each one's first call is a health check, which must say SERVING."""
    found: dict[int, list[Client]] = {}
    for _ in range(40 * per_worker * workers):
        client = stack.enter_context(Client(f"127.0.0.1:{port}", **OWN_CONNECTION))
        before = len(server.access(HEALTH_CHECK))
        assert client.health() == "SERVING"
        server.wait_access(HEALTH_CHECK, before + 1)
        pid = int(server.access(HEALTH_CHECK)[before]["pid"])
        found.setdefault(pid, []).append(client)
        if len(found) == workers and all(len(c) >= per_worker for c in found.values()):
            return {pid: clients[:per_worker] for pid, clients in found.items()}
    raise AssertionError(f"connections did not reach every worker: {sorted(found)}")


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie left for an init that does not reap is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_workers_answer_on_one_port_and_their_metrics_add_up() -> None:
    with serve("--workers=2", "--metrics-port=0") as server, ExitStack() as stack:
        port = server.wait_serving()
        pids = server.worker_pids()
        assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2
        assert server.proc.pid not in pids.values()
        # The one readiness line comes after both workers serve.
        text = server.text
        assert text.count(SERVING_LINE) == 1
        assert text.index(SERVING_LINE) > max(text.index(f"worker {i} serving on") for i in (0, 1))

        clients = _clients_by_worker(server, port, stack, per_worker=2, workers=2)
        assert set(clients) == set(pids.values())
        x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], dtype=np.float32)
        calls_per_client = 3
        for worker_clients in clients.values():
            for client in worker_clients:
                for _ in range(calls_per_client):
                    y = client.activate(x, "relu")
                    assert y.dtype == np.float32 and y.shape == x.shape
                    assert y.tolist() == [0.0, 0.0, 0.0, 0.5, 3.0]
        calls = 2 * 2 * calls_per_client
        server.wait_access(ACTIVATE, calls)
        assert len(server.access(ACTIVATE)) == calls
        by_pid = {
            pid: sum(int(e["pid"]) == pid for e in server.access(ACTIVATE)) for pid in clients
        }
        assert by_pid == {pid: 2 * calls_per_client for pid in clients}

        # /metrics (served by the supervisor) sums the workers' counts. A worker
        # writes its finished calls every CALL_FLUSH_SECONDS: wait for them.
        ok = {"rpc": ACTIVATE, "function": "relu", "dtype": "float32", "code": "OK"}
        deadline = time.monotonic() + WAIT
        while True:
            health_checks = len(server.access(HEALTH_CHECK))
            text = scrape(server.metrics_port())
            flushed = (
                sample(text, "actgrad_requests_total", **ok) == calls
                and sample(text, "actgrad_requests_total", rpc=HEALTH_CHECK, code="OK")
                == health_checks
            )
            if flushed or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert sample(text, "actgrad_requests_total", **ok) == calls
        assert sample(text, "actgrad_requests_received_total", rpc=ACTIVATE) == calls
        assert sample(text, "actgrad_request_duration_seconds_count", rpc=ACTIVATE) == calls
        assert sample(text, "actgrad_requests_total", rpc=HEALTH_CHECK, code="OK") == health_checks
        assert sample(text, "actgrad_request_bytes_total", rpc=ACTIVATE) == sum(
            int(e["bytes_in"]) for e in server.access(ACTIVATE)
        )
        assert sample(text, "actgrad_serving") == 1.0
        assert sample(text, "actgrad_requests_in_flight") == 0.0
        # Each worker warmed the same sessions up: the sum is twice one worker's.
        size = sample(text, "actgrad_session_cache_size")
        assert size is not None and size > 0 and size % 2 == 0

        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0


# This once failed about 1 run in 30 under load: gRPC's stop closed a connection
# while its client was still reading a 4 MiB answer, and the kernel reset it. The
# drain now keeps connections open until the calls in flight are answered
# (ActgradServer._drain); the clients here have retries off, so they see any loss.
def test_one_client_with_connections_reaches_every_worker() -> None:
    """`connections=` gives one client connections of its own, which the kernel
    spreads over the workers one by one: with 24 of them, all on one of two workers
    has a chance of 2**-23. Calls go over them in turn, so each worker answers."""
    with serve("--workers=2") as server:
        port = server.wait_serving()
        pids = set(server.worker_pids().values())
        x = np.array([-1.0, 2.0], dtype=np.float32)
        with Client(f"127.0.0.1:{port}", connections=24, timeout=60.0) as client:
            for _ in range(48):
                assert client.activate(x, "relu").tolist() == [0.0, 2.0]
        server.wait_access(ACTIVATE, 48)
        entries = server.access(ACTIVATE)
        assert {int(e["pid"]) for e in entries} == pids
        assert len({e["peer"] for e in entries}) == 24


def test_sigterm_drains_calls_in_flight_on_every_worker_and_exits_zero() -> None:
    # Large enough that each worker's queue of calls takes far longer than the checks
    # below (at 1 Mi elements, the faster graphs answered all of them in ~40 ms, and
    # a loaded run once saw no call left in flight): 4 Mi elements stream in chunks.
    elements = 1 << 22
    per_worker = 3
    # One thread per worker: most calls wait in the queue when SIGTERM comes.
    flags = ("--workers=2", "--metrics-port=0", "--threads=1", "--grace=60")
    with serve(*flags) as server, ExitStack() as stack:
        port = server.wait_serving()
        by_worker = _clients_by_worker(server, port, stack, per_worker=per_worker, workers=2)
        clients = [client for worker_clients in by_worker.values() for client in worker_clients]
        rng = np.random.default_rng(11)
        inputs = [
            (
                rng.standard_normal(elements, dtype=np.float32) * 4,
                rng.standard_normal(elements, dtype=np.float32),
            )
            for _ in clients
        ]
        metrics_port = server.metrics_port()
        with futures.ThreadPoolExecutor(len(clients)) as pool:
            pending = [
                pool.submit(client.gradient, x, "sigmoid", grad_output=g)
                for client, (x, g) in zip(clients, inputs, strict=True)
            ]
            received = 0.0
            deadline = time.monotonic() + WAIT
            while received < len(clients):
                assert time.monotonic() < deadline, "the calls did not all reach the server"
                text = scrape(metrics_port)
                received = sum(
                    sample(text, "actgrad_requests_received_total", rpc=rpc) or 0.0
                    for rpc in (GRADIENT, GRADIENT_STREAM)
                )
                time.sleep(0.01)
            assert not all(p.done() for p in pending), "no call was in flight at SIGTERM"
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for(
                "both workers to drain",
                lambda: len({e.get("pid") for e in server.messages("draining")}) == 2,
            )
            # Once both stopped listening, a new connection is refused: UNAVAILABLE.
            refused = 0
            for _ in range(200):
                with Client(f"127.0.0.1:{port}", **OWN_CONNECTION) as late:
                    try:
                        late.activate([1.0], "relu")
                    except actgrad.UnavailableError as exc:
                        assert exc.code == grpc.StatusCode.UNAVAILABLE
                        refused += 1
                        if refused == 3:
                            break
            assert refused == 3
            results = [p.result(WAIT) for p in pending]
        for (x, g), y in zip(inputs, results, strict=True):
            assert y.dtype == np.float32 and y.shape == (elements,)
            s = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
            np.testing.assert_allclose(y, g * s * (1.0 - s), rtol=1e-5, atol=1e-7)
        assert server.wait_exit() == 0
        assert "worker 0 stopped" in server.text and "worker 1 stopped" in server.text


def test_ctrl_c_to_the_process_group_drains_each_worker_once() -> None:
    # A terminal's Ctrl-C sends SIGINT to the supervisor and every worker at once.
    with serve("--workers=2", "--grace=5", new_session=True) as server:
        server.wait_serving()
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.wait_exit() == 0
        drains = [e["pid"] for e in server.messages("draining")]
        assert sorted(drains) == sorted(server.worker_pids().values())
        assert "stopping now" not in server.text


def _wait_restarted(server: Serve, index: int, old_pid: int) -> int:
    """The pid of worker `index` once a new process of it says it serves."""

    def restarted() -> bool:
        return server.worker_pids().get(index, old_pid) != old_pid  # its latest line

    server.wait_for(f"worker {index} to be restarted", restarted)
    return server.worker_pids()[index]


def _wait_started(server: Serve, index: int, old_pid: int) -> int:
    """The pid of the process started to replace worker `index` (pid `old_pid`)."""
    pattern = re.compile(rf"started worker {index} \(pid (\d+)\)")

    def latest() -> int:
        pids = [int(m.group(1)) for m in pattern.finditer(server.text)]
        return pids[-1] if pids else old_pid

    server.wait_for(f"worker {index} to be replaced", lambda: latest() != old_pid)
    return latest()


def test_a_worker_that_dies_is_restarted_and_the_others_keep_serving() -> None:
    with serve("--workers=2", "--grace=5") as server:
        port = server.wait_serving()
        pids = server.worker_pids()
        with ExitStack() as stack:
            clients = _clients_by_worker(server, port, stack, per_worker=1, workers=2)
            survivor = clients[pids[0]][0]
            os.kill(pids[1], signal.SIGKILL)
            # Worker 0 answers throughout; worker 1 comes back on the same port.
            assert survivor.activate(np.float32([-1.0, 2.0]), "relu").tolist() == [0.0, 2.0]
            new_pid = _wait_restarted(server, 1, pids[1])
            assert new_pid != pids[1] and _alive(pids[0])
            assert survivor.activate(np.float32([3.0]), "relu").tolist() == [3.0]
        assert f"worker 1 (pid {pids[1]}) exited unexpectedly with status -9; restarting" in (
            server.text
        )
        # A new connection may land on either worker; both serve.
        for _ in range(4):
            with Client(f"127.0.0.1:{port}", **OWN_CONNECTION) as client:
                assert client.activate([1.0], "relu").tolist() == [1.0]
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0


@pytest.mark.slow
def test_a_crash_loop_stops_the_whole_server_with_a_failure() -> None:
    with serve("--workers=2", "--grace=5") as server:
        port = server.wait_serving()
        pid = server.worker_pids()[1]
        # Each replacement is killed as soon as it is started (not once it serves, which
        # takes seconds under load): the loop must fit the restart window.
        for _ in range(workers_module.RESTART_LIMIT - 1):
            os.kill(pid, signal.SIGKILL)
            pid = _wait_started(server, 1, pid)
        other = server.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        # The limit reached: the supervisor drains the other worker and exits non-zero,
        # so that the orchestrator restarts the server.
        assert server.wait_exit() == 1
        assert f"worker 1 (pid {pid}) exited unexpectedly with status -9 in a crash loop" in (
            server.text
        )
        assert "worker 0 stopped" in server.text
        assert not _alive(other)
        with (
            Client(f"127.0.0.1:{port}", **OWN_CONNECTION) as client,
            pytest.raises(actgrad.UnavailableError),
        ):
            client.activate([1.0], "relu")


def test_workers_drain_when_their_supervisor_is_killed() -> None:
    with serve("--workers=2", "--grace=5") as server:
        server.wait_serving()
        pids = server.worker_pids()
        server.proc.kill()
        server.proc.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while any(_alive(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, f"workers left behind: {pids}"
            time.sleep(0.05)
        server.wait_for(
            "both workers to stop", lambda: all(f"worker {i} stopped" in server.text for i in pids)
        )


def test_one_worker_serves_in_the_command_process() -> None:
    with serve("--workers=1") as server:
        port = server.wait_serving()
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        if children.exists():
            assert children.read_text().split() == []
        assert not any("worker" in e for e in server.entries())
        assert "started worker" not in server.text
        with Client(f"127.0.0.1:{port}", timeout=30.0) as client:
            assert client.activate(np.float32([-1.0, 2.0]), "relu").tolist() == [0.0, 2.0]
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0


def test_workers_do_not_join_another_server_on_their_port() -> None:
    # SO_REUSEPORT would let a second server of the same user share the port.
    with serve("--workers=2") as first:
        port = first.wait_serving()
        with serve("--workers=2", f"--port={port}") as second:
            # A start-up failure of this host: one line, status 1.
            assert second.wait_exit() == 1
            assert f"cannot bind 127.0.0.1:{port}" in second.text
            assert "Traceback" not in second.text
            assert "started worker" not in second.text
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait_exit() == 0


def test_a_worker_that_cannot_start_fails_the_command_with_status_2() -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with serve("--workers=2", "--device=cuda") as server:
        assert server.wait_exit() == 2
        assert "CUDAExecutionProvider" in server.text
        assert SERVING_LINE not in server.text
