"""A server in a child process: start it, find its port, read its memory and CPU time."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["REPO_ROOT", "ServerProcess"]

_LOGGER = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Both servers log this line once they serve: actgrad after its warm-up.
_LISTENING = re.compile(r"serving \S+ on \S+:(\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """``python -m <module> <args>`` started from the repository root.

    Its stderr goes to a file, not a pipe: a server that logs every call (actgrad's
    access log) then costs the benchmark's client process nothing, and never blocks
    on a full pipe. The file is polled for the line that gives the port.
    """

    def __init__(self, name: str, module: str, args: Sequence[str], *, start_timeout: float):
        self.name = name
        self.argv = [sys.executable, "-m", module, *args]
        # ACTGRAD_* variables of the caller would silently change the server's settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTGRAD_")}
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+b", prefix=f"bench-{name}-", suffix=".log"
        )
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._port = self._wait_for_port(time.monotonic() + start_timeout)
        _LOGGER.info("%s: pid %d on port %d", name, self.pid, self._port)

    def _wait_for_port(self, deadline: float) -> int:
        with open(self._log.name, "rb") as log:
            seen = b""
            while time.monotonic() < deadline:
                seen += log.read()
                match = _LISTENING.search(seen.decode(errors="replace"))
                if match:
                    return int(match.group(1))
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
            seen += log.read()
        tail = seen.decode(errors="replace")[-4000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {' '.join(self.argv)}\n{tail}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def rss_bytes(self) -> int:
        """Resident set size now."""
        return self._status_kib("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """RSS high-water mark (VmHWM) since start or the last `reset_peak`."""
        return self._status_kib("VmHWM") * 1024

    def reset_peak(self) -> bool:
        """Resets VmHWM to the current RSS (Linux clear_refs 5); False where refused."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used."""
        # The command name (field 2) may hold spaces; the fields after it do not.
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the name: state is field 3, utime field 14, stime field 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; idempotent."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _LOGGER.warning("%s did not exit on SIGTERM; killing it", self.name)
                self._proc.kill()
                self._proc.wait()
        self._log.close()  # deletes the file

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
