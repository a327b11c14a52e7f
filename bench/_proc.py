"""A server in a child process: start it, find its port, read its memory and CPU time.

Memory and CPU are read over the server's whole process tree, so that a server that
runs worker processes (``actgrad serve --workers N``) is measured as a whole. CPU time
comes from each process's CPU clock (nanoseconds), not /proc/<pid>/stat's utime and
stime: those count whole clock ticks (10 ms), so a short window of a light load could
read as no CPU at all.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["REPO_ROOT", "ServerProcess", "process_cpu_seconds"]

_LOGGER = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Both servers log this line once they serve: actgrad after its warm-up.
_LISTENING = re.compile(r"serving \S+ on \S+:(\d+)")
# The kernel's CPU-time clock of a whole process (every thread, the exited ones
# included), for clock_gettime: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) in
# include/linux/posix-timers.h, ((~pid) << 3) | 2. Any process's may be read.
_CPUCLOCK_SCHED = 2
# A harness killed outright (a test's timeout, SIGKILL) must not leave its servers
# running: util-linux's setpriv asks the kernel to send them SIGTERM when it goes.
# Not a preexec_fn: Python code between fork and exec in a process that uses gRPC
# runs gRPC's fork handlers, whose poller then fails on the epoll descriptor that
# close_fds has closed (EBADF; grpc/grpc#43055) and kills the child before exec.
_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def _die_with_parent(argv: list[str]) -> list[str]:
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class ServerProcess:
    """``python -m <module> <args>`` started from the repository root.

    Its stderr goes to a file, not a pipe: a server that logs every call (actgrad's
    access log) then costs the benchmark's client process nothing, and never blocks
    on a full pipe. The file is polled for the line that gives the port.
    """

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        start_timeout: float,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ):
        """`python`: another interpreter (another venv's, e.g. MLServer's); `env`:
        variables set on top of this process's environment."""
        self.name = name
        self.argv = [python or sys.executable, "-m", module, *args]
        # ACTGRAD_* variables of the caller would silently change the server's settings.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ACTGRAD_")}
        environment.update(env or {})
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+b", prefix=f"bench-{name}-", suffix=".log"
        )
        self._proc = subprocess.Popen(
            _die_with_parent(self.argv),
            cwd=REPO_ROOT,
            env=environment,
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

    def log_text(self) -> str:
        """What the server has logged so far (its stderr)."""
        with open(self._log.name, "rb") as log:
            return log.read().decode(errors="replace")

    def log_port(self, pattern: str) -> int | None:
        """The port in the first log line matching `pattern` (one group), if any."""
        match = re.search(pattern, self.log_text())
        return int(match.group(1)) if match else None

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server's process and its descendants (worker processes), alive now."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        return tree

    def _status_kib(self, key: str) -> int:
        """The sum of `key` (kB) in /proc/<pid>/status over the process tree."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # exited in between
            for line in text.splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
                    break
        return total

    def rss_bytes(self) -> int:
        """Resident set size now (summed over the process tree)."""
        return self._status_kib("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """RSS high-water mark (VmHWM) since start or the last `reset_peak`.

        With worker processes, the sum of each one's high-water mark: an upper bound
        of the tree's peak, exact for a single process.
        """
        return self._status_kib("VmHWM") * 1024

    def reset_peak(self) -> bool:
        """Resets VmHWM to the current RSS (Linux clear_refs 5); False where refused."""
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def cpu_seconds(self) -> float:
        """User + system CPU time the process tree has used (live processes)."""
        return sum(self.cpu_seconds_by_process().values())

    def cpu_seconds_by_process(self) -> dict[int, float]:
        """`cpu_seconds` of each live process of the tree, by pid."""
        used = {}
        for pid in self.pids():
            seconds = process_cpu_seconds(pid)
            if seconds is not None:  # else exited in between
                used[pid] = seconds
        return used

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


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` (all its threads) in seconds, to the
    nanosecond; None once it has exited."""
    try:
        return time.clock_gettime(((~pid) << 3) | _CPUCLOCK_SCHED)
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state first, then ppid), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it do not.
    return text.rsplit(")", 1)[1].split()
