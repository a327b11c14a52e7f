"""The `actgrad` command: parsing (negative values, --param), output, errors, serve.

No sockets: the commands run against a fake `Client` patched into `actgrad.cli`.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest

import actgrad
from actgrad import cli, wire

# -- parsing ---------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(cli.protect_negative_numbers(argv))


@pytest.mark.parametrize(
    ("argv", "values"),
    [
        (["call", "relu", "-1", "0", "2"], [-1.0, 0.0, 2.0]),
        (["call", "relu", "-1e-3", "-.5", "-inf", "1E+2"], [-1e-3, -0.5, -np.inf, 100.0]),
        (["call", "relu", "--", "-1", "-2.5e-1"], [-1.0, -0.25]),
        (["call", "relu", "--dtype", "float32", "-1", "2"], [-1.0, 2.0]),
    ],
)
def test_negative_values_are_values(argv: list[str], values: list[float]) -> None:
    args = parse(*argv)
    assert args.command == "call" and args.function == "relu"
    np.testing.assert_array_equal(args.values, values)


def test_nan_values_parse() -> None:
    args = parse("call", "relu", "-nan", "nan")
    assert all(np.isnan(args.values))


def test_grad_output_softmax_options_and_shape_take_negative_numbers() -> None:
    args = parse("grad", "relu", "-1", "2", "--grad-output", "-1e-2", "-3", "--param", "a=-1")
    assert args.values == [-1.0, 2.0]
    assert args.grad_output == [-0.01, -3.0]
    assert args.params == [("a", -1)]
    args = parse("softmax", "-1", "-2", "3", "4", "--shape", "2", "-1", "--axis", "-2")
    assert (args.values, args.shape, args.axis) == ([-1.0, -2.0, 3.0, 4.0], [2, -1], -2)
    assert (args.temperature, args.log, args.dtype) == (1.0, False, "float64")
    args = parse("softmax", "1", "2", "--temperature", "0.5", "--log", "--axis=-1")
    assert (args.temperature, args.log, args.axis) == (0.5, True, -1)


def test_options_before_function_and_values() -> None:
    args = parse("call", "--target", "h:1", "--timeout", "2.5", "gelu", "-1", "--param", "x=y")
    assert (args.target, args.timeout, args.function, args.values) == ("h:1", 2.5, "gelu", [-1.0])
    assert args.params == [("x", "y")]


def test_target_defaults_to_the_environment_then_localhost() -> None:
    assert parse("info").target == "localhost:50051"
    parser = cli.build_parser(default_target="env-host:9")
    assert parser.parse_args(["functions"]).target == "env-host:9"
    assert parser.parse_args(["info", "--target", "x:1"]).target == "x:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("False", False),
        ("3", 3),
        ("-2", -2),
        ("0.1", 0.1),
        ("-1e-3", -1e-3),
        ("inf", float("inf")),
        ("tanh", "tanh"),
        ("none", "none"),
        ("", ""),
        ("a,b", "a,b"),
    ],
)
def test_param_scalar_values(text: str, expected: Any) -> None:
    value = wire.parse_param_value(text)
    assert type(value) is type(expected)
    assert value == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1,0.2", [0.1, 0.2]),
        ("1,-2, 3", [1.0, -2.0, 3.0]),
        ("[0.1, 0.2]", [0.1, 0.2]),
        ("[[0.5], [0.25]]", [[0.5], [0.25]]),
        ("[1]", [1.0]),
    ],
)
def test_param_list_values_become_float_arrays(text: str, expected: Any) -> None:
    value = wire.parse_param_value(text)
    assert isinstance(value, np.ndarray) and value.dtype == np.float64
    np.testing.assert_array_equal(value, expected)


def test_param_needs_a_name_and_an_equals_sign() -> None:
    assert cli.parse_param("alpha=0.1") == ("alpha", 0.1)
    assert cli.parse_param("mode=a=b") == ("mode", "a=b")
    for bad in ("alpha", "=1"):
        with pytest.raises(Exception, match="NAME=VALUE"):
            cli.parse_param(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["call", "relu", "--param", "alpha"],
        ["call", "relu", "1", "--param", "slope=[1, x]"],
        ["call", "relu"],
        ["call", "relu", "abc"],
        ["call", "relu", "1", "--dtype", "int32"],
        ["info", "--timeout", "0"],
        ["softmax", "1", "--axis", "0.5"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv, environ={})
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_values_take_the_sdks_dtype_for_python_lists_and_help_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One rule for the CLI and the SDK: values are what the SDK makes of a Python list."""
    sdk = wire.to_float_array([0.5]).dtype.name
    for command in ("call", "grad", "softmax", "dense"):
        argv = [command, *(["relu"] if command in ("call", "grad") else []), "1"]
        if command == "dense":
            argv += ["--weight", "1"]
        assert parse(*argv).dtype == sdk
        with pytest.raises(SystemExit):
            cli.main([command, "--help"], environ={})
        text = " ".join(capsys.readouterr().out.split())
        assert f"(default: {sdk}, what the SDK makes of a Python list;" in text, command


