"""The `actgrad` command against a real server: what a first user meets (issue 20).

The dense command's output is checked in test_dense.py (test_dense_command).
"""

from __future__ import annotations

from typing import Any

import pytest

from actgrad import Client, cli


def _target(server: Any) -> list[str]:
    return ["--target", f"127.0.0.1:{server.port}"]


def test_a_parameter_for_a_function_without_any_says_it_takes_none(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["call", "relu", "1", "--param", "alpha=0.1", *_target(server)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: INVALID_ARGUMENT: params['alpha']: unknown parameter; relu takes no parameters\n"
    )


def test_the_cli_computes_in_the_dtype_the_sdk_gives_a_python_list(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """sigmoid(1) prints at float64's precision from both (float32 would be 0.7310586)."""
    with Client(f"127.0.0.1:{server.port}") as client:
        sdk = client.activate([1.0, -0.5], "sigmoid")
    assert cli.main(["call", "sigmoid", "1", "-0.5", *_target(server)]) == 0
    assert capsys.readouterr().out == cli.format_values(sdk) + "\n"
    assert cli.format_values(sdk).startswith("0.7310585786300049 ")


def test_a_list_holding_a_string_is_refused_as_not_numbers(server: Any) -> None:
    with (
        Client(f"127.0.0.1:{server.port}") as client,
        pytest.raises(TypeError, match=r"^x: expected numbers, got str '2'$"),
    ):
        client.activate([1.0, "2"], "relu")
