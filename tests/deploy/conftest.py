"""Fixtures of tests/deploy: three loopback replicas and nginx in front of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import (
    START_TIMEOUT,
    LoadBalancer,
    Replica,
    nginx_binary,
    start_replica,
    write_nginx_config,
)


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Three `actgrad serve` processes on loopback ports."""
    started: list[Replica] = []
    try:
        for _ in range(3):
            started.append(start_replica())
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    # Short and private: a unix socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="actgrad-lb-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_nginx(prefix: Path, config: Path) -> Iterator[LoadBalancer]:
    """nginx with `config` (write_nginx_config's) until both its sockets listen;
    stopped (SIGQUIT, then SIGKILL) after."""
    binary = nginx_binary()
    balancer = LoadBalancer(prefix)
    balancer.proc = subprocess.Popen(
        [binary, "-p", f"{prefix}/", "-c", str(config), "-e", str(balancer.error_log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: a last-resort kill takes the workers too
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (balancer.socket.exists() and balancer.http_socket.exists()):
            if balancer.proc.poll() is not None or time.monotonic() > deadline:
                log = balancer.error_log.read_text() if balancer.error_log.exists() else ""
                raise AssertionError(f"nginx did not start:\n{log}")
            time.sleep(0.05)
        yield balancer
    finally:
        if balancer.proc.poll() is None:
            balancer.proc.send_signal(signal.SIGQUIT)
            try:
                balancer.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(balancer.proc.pid, signal.SIGKILL)
                balancer.proc.wait(timeout=15)


@pytest.fixture
def load_balancer(replicas: list[Replica], nginx_prefix: Path) -> Iterator[LoadBalancer]:
    """nginx in front of the three replicas (gRPC and HTTP)."""
    config = write_nginx_config(
        nginx_prefix, [r.address for r in replicas], [r.http_address for r in replicas]
    )
    with running_nginx(nginx_prefix, config) as balancer:
        yield balancer
