"""Bearer tokens, TLS file checks, the SDK's security and retry options (no sockets)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from actgrad import Client
from actgrad._channel import RETRYABLE, retry_options, retry_pause
from actgrad_server.config import Settings
from actgrad_server.errors import ConfigError
from actgrad_server.security import TokenSet, load_tokens, server_credentials


def test_token_set_accepts_only_bearer_with_a_listed_token() -> None:
    tokens = TokenSet([b"alpha", b"beta"])
    assert tokens.accepts("Bearer alpha") and tokens.accepts("bearer beta")
    for header in (None, "", "alpha", "Bearer", "Bearer alph", "Bearer alphaa", "Basic alpha"):
        assert not tokens.accepts(header)


def test_load_tokens_reads_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("  one\n\ntwo  \n")
    tokens = load_tokens(str(path))
    assert len(tokens) == 2 and tokens.accepts("Bearer two")


@pytest.mark.parametrize("content", ["", "\n  \n", "has space\n"])
def test_load_tokens_refuses_empty_or_unusable_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(ConfigError):
        load_tokens(str(path))


def test_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auth_token_file"):
        load_tokens(str(tmp_path / "absent"))
    settings = Settings(tls_cert=str(tmp_path / "a.pem"), tls_key=str(tmp_path / "a.key"))
    with pytest.raises(ConfigError, match="tls_cert"):
        server_credentials(settings)
    assert server_credentials(Settings()) is None


def test_retries_are_the_clients_and_bounded_by_the_deadline() -> None:
    # No gRPC retry policy (it would keep a copy of each request); transparent
    # retries of calls that never left stay on unless max_attempts is 1.
    assert retry_options(None, 1 << 20) == {"grpc.enable_retries": 1}
    assert retry_options(4, 1 << 20) == {"grpc.enable_retries": 1}
    assert retry_options(1, 1 << 20) == {"grpc.enable_retries": 0}
    assert {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED} == RETRYABLE
    for attempt in range(1, 100):
        pause = retry_pause(attempt, remaining=100.0)
        assert pause is not None and 0.0 <= pause <= min(1.0, 0.1 * 2 ** (attempt - 1))
    # The pause is cut so that the last attempt still fits in the time left ...
    for _ in range(100):
        pause = retry_pause(8, remaining=0.3)
        assert pause is not None and pause <= 0.25
    # ... and with no time left for an attempt, there is no retry.
    assert retry_pause(1, remaining=0.04) is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": 1001}, ValueError),
        ({"max_attempts": 2.0}, TypeError),
        ({"wait_for_ready": 1}, TypeError),
        ({"max_attempts": True}, TypeError),
        ({"token": ""}, ValueError),
        ({"token": "has space"}, ValueError),
        ({"token": b"bytes"}, TypeError),
        ({"root_certificates": "not bytes"}, TypeError),
        ({"certificate_chain": b"-----BEGIN CERTIFICATE-----"}, ValueError),  # no key
        ({"tls": False, "root_certificates": b"pem"}, ValueError),
    ],
)
def test_client_refuses_bad_security_options(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Client("localhost:1", **options)  # type: ignore[arg-type]


def test_client_reports_tls() -> None:
    with Client("localhost:1", tls=True) as client:
        assert client.secure and "tls" in repr(client)
    with Client("localhost:1") as client:
        assert not client.secure
