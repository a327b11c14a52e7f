"""Bearer tokens, TLS file checks, the SDK's security and retry options (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actgrad import Client
from actgrad._client import _retry_options
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


def test_retry_policy_retries_only_unavailable() -> None:
    options = _retry_options(4, 1 << 20)
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.per_rpc_retry_buffer_size"] == 1 << 20
    (method,) = json.loads(options["grpc.service_config"])["methodConfig"]
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 4 and policy["backoffMultiplier"] > 1
    assert method["name"] == [{"service": "actgrad.v1.ActivationService"}]
    assert _retry_options(1, 1 << 20) == {"grpc.enable_retries": 0}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": 6}, ValueError),
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
