"""docker-compose.yml, up for real: the default service, then the scale profile, each
over gRPC (the SDK) and HTTP (httpx, from the host on the published ports).

The file is used as users use it, with the image built by make test-containers;
only the host ports are variables set here (0: any free port) and the project name
is our own. One stand-in is named plainly: where the load balancer's image is an
nginx older than 1.27.3 (the locally made stand-in for
nginxinc/nginx-unprivileged:1.28-alpine is Debian's 1.22), `compose.nginx-1.22.yml`
drops the `resolve` upstream parameter, which 1.22 does not know; nginx then
resolves the replicas' name once, at start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import MEASURED, REPO, docker, docker_command

from actgrad import Client

COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_1_22_OVERRIDE = Path(__file__).parent / "compose.nginx-1.22.yml"
PROJECT = "actgrad-test"
REPLICAS = 3
HTTP_PORT = 8000  # the server's and the load balancer's HTTP port in their containers
_UPSTREAM = re.compile(r"\bupstream=(\S+)")


def nginx_needs_override() -> bool:
    image = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["actgrad-lb"]["image"]
    done = docker("run", "--rm", "--entrypoint", "nginx", image, "-v")
    version = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stdout + done.stderr)
    assert version, done.stderr
    return tuple(int(part) for part in version.groups()) < (1, 27, 3)


class Compose:
    """`docker compose` on the repository's file, with our project name and ports."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        # Every host port the file publishes: any free one, never a port in use here.
        ports = set(re.findall(r"\$\{(ACTGRAD_\w*PUBLISH_PORT)\b", COMPOSE_FILE.read_text()))
        assert {
            "ACTGRAD_PUBLISH_PORT",
            "ACTGRAD_HTTP_PUBLISH_PORT",
            "ACTGRAD_LB_PUBLISH_PORT",
            "ACTGRAD_LB_HTTP_PUBLISH_PORT",
        } <= ports, ports
        self.env = dict(os.environ, ACTGRAD_REPLICAS=str(REPLICAS))
        self.env.update(dict.fromkeys(ports, "0"))

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [docker_command(), "compose", "--project-name", PROJECT]
        for path in self.files:
            command += ["--file", str(path)]
        done = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=REPO,
        )
        assert done.returncode == 0, f"docker compose {' '.join(args)}\n{done.stderr}"
        return done

    def target(self, service: str, port: int, index: int = 1) -> str:
        address = self("port", "--index", str(index), service, str(port)).stdout.strip()
        return "127.0.0.1:" + address.rsplit(":", 1)[1]

    def containers(self, service: str) -> list[dict[str, str]]:
        lines = self("ps", "--all", "--format", "json", service).stdout.splitlines()
        # compose prints one object per line (v2.21+) or one list.
        found: list[dict[str, str]] = []
        for line in lines:
            value = json.loads(line)
            found.extend(value if isinstance(value, list) else [value])
        return found

    def down(self) -> float:
        began = time.monotonic()
        self("--profile", "scale", "--profile", "gpu", "down", "--volumes", "--remove-orphans")
        return time.monotonic() - began


def leftovers() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        kind: docker(*command, "--filter", label, "--quiet").stdout.split()
        for kind, command in (
            ("containers", ("ps", "--all")),
            ("networks", ("network", "ls")),
            ("volumes", ("volume", "ls")),
        )
    }


@pytest.fixture(scope="module")
def compose() -> Iterator[Compose]:
    files = [COMPOSE_FILE] + ([NGINX_1_22_OVERRIDE] if nginx_needs_override() else [])
    project = Compose(files)
    project.down()  # a previous run's, if it was cut short
    try:
        yield project
    finally:
        project.down()


def test_default_service_comes_up_healthy_and_answers(compose: Compose) -> None:
    began = time.monotonic()
    compose("up", "--detach", "--wait", "--no-build", "--pull", "never", "actgrad")
    MEASURED["compose up --wait (default service healthy)"] = f"{time.monotonic() - began:.1f} s"
    (container,) = compose.containers("actgrad")
    assert container["Health"] == "healthy", container
    with Client(compose.target("actgrad", 50051), timeout=30) as client:
        np.testing.assert_allclose(
            client.softmax(np.array([2.0, 1.0, 0.1])), [0.659, 0.242, 0.099], atol=1e-3
        )
    # HTTP on its published port, from the host, as curl users call it.
    base_url = f"http://{compose.target('actgrad', HTTP_PORT)}"
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as http:
        assert check_http(http) == "compose-http"
    for line in compose("logs", "--no-log-prefix", "actgrad").stdout.splitlines():
        json.loads(line)
    seconds = compose.down()
    assert leftovers() == {"containers": [], "networks": [], "volumes": []}
    MEASURED["compose down (default service)"] = f"{seconds:.1f} s, nothing left"


