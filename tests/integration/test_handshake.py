"""Connections that never finish the HTTP/2 handshake are closed within --handshake-timeout.

gRPC's own default is 120 s, during which each such connection holds a descriptor and
memory: 2,000 idle TCP connections were all still open after 15 s (issue 20). Real
sockets on loopback, against a real server on port 0.
"""

from __future__ import annotations

import selectors
import socket
import time

import numpy as np
import pytest
from _running import make_client, running, settings

# The client's connection preface (RFC 9113, 3.4) without the SETTINGS frame after it.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 1.0
# How late past the timeout a connection may still be open (timers, a busy machine).
SLACK = 3.0
# Silent, stopped mid-preface, and the whole preface with no SETTINGS frame.
OPENINGS = {"silent": b"", "half a preface": PREFACE[:10], "no settings": PREFACE}
PER_KIND = 20


def _closed_within(sockets: dict[socket.socket, str], limit: float) -> dict[str, list[float]]:
    """Seconds until the server closed each socket (EOF or reset), by kind; those
    still open after `limit` seconds are absent."""
    start = time.monotonic()
    closed: dict[str, list[float]] = {kind: [] for kind in OPENINGS}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while selector.get_map() and time.monotonic() - start < limit:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    continue  # the server's own SETTINGS and a GOAWAY come before the end
                selector.unregister(sock)
                closed[sockets[sock]].append(time.monotonic() - start)
    return closed


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connections_that_never_speak_http2_are_closed_in_time(kind: str) -> None:
    with running(settings(handshake_timeout=TIMEOUT)) as server:
        sockets: dict[socket.socket, str] = {}
        try:
            for opening, data in OPENINGS.items():
                for _ in range(PER_KIND):
                    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    sock.setblocking(False)
                    if data:
                        sock.sendall(data)
                    sockets[sock] = opening
            closed = _closed_within(sockets, TIMEOUT + SLACK)
        finally:
            for sock in sockets:
                sock.close()
        for opening, times in closed.items():
            assert len(times) == PER_KIND, (opening, f"{len(times)} of {PER_KIND} closed")
            # Closed by the timeout, not at once for being what they are.
            assert min(times) >= TIMEOUT * 0.5, (opening, min(times))
        # The server still answers callers that do speak HTTP/2.
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            assert client.activate(np.array([-1.0, 2.0]), "relu").tolist() == [0.0, 2.0]
        finally:
            client.close()
