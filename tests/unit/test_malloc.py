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
