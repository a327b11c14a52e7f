"""The benchmark's reading of a process's CPU time (bench._proc), without a server.

The throughput rows give each round's server CPU per call and its split between the
server's processes (test_bench_smoke.test_throughput_rows). Read from /proc/<pid>/stat,
CPU time came in whole clock ticks (10 ms), so a round of a light load on a busy
machine could read as no CPU at all and its split as [] (issue 20's flaky row).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from bench._proc import process_cpu_seconds  # noqa: E402  (the repository root is not a package path)


def _spin(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_a_few_milliseconds_of_cpu_read_as_such() -> None:
    """3 ms of CPU, far below one 10 ms tick, read to within 0.5 ms."""
    pid = os.getpid()
    before, own_before = process_cpu_seconds(pid), time.process_time()
    _spin(0.003)
    after, own_after = process_cpu_seconds(pid), time.process_time()
    assert before is not None and after is not None
    assert after - before == pytest.approx(own_after - own_before, abs=5e-4)


def test_another_process_is_read_and_a_gone_one_gives_none() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nsum(range(3_000_000))\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        used = process_cpu_seconds(child.pid)
        while (used is None or used < 0.02) and time.monotonic() < deadline:
            time.sleep(0.01)
            used = process_cpu_seconds(child.pid)
        assert used is not None and used >= 0.02  # its start-up and the sum
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    assert process_cpu_seconds(child.pid) is None
