"""`actgrad export-triton`: every exported model loads in onnxruntime and matches the
service; every config.pbtxt parses with our model-config message and Triton's own, and
agrees with its ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as triton_config

from actgrad import Client
from actgrad.cli import main as cli_main
from actgrad_server import catalog
from actgrad_server.app import ActgradServer
from actgrad_server.oip import model_config_pb2 as mc
from actgrad_server.oip import model_table as models
from actgrad_server.triton_export import export

_ONNX_TYPES = {
    mc.TYPE_FP32: onnx.TensorProto.FLOAT,
    mc.TYPE_FP64: onnx.TensorProto.DOUBLE,
    mc.TYPE_FP16: onnx.TensorProto.FLOAT16,
}
# float32 graphs run by a fresh session (default optimisation level) against the
# service's: same formulas, fusions may differ by an ulp or two.
TOLERANCE = {"float32": {"rtol": 2e-6, "atol": 1e-7}, "float64": {"rtol": 1e-13, "atol": 1e-15}}


@pytest.fixture(scope="module")
def v1(server: ActgradServer) -> Any:
    with Client(f"127.0.0.1:{server.port}", timeout=30.0) as client:
        yield client


def _config(directory: Path, name: str) -> mc.ModelConfig:
    text = (directory / name / "config.pbtxt").read_text(encoding="utf-8")
    config = text_format.Parse(text, mc.ModelConfig())
    # Triton's own message reads the same text to the same bytes.
    theirs = text_format.Parse(text, triton_config.ModelConfig())
    assert theirs.SerializeToString(deterministic=True) == config.SerializeToString(
        deterministic=True
    )
    return config


def _check_against_graph(config: mc.ModelConfig, model: onnx.ModelProto, rank: int) -> None:
    assert config.backend == "onnxruntime" and config.max_batch_size == 0
    graph_inputs = {i.name: i for i in model.graph.input}
    graph_outputs = {o.name: o for o in model.graph.output}
    assert [i.name for i in config.input] == list(graph_inputs)
    assert [o.name for o in config.output] == list(graph_outputs)
    # The exported graph needs every input (the service defaults grad_output to ones).
    assert not any(i.optional for i in config.input)
    for tensor in [*config.input, *config.output]:
        info = graph_inputs.get(tensor.name) or graph_outputs[tensor.name]
        assert info.type.tensor_type.elem_type == _ONNX_TYPES[tensor.data_type]
        assert len(info.type.tensor_type.shape.dim) == len(tensor.dims)
        if tensor.name not in ("slope", "grad_slope"):
            assert list(tensor.dims) == [-1] * rank


def _run(directory: Path, name: str, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    session = ort.InferenceSession(
        str(directory / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    input_names = [i.name for i in session.get_inputs()]
    assert sorted(input_names) == sorted(feeds)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _compare(
    directory: Path,
    v1: Any,
    function: catalog.Function,
    dtype: str,
    params: dict[str, Any],
    slope_shape: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 4, size=(3, 4)).astype(dtype)
    g = rng.uniform(-2, 2, size=(3, 4)).astype(dtype)
    extra: dict[str, np.ndarray[Any, Any]] = {}
    if function.name == "prelu":
        extra["slope"] = rng.uniform(0, 1, size=slope_shape).astype(dtype)
    tolerance = TOLERANCE[dtype]
    forward = _run(directory, function.name, {"x": x, **extra})
    expected_y = v1.activate(x, function.name, **params, **extra)
    assert forward["y"].dtype == x.dtype and forward["y"].shape == x.shape
    np.testing.assert_allclose(forward["y"], expected_y, **tolerance)
    gradient = _run(directory, function.name + "_grad", {"x": x, "grad_output": g, **extra})
    expected = v1.vjp(x, function.name, grad_output=g, **params, **extra)
    np.testing.assert_allclose(gradient["grad_input"], expected.grad_input, **tolerance)
    for name, value in expected.grad_params.items():
        assert gradient[f"grad_{name}"].shape == value.shape
        np.testing.assert_allclose(gradient[f"grad_{name}"], value, **tolerance)


def test_every_function_exports_and_matches_the_service(tmp_path: Path, v1: Any) -> None:
    written = export(tmp_path, dtype="float32", rank=2)
    assert sorted(written) == sorted(m.name for m in models.MODELS)
    for name in written:
        model = onnx.load(str(tmp_path / name / "1" / "model.onnx"))
        onnx.checker.check_model(model, full_check=True)
        _check_against_graph(_config(tmp_path, name), model, rank=2)
    for function in catalog.CATALOG:
        _compare(tmp_path, v1, function, "float32", {}, (1,))


def test_baked_parameters_and_float64_through_the_command(tmp_path: Path, v1: Any) -> None:
    status = cli_main(
        [
            "export-triton",
            str(tmp_path),
            "--dtype",
            "float64",
            "--functions",
            "leaky_relu",
            "softmax",
            "gelu",
            "prelu",
            "silu",
            "--param",
            "leaky_relu.alpha=0.2",
            "--param",
            "softmax.axis=0",
            "--param",
            "softmax.temperature=0.5",
            "--param",
            "softmax.log=true",
            "--param",
            "gelu.approximate=tanh",
            "--param",
            "swish.beta=2.0",
            "--prelu-slope-shape",
            "4",
        ]
    )
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}{s}"
        for n in ("leaky_relu", "softmax", "gelu", "prelu", "swish")
        for s in ("", "_grad")
    )
    cases = {
        "leaky_relu": {"alpha": 0.2},
        "softmax": {"axis": 0, "temperature": 0.5, "log": True},
        "gelu": {"approximate": "tanh"},
        "prelu": {},
        "swish": {"beta": 2.0},
    }
    for name, params in cases.items():
        _compare(tmp_path, v1, catalog.lookup(name), "float64", params, (4,))
    assert list(_config(tmp_path, "prelu_grad").input[2].dims) == [4]


@pytest.mark.parametrize(
    "argv",
    [
        ["--functions", "no_such_function"],
        ["--param", "leaky_relu.alpha=nan"],
        ["--param", "relu.alpha=0.1"],
        ["--param", "prelu.slope=0.1"],
        ["--rank", "0"],
    ],
)
def test_bad_choices_exit_2_without_writing(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "repo"
    assert cli_main(["export-triton", str(target), *argv]) == 2
    assert "actgrad export-triton:" in capsys.readouterr().err
    assert not target.exists()
