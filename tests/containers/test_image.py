"""The CPU image, run: answers, health, its user, hardening, JSON logs, the drain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import (
    IMAGE,
    MEASURED,
    Container,
    docker,
    inspect,
    run_container,
    wait_until_answering,
)

from actgrad import Client
from actgrad.errors import CallCancelledError, UnavailableError

IMAGE_ID = "10001"


def test_answers_the_sdk(server: Container) -> None:
    with Client(server.target, timeout=30) as client:
        # The seed's example: softmax of [2, 1, 0.1].
        np.testing.assert_allclose(
            client.softmax(np.array([2.0, 1.0, 0.1])), [0.659, 0.242, 0.099], atol=1e-3
        )
        assert client.server_info().execution_providers == ["CPUExecutionProvider"]


def test_actgrad_health_from_the_host_and_inside(server: Container) -> None:
    outside = subprocess.run(
        [sys.executable, "-m", "actgrad", "health", "--target", server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outside.returncode == 0, outside.stdout + outside.stderr
    assert "SERVING" in outside.stdout
    inside = docker("exec", server.name, "actgrad", "health", "--target", "127.0.0.1:50051")
    assert "SERVING" in inside.stdout


def test_image_health_check_reports_healthy(server: Container) -> None:
    # The image's HEALTHCHECK (interval 10 s): healthy after its first run.
    deadline = time.monotonic() + 60
    while (health := inspect(server.name, "{{json .State.Health}}"))["Status"] != "healthy":
        assert health["Status"] == "starting" and time.monotonic() < deadline, health
        time.sleep(1)
    assert health["Log"][-1]["ExitCode"] == 0
    MEASURED.setdefault(
        "healthy after", f"{time.monotonic() - server.started:.1f} s (health check every 10 s)"
    )


def test_runs_as_user_and_group_10001_with_entries(server: Container) -> None:
    assert inspect(IMAGE, "{{json .Config.User}}") == f"{IMAGE_ID}:{IMAGE_ID}"
    ids = server.exec("sh", "-c", "id -u; id -g; id -G").split()
    assert ids == [IMAGE_ID, IMAGE_ID, IMAGE_ID], ids
    passwd = server.exec("getent", "passwd", IMAGE_ID).strip().split(":")
    group = server.exec("getent", "group", IMAGE_ID).strip().split(":")
    assert passwd[0] == group[0] == "actgrad"
    assert passwd[3] == IMAGE_ID and passwd[5] == "/nonexistent"
    # The server process itself, not only `docker exec`'s.
    status = server.exec("cat", "/proc/1/status")
    assert re.search(rf"^Uid:\s+{IMAGE_ID}\s+{IMAGE_ID}\s", status, re.M), status
    assert re.search(rf"^Gid:\s+{IMAGE_ID}\s+{IMAGE_ID}\s", status, re.M), status


def test_read_only_no_capabilities_no_new_privileges(server: Container) -> None:
    host = inspect(server.name, "{{json .HostConfig}}")
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    status = server.exec("cat", "/proc/1/status")
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    refused = docker("exec", server.name, "touch", "/opt/actgrad/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr


def test_every_log_line_is_json(server: Container) -> None:
    with Client(server.target, timeout=30) as client:
        client.activate(np.array([-1.0, 0.0, 1.0], dtype=np.float32), "gelu")
    lines = server.logs()
    assert any("serving actgrad.v1" in line for line in lines), lines
    for line in lines:
        entry = json.loads(line)  # fails on onnxruntime's own coloured warnings
        assert isinstance(entry, dict) and {"time", "level", "message"} <= set(entry), line


def test_image_size_is_printed() -> None:
    size = inspect(IMAGE, "{{json .Size}}")
    base = inspect(IMAGE, "{{json .Config.Image}}")
    MEASURED["image size"] = f"{size / 1e6:.0f} MB ({IMAGE})"
    build = os.environ.get("ACTGRAD_BUILD_SECONDS")
    if build:
        MEASURED["build (docker build, layer cache as found)"] = f"{build} s"
    assert size > 0 and base is not None


# -- SIGTERM with calls in flight ----------------------------------------------------------

GRACE = 10  # ACTGRAD_GRACE in the container; docker stop gives it GRACE + 10 s


@pytest.fixture
def draining() -> Iterator[Container]:
    container = run_container("actgrad-test-drain", environment={"ACTGRAD_GRACE": str(GRACE)})
    try:
        wait_until_answering(container)
        yield container
    finally:
        container.remove()


def test_sigterm_lets_calls_in_flight_finish_and_exits_0(draining: Container) -> None:
    # Calls of about a second each (a 16 Mi-element gelu gradient, streamed in
    # chunks), from 4 threads; retries off, so every failure shows.
    x = np.linspace(-4, 4, 16 * 1024 * 1024, dtype=np.float32)
    records: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def caller() -> None:
        with Client(draining.target, timeout=60, max_attempts=1, connections=1) as client:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    y = client.gradient(x, "gelu")
                    outcome = "ok" if y.shape == x.shape and np.isfinite(y).all() else "wrong"
                except UnavailableError:
                    outcome = "unavailable"
                except CallCancelledError:
                    outcome = "cancelled"
                except Exception as exc:  # recorded, asserted on below
                    outcome = f"{type(exc).__name__}: {exc}"
                records.append((began, time.monotonic(), outcome))

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(4)  # a few calls each, so that some are in flight at any moment
    term = time.monotonic()
    stopped = docker("stop", "--time", str(GRACE + 10), draining.name, timeout=GRACE + 60)
    stop_seconds = time.monotonic() - term
    stop.set()
    for thread in threads:
        thread.join(timeout=90)

    state = inspect(draining.name, "{{json .State}}")
    assert stopped.returncode == 0
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, draining.logs()[-20:])
    assert stop_seconds < GRACE + 5, f"stopped after {stop_seconds:.1f} s"
    # In flight at SIGTERM (begun at least 0.2 s before it, so that the server had it,
    # and not done by then): every one answered, whole.
    in_flight = [r for r in records if r[0] < term - 0.2 and r[1] > term]
    durations = sorted(r[1] - r[0] for r in records if r[1] < term)
    print(f"calls before SIGTERM: {len(durations)}, median {durations[len(durations) // 2]:.2f} s")
    assert in_flight, f"no call was in flight at SIGTERM: {records[-10:]}"
    assert [r[2] for r in in_flight] == ["ok"] * len(in_flight)
    # Calls begun later: answered, refused as UNAVAILABLE by the drain, or CANCELLED
    # when the server stopped as they arrived; the SDK (retries on) sends both again.
    assert {r[2] for r in records if r[0] < term - 0.2} <= {"ok"}
    outcomes = {r[2] for r in records if r[0] >= term - 0.2}
    assert outcomes <= {"ok", "unavailable", "cancelled"}, outcomes
    MEASURED["SIGTERM drain"] = (
        f"exit 0 in {stop_seconds:.1f} s, {len(in_flight)} calls in flight finished"
    )
    for line in draining.logs():
        json.loads(line)
