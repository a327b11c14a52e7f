"""The glibc malloc tuning the server applies at start-up."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from actgrad_server._malloc import retain_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_large_buffers_is_accepted_by_glibc() -> None:
    # In a child process, so that this test run's own allocator stays as it was.
    code = "from actgrad_server._malloc import retain_large_buffers as r; print(r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert retain_large_buffers() is False


_BURST = """
import os, threading
import numpy as np
from actgrad_server._malloc import release_free_memory, retain_large_buffers

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20

assert retain_large_buffers()
base = rss()

# Every thread holds its buffers at the same time (192 MiB in all, under the 256 MiB
# trim threshold, so that glibc keeps all of it when they are freed).
everyone = threading.Barrier(8)

def burst():
    arrays = [np.ones(1 << 20) for _ in range(3)]  # 3 x 8 MiB, touched
    everyone.wait()
    del arrays

threads = [threading.Thread(target=burst) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
kept = rss()
release_free_memory()
print(base, kept, rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_buffers_kept_after_a_burst_of_threads_go_back_when_released() -> None:
    command = [sys.executable, "-c", _BURST]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    base, kept, released = (int(v) for v in out.stdout.split())
    # The burst's freed buffers stay resident (that is the point of retaining them)...
    assert kept > base + 150, (base, kept, released)
    # ...until released: every thread allocated in the one arena that glibc can trim.
    assert released < base + 64, (base, kept, released)
