"""TLS credentials (re-read when their files change) and bearer tokens (read at start-up).

Nothing here touches a call: the auth interceptor in `api/_interceptors.py` asks
`TokenSet.accepts` about each call's ``authorization`` metadata.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from pathlib import Path

import grpc

from actgrad_server.config import Settings
from actgrad_server.errors import ConfigError

__all__ = ["TokenSet", "load_tokens", "server_credentials"]

_BEARER = "bearer"
_LOGGER = logging.getLogger(__name__)


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigError(f"{what}: {path!r} is empty")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (or mutual TLS) credentials from the PEM files, or None for plaintext.

    The files are read again whenever one of them changes (cert-manager rotating a
    Secret): each new connection's handshake asks `_Rotation` for the newest
    certificate, key and client CA, so rotation needs no restart, and connections
    already open keep theirs.
    """
    if not settings.tls:
        return None
    rotation = _Rotation(settings)
    return grpc.dynamic_ssl_server_credentials(
        rotation.initial,
        # grpc-stubs says the fetcher returns a configuration; gRPC takes None as
        # "no change" (grpc/_server.py), which is what fetch returns most of the time.
        rotation.fetch,  # type: ignore[arg-type]
        require_client_authentication=bool(settings.tls_client_ca),
    )


class _Rotation:
    """The server's certificate configuration, re-read when its files change."""

    def __init__(self, settings: Settings) -> None:
        self._paths = [
            p for p in (settings.tls_cert, settings.tls_key, settings.tls_client_ca) if p
        ]
        self._settings = settings
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.initial = self._load()  # ConfigError at start-up for a missing or empty file

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths:
            try:
                info = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        settings = self._settings
        chain = _read(settings.tls_cert, "tls_cert")
        key = _read(settings.tls_key, "tls_key")
        client_ca = (
            _read(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
        )
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=client_ca
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None (keep)."""
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except ConfigError as exc:
                # Mid-rotation (a file replaced, its pair not yet): keep serving the
                # current certificate and try again at the next handshake.
                _LOGGER.warning("TLS files changed but cannot be loaded yet: %s", exc)
                return None
            self._stamp = stamp
            _LOGGER.info("TLS certificate reloaded from %s", ", ".join(self._paths))
            return config


class TokenSet:
    """The accepted bearer tokens; checks a header in constant time.

    >>> tokens = TokenSet([b"s3cret"])
    >>> tokens.accepts("Bearer s3cret"), tokens.accepts("Bearer guess")
    (True, False)
    """

    def __init__(self, tokens: list[bytes]) -> None:
        if not tokens:
            raise ConfigError("auth_token_file: no tokens (one token per line)")
        self._tokens = list(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def accepts(self, authorization: str | None) -> bool:
        """True when `authorization` is ``Bearer <token>`` with an accepted token."""
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != _BEARER:
            return False
        given = credential.strip().encode("utf-8", "surrogateescape")
        # Every token is compared, in constant time each, so that neither the
        # position of a match nor a common prefix shows in the timing.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched


def load_tokens(path: str) -> TokenSet:
    """Reads one token per line; blank lines and surrounding whitespace are ignored."""
    data = _read(path, "auth_token_file")
    tokens = [line.strip() for line in data.splitlines()]
    tokens = [token for token in tokens if token]
    for token in tokens:
        if any(byte < 0x21 or byte > 0x7E for byte in token):
            raise ConfigError(
                "auth_token_file: tokens must be printable ASCII without spaces "
                "(they travel in an HTTP/2 header)"
            )
    return TokenSet(tokens)