def check_http(http: httpx.Client, request_id: str = "compose-http") -> str:
    """Readiness and the seed's softmax over HTTP; returns the answer's request id."""
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}, ready.text
    answer = http.post("/v1/softmax", json={"x": [2, 1, 0.1]}, headers={"X-Request-Id": request_id})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["output"], [0.659, 0.242, 0.099], atol=1e-3)
    return answer.headers["x-request-id"]


def upstreams(compose: Compose, protocol: str = "grpc") -> list[str]:
    """The replica address of each gRPC (or HTTP) call in the load balancer's access
    log; only gRPC lines have a grpc_status."""
    lines = compose("logs", "--no-log-prefix", "actgrad-lb").stdout.splitlines()
    return [
        m.group(1)
        for line in lines
        if ("grpc_status=" in line) == (protocol == "grpc") and (m := _UPSTREAM.search(line))
    ]


def test_scale_profile_spreads_calls_and_loses_none_when_a_replica_stops(
    compose: Compose,
) -> None:
    began = time.monotonic()
    compose(
        "--profile",
        "scale",
        "up",
        "--detach",
        "--wait",
        "--no-build",
        "--pull",
        "never",
        "actgrad-replica",
        "actgrad-lb",
    )
    MEASURED[f"compose up --wait (scale profile, {REPLICAS} replicas)"] = (
        f"{time.monotonic() - began:.1f} s"
    )
    replicas = [c for c in compose.containers("actgrad-replica") if c["State"] == "running"]
    assert len(replicas) == REPLICAS, replicas
    target = compose.target("actgrad-lb", 8080)

    # Spread: calls one after another go to every replica (least_conn, ties in turn).
    x = np.linspace(-3, 3, 1024, dtype=np.float32)
    with Client(target, timeout=30) as client:
        for _ in range(REPLICAS * 4):
            client.activate(x, "silu")
    spread = Counter(upstreams(compose))
    assert len(spread) == REPLICAS, spread
    assert min(spread.values()) >= 2, spread

    # HTTP through the balancer's published HTTP port, spread over the replicas' 8000.
    with httpx.Client(
        base_url=f"http://{compose.target('actgrad-lb', HTTP_PORT)}", timeout=30, trust_env=False
    ) as http:
        ids = {check_http(http, request_id=f"lb-{i}") for i in range(REPLICAS * 2)}
    assert ids == {f"lb-{i}" for i in range(REPLICAS * 2)}
    http_spread = Counter(upstreams(compose, "http"))
    assert len(http_spread) == REPLICAS, http_spread
    assert {address.rsplit(":", 1)[1] for address in http_spread} == {str(HTTP_PORT)}

    # One replica stopped (SIGTERM, drain) while 4 threads keep calling: none lost.
    errors: list[str] = []
    answered = Counter[str]()
    stop = threading.Event()

    def caller() -> None:
        with Client(target, timeout=30) as client:
            while not stop.is_set():
                try:
                    y = client.activate(x, "silu")
                    answered["ok" if y.shape == x.shape else "wrong"] += 1
                except Exception as exc:  # recorded, asserted on below
                    errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    before = sum(answered.values())
    victim = replicas[0]["Name"]
    docker("stop", "--time", "20", victim, timeout=60)
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    after = sum(answered.values()) - before
    assert errors == [], errors[:5]
    assert answered["wrong"] == 0 and after > 0, answered
    assert inspect_exit_code(victim) == 0
    MEASURED["scale profile"] = (
        f"calls over {REPLICAS} replicas {sorted(spread.values())} (HTTP: "
        f"{sorted(http_spread.values())}); one stopped mid-run: "
        f"{sum(answered.values())} gRPC calls, 0 lost"
    )

    seconds = compose.down()
    assert leftovers() == {"containers": [], "networks": [], "volumes": []}
    MEASURED["compose down (scale profile)"] = f"{seconds:.1f} s, nothing left"


def inspect_exit_code(name: str) -> int:
    return int(docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout)
