"""`actgrad plot` against a real server: f and f' computed through the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actgrad import cli
from actgrad_server.app import ActgradServer


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures `actgrad plot` draws (still readable once it has closed them)."""
    figures: list[Any] = []
    draw = cli.plot_figure

    def keep(*args: Any, **kwargs: Any) -> Any:
        figures.append(draw(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(cli, "plot_figure", keep)
    return figures


def test_plot_through_the_server(
    server: ActgradServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _drawn(monkeypatch)
    image = tmp_path / "gallery.png"
    argv = ["plot", "gelu", "silu", "softmax", "--grad", "--param", "approximate=tanh"]
    argv += ["--target", f"127.0.0.1:{server.port}", "-o", str(image)]
    assert cli.main(argv) == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # As the playground draws them: f and f' on panels of their own, one x axis, each
    # with its title and y label; a function's f and f' in one colour.
    f, grad = figures[0].axes
    assert [f.get_ylabel(), grad.get_ylabel()] == ["f(x)", "f'(x)"]
    names = "gelu (approximate=tanh), silu, softmax"
    assert [f.get_title(), grad.get_title()] == [f"f(x): {names}", f"f'(x): {names}"]
    assert grad.get_shared_x_axes().joined(f, grad) and grad.get_xlabel() == "x"
    assert [line.get_label() for line in grad.get_lines()[1:]] == names.split(", ")
    colours = [line.get_color() for line in f.get_lines()[1:]]
    assert colours == [line.get_color() for line in grad.get_lines()[1:]]
    # softmax's derivative (of its own output, the other logit at 0) is p (1 - p) <= 1/4.
    softmax_grad = grad.get_lines()[3].get_ydata()
    assert 0 < max(softmax_grad) <= 0.25


def test_plot_without_grad_is_one_panel(
    server: ActgradServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _drawn(monkeypatch)
    argv = ["plot", "relu", "--target", f"127.0.0.1:{server.port}", "-o", str(tmp_path / "a.png")]
    assert cli.main(argv) == 0
    (f,) = figures[0].axes
    assert (f.get_title(), f.get_ylabel(), f.get_xlabel()) == ("f(x): relu", "f(x)", "x")


def test_plot_of_an_unknown_function_is_the_servers_not_found(
    server: ActgradServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "gallery.png"
    argv = ["plot", "gelux", "--target", f"127.0.0.1:{server.port}", "-o", str(image)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.startswith("error: NOT_FOUND: unknown function 'gelux'")
    assert not image.exists()