# -- commands against a fake client ----------------------------------------------


class FakeClient:
    """Stands in for `actgrad.Client`; records what the command asked for."""

    instances: list[FakeClient] = []  # noqa: RUF012 (test bookkeeping)

    def __init__(self, target: str, *, timeout: float, wait_for_ready: bool) -> None:
        self.target = target
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.closed = False
        FakeClient.instances.append(self)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    def activate(self, x: npt.NDArray[Any], function: str, /, **params: Any) -> Any:
        self.calls.append(("activate", x, {"function": function, **params}))
        if function == "nope":
            raise actgrad.NotFoundError("unknown function 'nope'; did you mean 'relu'?")
        return np.maximum(x, np.zeros((), dtype=x.dtype))

    def vjp(self, x: npt.NDArray[Any], function: str, /, **kwargs: Any) -> actgrad.VjpResult:
        self.calls.append(("vjp", x, {"function": function, **kwargs}))
        grad_params = {}
        if "slope" in kwargs:
            grad_params["slope"] = np.array([-3.0], dtype=x.dtype)
        return actgrad.VjpResult(grad_input=(x > 0).astype(x.dtype), grad_params=grad_params)

    def softmax(self, x: npt.NDArray[Any], /, **kwargs: Any) -> Any:
        self.calls.append(("softmax", x, kwargs))
        if kwargs["temperature"] <= 0:
            raise actgrad.InvalidArgumentError("temperature: must be > 0")
        e = np.exp(x - x.max(axis=kwargs["axis"], keepdims=True))
        return e / e.sum(axis=kwargs["axis"], keepdims=True)

    def functions(self) -> list[actgrad.FunctionInfo]:
        return [
            actgrad.FunctionInfo(
                name="leaky_relu",
                aliases=["lrelu"],
                params=[actgrad.ParamInfo(name="alpha", type="number", default=0.01)],
                dtypes=["float32", "float64"],
            ),
            actgrad.FunctionInfo(
                name="prelu",
                params=[actgrad.ParamInfo(name="slope", type="tensor", required=True)],
            ),
            actgrad.FunctionInfo(
                name="gelu",
                params=[
                    actgrad.ParamInfo(
                        name="approximate", type="string", default="none", choices=["none", "tanh"]
                    )
                ],
            ),
        ]

    def server_info(self) -> actgrad.ServerInfo:
        return actgrad.ServerInfo(
            version="0.1.0",
            onnx_opset=21,
            onnxruntime_version="1.20.1",
            execution_providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
            limits=actgrad.Limits(max_message_bytes=1024, max_elements=10, max_rank=4),
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.instances = []
    monkeypatch.setattr(cli, "Client", FakeClient)
    return FakeClient


def run(argv: list[str], capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str, str]:
    status = cli.main(argv, environ=env)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_call_prints_values_on_one_line(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["call", "relu", "-1", "0", "2.5"], capsys)
    assert (status, out, err) == (0, "0.0 0.0 2.5\n", "")
    (client,) = fake.instances
    assert (client.target, client.timeout, client.closed) == ("localhost:50051", 30.0, True)
    _, x, kwargs = client.calls[0]
    assert x.dtype == np.float64 and kwargs == {"function": "relu"}


def test_wait_for_ready_flag_reaches_the_client(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = run(["call", "relu", "1", "--wait-for-ready"], capsys)
    assert status == 0
    assert fake.instances[-1].wait_for_ready is True


def test_call_dtype_shape_params_and_target_from_env(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["call", "prelu", "0.1", "-2", "3", "-4", "--dtype", "float32", "--shape", "2", "2"]
    argv += ["--param", "slope=0.1,0.2", "--param", "alpha=2", "--param", "inplace=true"]
    status, out, _ = run(argv, capsys, ACTGRAD_TARGET="env-host:7")
    assert status == 0
    # float32 values print at float32's shortest repr: 0.1, not 0.10000000149.
    assert out == "0.1 0.0 3.0 0.0\n"
    (client,) = fake.instances
    assert client.target == "env-host:7"
    assert client.wait_for_ready is False  # an unreachable target fails in seconds
    _, x, kwargs = client.calls[0]
    assert x.dtype == np.float32 and x.shape == (2, 2)
    np.testing.assert_array_equal(kwargs.pop("slope"), [0.1, 0.2])
    assert kwargs == {"function": "prelu", "alpha": 2, "inplace": True}


def test_call_bfloat16(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["call", "relu", "1.5", "-1", "--dtype", "bfloat16"], capsys)
    assert (status, out) == (0, "1.5 0\n")
    _, x, _ = fake.instances[0].calls[0]
    assert x.dtype == np.dtype(ml_dtypes.bfloat16)


def test_shape_that_does_not_fit_exits_2(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["call", "relu", "1", "2", "3", "--shape", "2", "2"], capsys)
    assert (status, out) == (2, "")
    assert err == "error: 3 values do not fit --shape 2 2\n"


def test_grad_prints_grad_input_then_grad_params(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["grad", "prelu", "-1", "2", "--grad-output", "0.5", "-1", "--param", "slope=[0.25]"]
    status, out, _ = run(argv, capsys)
    assert (status, out) == (0, "0.0 1.0\nslope: -3.0\n")
    _, x, kwargs = fake.instances[0].calls[0]
    np.testing.assert_array_equal(kwargs["grad_output"], [0.5, -1.0])
    assert kwargs["grad_output"].dtype == x.dtype
    status, out, _ = run(["grad", "relu", "-1", "2"], capsys)
    assert (status, out) == (0, "0.0 1.0\n")
    assert fake.instances[1].calls[0][2]["grad_output"] is None


def test_softmax_options(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["softmax", "0", "-1", "0", "-1", "--shape", "2", "2", "--axis", "0"]
    status, out, _ = run([*argv, "--temperature", "0.5", "--log"], capsys)
    assert (status, out) == (0, "0.5 0.5 0.5 0.5\n")
    assert fake.instances[0].calls[0][2] == {"axis": 0, "temperature": 0.5, "log": True}


def test_server_errors_print_code_and_details_and_exit_1(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["call", "nope", "1"], capsys)
    assert (status, out) == (1, "")
    assert err == "error: NOT_FOUND: unknown function 'nope'; did you mean 'relu'?\n"
    status, _, err = run(["softmax", "1", "--temperature", "-1"], capsys)
    assert status == 1
    assert err == "error: INVALID_ARGUMENT: temperature: must be > 0\n"


def test_functions_table_and_json(
    fake: type[FakeClient], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["functions"], capsys)
    assert status == 0
    assert out.splitlines() == [
        "NAME        ALIASES  PARAMS",
        "leaky_relu  lrelu    alpha=0.01",
        "prelu       -        slope (required)",
        "gelu        -        approximate=none [none|tanh]",
    ]
    status, out, _ = run(["functions", "--json"], capsys)
    data = json.loads(out)
    assert [f["name"] for f in data] == ["leaky_relu", "prelu", "gelu"]
    assert data[0]["params"][0]["default"] == 0.01
    assert data[0]["dtypes"] == ["float32", "float64"]


def test_info(fake: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["info"], capsys)
    assert status == 0
    assert "execution_providers: CUDAExecutionProvider, CPUExecutionProvider\n" in out
    assert "onnx_opset: 21\n" in out and "max_elements: 10\n" in out
    status, out, _ = run(["info", "--json"], capsys)
    assert json.loads(out)["limits"]["max_rank"] == 4


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([], environ={}) == 2
    assert "usage: actgrad" in capsys.readouterr().err


def test_format_values_uses_each_dtypes_shortest_repr() -> None:
    assert cli.format_values(np.array([0.1, -2.0], np.float32)) == "0.1 -2.0"
    assert cli.format_values(np.array([1 / 3])) == repr(1 / 3)
    assert cli.format_values(np.array(0.1, np.float16)) == "0.1"
    assert cli.format_values(np.array([[1.0], [np.inf]])) == "1.0 inf"
    assert cli.format_values(np.zeros(0)) == ""


# -- serve is delegated ----------------------------------------------------------


def test_serve_is_delegated_to_the_server_package(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[list[str]] = []

    def serve_main(argv: list[str]) -> int:
        received.append(argv)
        return 3

    module = types.ModuleType("actgrad_server.cli")
    module.serve_main = serve_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "actgrad_server.cli", module)
    assert cli.main(["serve", "--port", "0", "-v"], environ={}) == 3
    assert received == [["--port", "0", "-v"]]


def test_serve_without_the_server_package_explains_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "actgrad_server.cli", None)
    assert cli.main(["serve"], environ={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'actgrad serve' needs the server package")
    assert "pip install '/path/to/actgrad[server]'" in err


def test_error_code_names_match_grpc() -> None:
    assert actgrad.NotFoundError("x").code is grpc.StatusCode.NOT_FOUND
