"""Settings: flags over ACTGRAD_* variables over defaults, and validation."""

from __future__ import annotations

import pytest

from actgrad_server import config
from actgrad_server.errors import ConfigError


def test_defaults() -> None:
    settings = config.load({}, environ={})
    assert settings.port == 50051
    assert settings.max_message_bytes == 64 << 20
    assert settings.device == "auto"


def test_environment_then_flags() -> None:
    env = {"ACTGRAD_PORT": "6000", "ACTGRAD_MAX_RANK": "4", "ACTGRAD_GRACE": "2.5"}
    settings = config.load({}, environ=env)
    assert (settings.port, settings.max_rank, settings.grace) == (6000, 4, 2.5)
    settings = config.load({"port": "7000"}, environ=env)
    assert settings.port == 7000 and settings.max_rank == 4


def test_from_args_parses_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTGRAD_HOST", "0.0.0.0")
    settings = config.from_args(["--port", "0", "--device", "cpu", "--max-elements", "10"])
    assert settings.port == 0 and settings.device == "cpu" and settings.max_elements == 10
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize(
    "env",
    [
        {"ACTGRAD_PORT": "many"},
        {"ACTGRAD_PORT": "70000"},
        {"ACTGRAD_DEVICE": "tpu"},
        {"ACTGRAD_MAX_RANK": "0"},
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load({}, environ=env)


def test_operations_defaults_are_safe() -> None:
    settings = config.load({}, environ={})
    assert settings.reflection is True
    assert settings.metrics_port == -1  # no extra listener unless asked
    assert settings.metrics_host == "127.0.0.1"
    assert settings.log_format == "plain" and settings.access_log is False
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == ("", "", "")
    assert settings.auth_token_file == "" and settings.tls is False
    assert settings.grace == 10.0
    assert settings.handshake_timeout == 10.0  # gRPC's own is 120 s


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, True),
        (["--no-reflection"], {}, False),
        ([], {"ACTGRAD_REFLECTION": "false"}, False),
        ([], {"ACTGRAD_REFLECTION": "off"}, False),
        (["--reflection"], {"ACTGRAD_REFLECTION": "0"}, True),  # the flag wins
    ],
)
def test_bool_settings_have_a_flag_form_and_an_env_form(
    argv: list[str], env: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.from_args(argv).reflection is expected


def test_every_operations_setting_reads_its_env_variable() -> None:
    env = {
        "ACTGRAD_METRICS_PORT": "9464",
        "ACTGRAD_METRICS_HOST": "0.0.0.0",
        "ACTGRAD_LOG_FORMAT": "json",
        "ACTGRAD_ACCESS_LOG": "no",
        "ACTGRAD_TLS_CERT": "/certs/server.pem",
        "ACTGRAD_TLS_KEY": "/certs/server.key",
        "ACTGRAD_TLS_CLIENT_CA": "/certs/ca.pem",
        "ACTGRAD_AUTH_TOKEN_FILE": "/run/secrets/tokens",
        "ACTGRAD_GRACE": "25",
    }
    settings = config.load({}, environ=env)
    assert settings.metrics_port == 9464 and settings.metrics_host == "0.0.0.0"
    assert settings.log_format == "json" and settings.access_log is False
    assert settings.tls and settings.tls_client_ca == "/certs/ca.pem"
    assert settings.auth_token_file == "/run/secrets/tokens" and settings.grace == 25.0


def test_flags_of_the_operations_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTGRAD_LOG_FORMAT", "json")
    settings = config.from_args(
        ["--metrics-port", "0", "--log-format", "plain", "--no-access-log", "--grace", "3"]
    )
    assert settings.metrics_port == 0 and settings.log_format == "plain"
    assert settings.access_log is False and settings.grace == 3.0


@pytest.mark.parametrize(
    "env",
    [
        {"ACTGRAD_METRICS_PORT": "-2"},
        {"ACTGRAD_METRICS_PORT": "70000"},
        {"ACTGRAD_LOG_FORMAT": "xml"},
        {"ACTGRAD_LOG_LEVEL": "LOUD"},
        {"ACTGRAD_ACCESS_LOG": "maybe"},
        {"ACTGRAD_TLS_CERT": "/a.pem"},  # without a key
        {"ACTGRAD_TLS_KEY": "/a.key"},  # without a certificate
        {"ACTGRAD_TLS_CLIENT_CA": "/ca.pem"},  # mutual TLS without TLS
        {"ACTGRAD_GRACE": "-1"},
        {"ACTGRAD_HANDSHAKE_TIMEOUT": "0"},
        {"ACTGRAD_HANDSHAKE_TIMEOUT": "7200"},
    ],
)
def test_bad_operations_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load({}, environ=env)


def test_operations_page_documents_every_setting() -> None:
    import dataclasses
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    text = page.read_text()
    for f in dataclasses.fields(config.Settings):
        name = f"ACTGRAD_{f.name.upper()}"
        assert name in text, f"docs/operations.md lacks {name}"
