"""`actgrad plot` against a real server: f and f' computed through the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from actgrad import cli
from actgrad_server.app import ActgradServer


def test_plot_through_the_server(server: ActgradServer, tmp_path: Path) -> None:
    image = tmp_path / "gallery.png"
    argv = ["plot", "gelu", "silu", "softmax", "--grad", "--param", "approximate=tanh"]
    argv += ["--target", f"127.0.0.1:{server.port}", "-o", str(image)]
    assert cli.main(argv) == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_an_unknown_function_is_the_servers_not_found(
    server: ActgradServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "gallery.png"
    argv = ["plot", "gelux", "--target", f"127.0.0.1:{server.port}", "-o", str(image)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.startswith("error: NOT_FOUND: unknown function 'gelux'")
    assert not image.exists()
