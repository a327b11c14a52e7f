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
