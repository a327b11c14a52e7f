"""GradientFlow through both clients and the command, against the numpy reference.

The reference (tests/unit/flow_reference.py) is an independent float64 numpy
implementation with hand-written backprop, itself checked against finite differences;
PyTorch autograd is the other reference (tests/unit/test_flow_torch.py, and
tests/integration/test_torch_autograd.py through the SDK).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import actgrad
from actgrad import cli
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import flow_reference  # type: ignore[import-not-found,unused-ignore]

STATS = ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead")
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("function", "init", "options"),
    [
        ("sigmoid", "xavier_normal", {}),
        ("relu", "he_uniform", {"normalize": True}),
        ("tanh", "normal", {"init_std": 0.3, "residual": True}),
        ("selu", "lecun_normal", {"seed": 11}),
    ],
)
def test_float64_matches_the_reference(
    client: Any, function: str, init: str, options: dict[str, Any]
) -> None:
    got = client.gradient_flow(function, depth=8, width=16, batch=12, init=init, **options)
    assert isinstance(got, actgrad.GradientFlowResult)
    weights, x, g = flow_reference.draw(
        8, 16, 12, init, seed=options.get("seed", 0), init_std=options.get("init_std")
    )
    want = flow_reference.flow_reference(
        function,
        weights,
        x,
        g,
        residual=options.get("residual", False),
        normalize=options.get("normalize", False),
    )
    assert got.act_rms.shape == got.grad_rms.shape == (9,)
    assert got.weight_grad_rms.shape == got.saturated.shape == got.dead.shape == (8,)
    for name in STATS:
        np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-9, atol=0, err_msg=name)
    assert got.ratio == pytest.approx(want["ratio"], rel=1e-9)


def test_parameters_and_float32(client: Any) -> None:
    low = client.gradient_flow("leaky_relu", depth=4, width=8, batch=8, alpha=0.5)
    high = client.gradient_flow("leaky_relu", depth=4, width=8, batch=8, alpha=1.0)
    assert not np.allclose(low.grad_rms, high.grad_rms)
    single = client.gradient_flow("tanh", depth=4, width=8, batch=8, dtype="float32")
    double = client.gradient_flow("tanh", depth=4, width=8, batch=8)
    np.testing.assert_allclose(single.grad_rms, double.grad_rms, rtol=1e-4)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"function": "softmax"}, "function:"),
        ({"function": "prelu"}, "function:"),
        ({"depth": 0}, "depth:"),
        ({"width": 0}, "width:"),
        ({"batch": 0}, "batch:"),
        ({"depth": 65, "width": 128, "batch": 128}, "depth:"),
        ({"init": "glorot"}, "init:"),
        ({"init": "normal"}, "init_std:"),
        ({"init_std": 0.5}, "init_std:"),
        ({"dtype": "float16"}, "dtype:"),
        ({"alpha": 0.1}, "params['alpha']"),
    ],
)
def test_bad_inputs_are_invalid_argument_then_a_call_succeeds(
    client: Any, arguments: dict[str, Any], fragment: str
) -> None:
    call: dict[str, Any] = {"function": "tanh", "depth": 3, "width": 4, "batch": 2}
    call.update(arguments)
    function = call.pop("function")
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        client.gradient_flow(function, **call)
    assert info.value.code == INVALID
    assert fragment in info.value.details, info.value.details
    assert client.gradient_flow("tanh", depth=3, width=4, batch=2).grad_rms.shape == (4,)


def test_unknown_function_is_not_found(client: Any) -> None:
    with pytest.raises(actgrad.NotFoundError):
        client.gradient_flow("sigmoyd", depth=3, width=4, batch=2)
    assert client.gradient_flow("sigmoid", depth=3, width=4, batch=2).ratio > 0


def test_an_unknown_dtype_on_the_wire(server: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
        request = pb.GradientFlowRequest(
            function="tanh", depth=2, width=3, batch=2, init="he_normal", dtype=99
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.GradientFlow(request, timeout=10)
        assert info.value.code() == INVALID
        assert "dtype:" in info.value.details()
        request.dtype = 0  # unspecified: float64
        assert len(stub.GradientFlow(request, timeout=10).grad_rms) == 3


def test_flow_command_tables_and_plot(
    server: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = ["--target", f"127.0.0.1:{server.port}"]
    sizes = ["--depth", "3", "--width", "8", "--batch", "4"]
    png = tmp_path / "flow.png"
    argv = ["flow", "sigmoid", "relu", *sizes, "--init", "he_normal", "xavier_uniform"]
    assert cli.main([*argv, "--plot", str(png), *target]) == 0
    out = capsys.readouterr().out
    assert out.count("ratio grad_rms[0] / grad_rms[3]:") == 4
    assert "relu (xavier_uniform), depth 3, width 8, batch 4" in out
    lines = out.splitlines()
    header = lines.index("sigmoid (he_normal), depth 3, width 8, batch 4")
    assert lines[header + 1].split() == ["layer", "act_rms", "grad_rms", "saturated", "dead"]
    assert [line.split()[0] for line in lines[header + 2 : header + 6]] == ["0", "1", "2", "3"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["flow", "softmax", *sizes, *target]) == 1
    assert "INVALID_ARGUMENT: function" in capsys.readouterr().err


def test_flow_plot_without_matplotlib(
    server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    target = ["--target", f"127.0.0.1:{server.port}"]
    assert cli.main(["flow", "tanh", "--depth", "2", "--plot", "x.png", *target]) == 2
    assert "pip install '/path/to/actgrad[plot]'" in capsys.readouterr().err
