"""`actgrad plot`: what it asks the server for, the image it writes, and its errors.

No sockets: a fake `Client` computes tanh, leaky_relu and softmax with numpy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from actgrad import cli
from actgrad._types import FunctionInfo, ParamInfo, VjpResult

PNG = b"\x89PNG\r\n\x1a\n"


def _forward(x: npt.NDArray[Any], name: str, params: dict[str, Any]) -> npt.NDArray[Any]:
    if name == "tanh":
        return np.tanh(x)
    if name == "leaky_relu":
        return np.where(x >= 0, x, params.get("alpha", 0.01) * x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


class FakeClient:
    instances: list[FakeClient] = []  # noqa: RUF012 (test bookkeeping)

    def __init__(self, target: str, *, timeout: float, wait_for_ready: bool) -> None:
        self.calls: list[tuple[str, str, tuple[int, ...], dict[str, Any]]] = []
        FakeClient.instances.append(self)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def functions(self) -> list[FunctionInfo]:
        return [
            FunctionInfo(name="tanh"),
            FunctionInfo(name="leaky_relu", params=[ParamInfo("alpha", "number", default=0.01)]),
            FunctionInfo(
                name="softmax",
                elementwise=False,
                axis_param="axis",
                params=[ParamInfo("axis", "integer", default=-1)],
            ),
        ]

    def activate(self, x: npt.NDArray[Any], function: str, **params: Any) -> npt.NDArray[Any]:
        self.calls.append(("activate", function, x.shape, params))
        return _forward(x, function, params)

    def vjp(
        self, x: npt.NDArray[Any], function: str, *, grad_output: Any, **params: Any
    ) -> VjpResult:
        self.calls.append(("vjp", function, x.shape, params))
        h = 1e-6
        slope = (_forward(x + h, function, params) - _forward(x - h, function, params)) / (2 * h)
        return VjpResult(grad_input=grad_output * slope)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.instances = []
    monkeypatch.setattr(cli, "Client", FakeClient)
    return FakeClient


def test_plot_draws_each_function_through_the_client(
    fake: type[FakeClient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "act.png"
    argv = ["plot", "tanh", "leaky_relu", "softmax", "--grad", "--range", "-3", "3"]
    argv += ["--points", "101", "--param", "alpha=0.1", "-o", str(image)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"wrote {image}\n"
    assert image.read_bytes()[:8] == PNG
    (client,) = fake.instances
    assert client.calls == [
        ("activate", "tanh", (101,), {}),
        ("vjp", "tanh", (101,), {}),
        # Only the function that declares a parameter gets it.
        ("activate", "leaky_relu", (101,), {"alpha": 0.1}),
        ("vjp", "leaky_relu", (101,), {"alpha": 0.1}),
        # A function that mixes values along an axis: its own logit against a 0.
        ("activate", "softmax", (101, 2), {}),
        ("vjp", "softmax", (101, 2), {}),
    ]


def test_plot_without_matplotlib_says_how_to_get_it(
    fake: type[FakeClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    image = tmp_path / "act.png"
    assert cli.main(["plot", "tanh", "-o", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'actgrad plot' needs matplotlib")
    assert "pip install '/path/to/actgrad[plot]'" in err  # not PyPI's 'actgrad'
    assert not image.exists()
    assert fake.instances[0].calls == []  # refused before any call


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--range", "2", "-2"], "error: --range: need finite LOW < HIGH"),
        (["--points", "1"], "error: --points: need at least 2"),
        (["--param", "beta=2"], "error: --param beta: none of tanh leaky_relu has it"),
    ],
)
def test_plot_refuses_a_bad_command_line(
    fake: type[FakeClient],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    image = tmp_path / "act.png"
    assert cli.main(["plot", "tanh", "leaky_relu", *extra, "-o", str(image)]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not image.exists()


def test_plot_needs_an_output() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["plot", "tanh"])
    assert exc.value.code == 2
