"""Helpers of tests/deploy: replicas as subprocesses, nginx with the repository's config.

Deployment tests: what docker/ and docker-compose.yml say, checked without Docker.

No Docker engine runs on our machines, so these tests run the parts for real where
they can: `actgrad serve` replicas as subprocesses on 127.0.0.1 port 0, and nginx
(the Debian package) with the repository's load-balancer template, rendered for
those loopback ports and listening on unix sockets (gRPC, HTTP) in a private temp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_TEMPLATE = DOCKER / "nginx.conf.template"

START_TIMEOUT = 60.0
#: The replicas' --max-message-bytes (and the balancer's body limit) in these tests.
MAX_MESSAGE_BYTES = 1 << 20
_SERVING = re.compile(r"serving actgrad\.v1 on [^ ]+:(\d+)(?:.*; HTTP on port (\d+))?")
# Replicas for the balancer tests: loopback, port 0, JSON logs (they are parsed).
REPLICA_ENVIRONMENT = {
    "ACTGRAD_HOST": "127.0.0.1",
    "ACTGRAD_PORT": "0",
    "ACTGRAD_HTTP_PORT": "0",
    "ACTGRAD_DEVICE": "cpu",
    "ACTGRAD_THREADS": "4",
    "ACTGRAD_GRACE": "2",
    "ACTGRAD_LOG_FORMAT": "json",
    # The tests tell which replica served a call from its access log.
    "ACTGRAD_ACCESS_LOG": "true",
    # One process per replica: SIGSTOP and SIGKILL in the tests must reach the server.
    "ACTGRAD_WORKERS": "1",
    # Small, so that a body over it is cheap to send; the balancer gets the same.
    "ACTGRAD_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
}
_TEMPLATE_VARIABLE = re.compile(r"\$\{?(ACTGRAD_LB_[A-Z0-9_]+)\}?")


# -- actgrad replicas -----------------------------------------------------------------


@dataclass
class Replica:
    """One `actgrad serve` subprocess; its stderr is collected line by line."""

    proc: subprocess.Popen[str]
    port: int = 0
    #: The HTTP port, 0 when the replica serves no HTTP.
    http_port: int = 0
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def access_entries(self) -> list[dict[str, Any]]:
        """The replica's per-call log entries (JSON log format)."""
        entries = []
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("logger") == "actgrad_server.access":
                entries.append(entry)
        return entries

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot exit
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def start_replica(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Replica:
    """Starts `actgrad serve` (or `argv`) and waits for the port it got.

    Without `env` it runs with this environment plus REPLICA_ENVIRONMENT (loopback,
    port 0, small); with `env`, with exactly that environment.
    """
    command = list(argv or [sys.executable, "-m", "actgrad", "serve"])
    environment = dict(os.environ, **REPLICA_ENVIRONMENT) if env is None else dict(env)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd)
    replica = Replica(proc)
    assert proc.stderr is not None
    stream = proc.stderr
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            line = stream.readline()
            if not line:
                break
            replica.lines.append(line)
            match = _SERVING.search(line)
            if match:
                replica.port = int(match.group(1))
                replica.http_port = int(match.group(2) or 0)
                break
        if not replica.port:
            raise AssertionError("actgrad serve did not start:\n" + "".join(replica.lines))
    except BaseException:
        replica.stop()
        raise

    def drain() -> None:
        for line in stream:
            replica.lines.append(line)

    replica._reader = threading.Thread(target=drain, name="replica-stderr", daemon=True)
    replica._reader.start()
    return replica


# -- nginx ------------------------------------------------------------------------------


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitutes ``${NAME}`` and ``$NAME`` for the given names only, as the nginx
    image's envsubst step does with NGINX_ENVSUBST_FILTER; other ``$`` stay."""
    missing = sorted(set(_TEMPLATE_VARIABLE.findall(text)) - set(values))
    if missing:
        raise KeyError(f"template variables without a value: {', '.join(missing)}")
    for name, value in values.items():
        text = re.sub(r"\$(?:\{" + name + r"\}|" + name + r"(?![A-Za-z0-9_]))", value, text)
    return text


def template_variables() -> set[str]:
    return set(_TEMPLATE_VARIABLE.findall(NGINX_TEMPLATE.read_text()))


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip(
            "nginx is not installed (make test installs Debian's nginx-light; "
            "by hand: apt-get install nginx-light)"
        )
    return found


@dataclass
class LoadBalancer:
    """nginx with the repository's template, in front of loopback replicas: gRPC on
    `socket`, HTTP on `http_socket`."""

    prefix: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.prefix / "lb.sock"

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    @property
    def http_socket(self) -> Path:
        return self.prefix / "http.sock"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def access_entries(self) -> list[dict[str, str]]:
        """Each logged call as a dict of the template's key=value fields."""
        if not self.access_log.exists():
            return []
        entries = []
        for line in self.access_log.read_text().splitlines():
            # A value is one word, or a list ("A, B": every replica nginx tried).
            fields = dict(re.findall(r"(\w+)=([^\s,]+(?:, [^\s,]+)*)", line))
            fields["request"] = line.split('"')[1] if line.count('"') >= 2 else ""
            entries.append(fields)
        return entries


def _servers(addresses: Sequence[str]) -> str:
    return "\n    ".join(f"server {address} max_fails=1 fail_timeout=5s;" for address in addresses)


def write_nginx_config(
    prefix: Path,
    upstreams: Sequence[str],
    http_upstreams: Sequence[str],
    max_body_bytes: int = MAX_MESSAGE_BYTES,
) -> Path:
    """Renders the template for loopback and wraps it in a minimal main config.

    `upstreams` are the replicas' gRPC addresses, `http_upstreams` their HTTP ones,
    `max_body_bytes` their --max-message-bytes.
    The wrapper plays the nginx image's own nginx.conf (pid, logs, temp paths,
    `http { include conf.d/*.conf; }`); everything about gRPC, HTTP, balancing and
    errors comes from the repository's template.
    """
    values = {
        "ACTGRAD_LB_LISTEN": f"unix:{prefix / 'lb.sock'}",
        "ACTGRAD_LB_UPSTREAMS": _servers(upstreams),
        "ACTGRAD_LB_HTTP_LISTEN": f"unix:{prefix / 'http.sock'}",
        "ACTGRAD_LB_HTTP_UPSTREAMS": _servers(http_upstreams),
        "ACTGRAD_LB_MAX_BODY_BYTES": str(max_body_bytes),
        # Never asked: every upstream above is an IP address.
        "ACTGRAD_LB_RESOLVER": "127.0.0.1",
        "ACTGRAD_LB_ACCESS_LOG": str(prefix / "access.log"),
    }
    (prefix / "actgrad.conf").write_text(render_template(NGINX_TEMPLATE.read_text(), values))
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root the workers would switch to `nobody`, who cannot enter pytest's
    # private temp dirs; the image runs everything as one unprivileged user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\n"
        "daemon off;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"{temp_paths}\n"
        f"    include {prefix / 'actgrad.conf'};\n"
        "}\n"
    )
    return main


def nginx_check(config: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a config written by write_nginx_config."""
    prefix = config.parent
    return subprocess.run(
        [nginx_binary(), "-t", "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "t.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
