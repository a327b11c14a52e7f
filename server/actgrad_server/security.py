"""TLS credentials and bearer tokens, read once at start-up from the files Settings names.

Nothing here touches a call: the auth interceptor in `api/_interceptors.py` asks
`TokenSet.accepts` about each call's ``authorization`` metadata.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from actgrad_server.config import Settings
from actgrad_server.errors import ConfigError

__all__ = ["TokenSet", "load_tokens", "server_credentials"]

_BEARER = "bearer"


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigError(f"{what}: {path!r} is empty")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (or mutual TLS) credentials from the PEM files, or None for plaintext."""
    if not settings.tls:
        return None
    chain = _read(settings.tls_cert, "tls_cert")
    key = _read(settings.tls_key, "tls_key")
    client_ca = _read(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


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
