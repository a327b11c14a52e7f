"""Serves the HTTP application with uvicorn (httptools, uvloop) on a thread of its own.

`HttpServer` binds its socket when made (so that a port taken fails at start-up, and
port 0 is resolved at once; worker processes bind with SO_REUSEPORT, as gRPC does),
serves from `start()` on an event loop of its own, and stops in `stop()`: the
listener closes, idle keep-alive connections are closed, requests in flight get
what is left of the grace. `ActgradServer` drives it: its drain first turns the
pipeline's refusal on and waits for the open requests (`open_requests`). With TLS, a
changed certificate and key are loaded for new connections, as gRPC's are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import time
from typing import Any

import uvicorn

from actgrad_server.http.app import HttpApp

__all__ = ["HTTP_PORT_HINT", "HttpServer"]

_LOGGER = logging.getLogger(__name__)
_START_SECONDS = 10.0
_TLS_POLL_SECONDS = 1.0
#: Said when the HTTP port is taken: 8000 is a common port for other servers.
HTTP_PORT_HINT = " (--http-port: another port, 0 = any free one, -1 = no HTTP)"


def _stamps(paths: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot bind HTTP {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot bind HTTP {host}:{port}: {exc.strerror or exc}{HTTP_PORT_HINT}"
        ) from None
    sock.set_inheritable(False)
    return sock


class HttpServer:
    """One uvicorn server of `app` on host:port (0: the kernel picks; see `port`)."""

    def __init__(
        self,
        app: HttpApp,
        host: str,
        port: int,
        *,
        reuse_port: bool,
        tls_cert: str = "",
        tls_key: str = "",
        tls_client_ca: str = "",
    ) -> None:
        self.app = app
        self._socket = _bind(host, port, reuse_port)
        self.port: int = self._socket.getsockname()[1]
        # TLS with the gRPC port's files; a changed certificate and key are loaded into
        # the live context for new connections (`_watch_tls`), as gRPC's are.
        self._tls_files = (tls_cert, tls_key)
        tls: dict[str, Any] = {}
        if tls_cert:
            tls = {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key}
            if tls_client_ca:
                tls |= {"ssl_ca_certs": tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self._config = uvicorn.Config(
            app.pipeline,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,  # the pipeline's access log, with the request id
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=None,
            **tls,
        )
        self._server = uvicorn.Server(self._config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        # uvicorn's own start and stop lines would repeat ours, without the port.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._thread: threading.Thread | None = None

    @property
    def open_requests(self) -> int:
        return self.app.pipeline.open_requests

    def start(self) -> None:
        """Serves on a thread of its own; returns once uvicorn listens."""
        self._thread = threading.Thread(target=self._run, name="actgrad-http")
        self._thread.start()
        end = time.monotonic() + _START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError("the HTTP server could not start (see the log)")
            if time.monotonic() > end:
                raise OSError("the HTTP server did not start within 10 s")
            time.sleep(0.005)
        if self._tls_files[0]:
            threading.Thread(target=self._watch_tls, name="actgrad-http-tls", daemon=True).start()

    def _run(self) -> None:
        # uvicorn's Server.run, keeping the loop (the TLS reload runs on it).
        with asyncio.Runner(loop_factory=self._config.get_loop_factory()) as runner:
            self._loop = runner.get_loop()
            runner.run(self._server.serve(sockets=[self._socket]))

    def _watch_tls(self) -> None:
        """Loads a changed certificate and key for new connections (cert-manager rotating
        a Secret). A pair that does not load (mid-rotation, or not matching) is logged
        and the current one kept; the next change tries again. The client CA
        (--tls-client-ca) is read once: Python cannot take a CA out of a context."""
        seen = _stamps(self._tls_files)
        while not self._stopping.wait(_TLS_POLL_SECONDS):
            stamps = _stamps(self._tls_files)
            if stamps == seen:
                continue
            seen = stamps
            cert, key = self._tls_files
            try:  # on a scratch context first: a bad pair must not half-replace the live one
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                _LOGGER.warning("HTTP: TLS files changed but cannot be loaded yet: %s", exc)
                continue
            loop, context = self._loop, self._config.ssl
            if loop is not None and context is not None:
                # On the loop's thread, between handshakes.
                loop.call_soon_threadsafe(self._reload, context, cert, key)

    def _reload(self, context: ssl.SSLContext, cert: str, key: str) -> None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            _LOGGER.warning("HTTP: TLS files changed but cannot be loaded yet: %s", exc)
            return
        _LOGGER.info("HTTP: TLS certificate reloaded from %s, %s", cert, key)

    def stop(self, timeout: float) -> None:
        """Closes the listener and the connections; requests in flight get `timeout` s."""
        self._stopping.set()
        self._config.timeout_graceful_shutdown = max(int(timeout), 1)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(1.0)
        self._socket.close()
        self.app.pool.shutdown(wait=False, cancel_futures=True)

    def cancel(self) -> None:
        """Stops at once: requests in flight are abandoned (a second signal)."""
        self._stopping.set()
        self._server.should_exit = True
        self._server.force_exit = True
