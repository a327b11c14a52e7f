"""tests/containers: the CPU image and docker-compose.yml on a real engine.

Run by `make test-containers` (scripts/test_containers.sh), which starts an engine
when none runs, makes the base images locally when no registry answers, and builds
the image from docker/Dockerfile unchanged; a plain `pytest` leaves this folder out
(tests/conftest.py). DOCKER names the engine's command line, ACTGRAD_IMAGE the image.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actgrad import Client

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = os.environ.get("ACTGRAD_IMAGE", f"actgrad:{VERSION}")
START_TIMEOUT = 120.0
#: Filled by the tests, printed at the end of the run (and kept in docs/deployment.md).
MEASURED: dict[str, str] = {}


def docker_command() -> str:
    return os.environ.get("DOCKER", "docker")


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [docker_command(), *args], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def inspect(name: str, template: str = "{{json .}}") -> Any:
    return json.loads(docker("inspect", "--format", template, name).stdout)


@dataclass
class Container:
    """One container of the image, run detached; `target` is its published gRPC port."""

    name: str
    target: str = ""
    started: float = field(default_factory=time.monotonic)

    def logs(self) -> list[str]:
        done = docker("logs", self.name)
        return (done.stdout + done.stderr).splitlines()

    def exec(self, *argv: str) -> str:
        return docker("exec", self.name, *argv).stdout

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)


# What docker-compose.yml and the Kubernetes Deployment give every container.
HARDENING = (
    "--read-only",
    "--tmpfs",
    "/tmp:size=64m,mode=1777",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges:true",
)


def run_container(
    name: str, extra: Sequence[str] = (), environment: dict[str, str] | None = None
) -> Container:
    """`docker run -d` with the hardening, JSON logs and the gRPC port on loopback."""
    docker("rm", "--force", name, check=False)
    env = {"ACTGRAD_LOG_FORMAT": "json", **(environment or {})}
    args = ["run", "--detach", "--name", name, *HARDENING, "--publish", "127.0.0.1::50051"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    container = Container(name)
    docker(*args, *extra, IMAGE)
    port = docker("port", name, "50051/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
    container.target = f"127.0.0.1:{port}"
    return container


def wait_until_answering(container: Container) -> float:
    """Seconds from `docker run` to the first answered SDK call."""
    deadline = container.started + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with Client(container.target, timeout=5, max_attempts=1) as client:
                client.server_info()
            return time.monotonic() - container.started
        except Exception as exc:  # not up yet: any failure, retried
            last = exc
            if not inspect(container.name, "{{json .State.Running}}"):
                break
            time.sleep(0.1)
    state = inspect(container.name, "{{json .State}}")
    raise AssertionError(
        f"{container.name} did not answer ({last!r}); state {state}\n"
        + "\n".join(container.logs()[-30:])
    )


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    done = subprocess.run(
        [docker_command(), "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(
            "no container engine answers `docker info`: run `make test-containers`, which "
            f"starts one\n{done.stderr}",
            pytrace=False,
        )
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"no image {IMAGE}: `make test-containers` builds it", pytrace=False)


@pytest.fixture(scope="session")
def server() -> Iterator[Container]:
    """The image as users run it, hardened, answering; removed at the end."""
    container = run_container("actgrad-test-server")
    try:
        MEASURED["start-up (docker run to first answer)"] = (
            f"{wait_until_answering(container):.1f} s"
        )
        yield container
    finally:
        container.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("measured")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key}: {value}")
