"""The OIP servicer called in-process (no sockets): decoding, validation, status codes."""

from __future__ import annotations

from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from _context import Aborted, FakeContext

from actgrad_server import catalog
from actgrad_server.config import Limits
from actgrad_server.engine import Engine
from actgrad_server.oip import grpc_predict_v2_pb2 as pb
from actgrad_server.oip import model_table as models
from actgrad_server.oip.servicer import OipServicer

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=1000, max_rank=4, max_concurrent_rpcs=4)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=32)


@pytest.fixture(scope="module")
def servicer(engine: Engine) -> OipServicer:
    return OipServicer(engine, LIMITS)


def raw_request(model: str, **inputs: np.ndarray[Any, Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=models.datatype_of(array.dtype), shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray[Any, Any]]:
    assert len(response.raw_output_contents) == len(response.outputs)
    assert not any(o.HasField("contents") for o in response.outputs)
    return {
        o.name: np.frombuffer(raw, dtype=models.DATATYPES[o.datatype]).reshape(tuple(o.shape))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def infer(servicer: OipServicer, request: pb.ModelInferRequest) -> dict[str, Any]:
    return outputs(servicer.ModelInfer(request, FakeContext()))  # type: ignore[arg-type]


def abort_code(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as info:
        call(request, FakeContext())
    return info.value.code, info.value.details


def bind(name: str, x: np.ndarray[Any, Any], **params: Any) -> catalog.Call:
    return catalog.bind(catalog.lookup(name), params, x_shape=x.shape, x_dtype=x.dtype)


def test_every_function_and_gradient_is_a_model() -> None:
    names = {m.name for m in models.MODELS}
    for function in catalog.CATALOG:
        assert function.name in names and function.name + "_grad" in names
    assert models.lookup_model("silu") is models.lookup_model("swish")
    assert models.lookup_model("silu_grad").gradient


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_typed_contents_equal_raw_contents(
    servicer: OipServicer, engine: Engine, datatype: str
) -> None:
    x = np.linspace(-3, 3, 6, dtype=models.DATATYPES[datatype]).reshape(2, 3)
    typed = pb.ModelInferRequest(model_name="gelu")
    tensor = typed.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    getattr(tensor.contents, field).extend(x.ravel().tolist())
    y_typed = infer(servicer, typed)["y"]
    y_raw = infer(servicer, raw_request("gelu", x=x))["y"]
    assert y_typed.dtype == x.dtype and y_typed.shape == (2, 3)
    np.testing.assert_array_equal(y_typed, y_raw)
    np.testing.assert_array_equal(y_raw, engine.activate(bind("gelu", x), x))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_16_bit_floats_travel_raw_and_come_back_in_their_dtype(
    servicer: OipServicer, engine: Engine, dtype: Any
) -> None:
    x = np.linspace(-2, 2, 8).astype(dtype).reshape(2, 2, 2)
    y = infer(servicer, raw_request("sigmoid", x=x))["y"]
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    np.testing.assert_array_equal(y, engine.activate(bind("sigmoid", x), x))


def test_16_bit_typed_contents_are_refused(servicer: OipServicer) -> None:
    request = pb.ModelInferRequest(model_name="relu")
    request.inputs.add(name="x", datatype="FP16", shape=[2]).contents.fp32_contents.extend([1, 2])
    code, details = abort_code(servicer.ModelInfer, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in details


@pytest.mark.parametrize("shape", [(), (5,), (1, 2, 3), (0, 3)])
def test_the_shape_comes_back_as_sent(servicer: OipServicer, shape: tuple[int, ...]) -> None:
    x = np.full(shape, -0.5, dtype=np.float64)
    result = infer(servicer, raw_request("leaky_relu", x=x))["y"]
    assert result.shape == shape and result.dtype == np.float64
    np.testing.assert_allclose(result, np.full(shape, -0.005), rtol=1e-15)


def test_gradient_defaults_grad_output_to_ones(servicer: OipServicer, engine: Engine) -> None:
    x = np.linspace(-2, 2, 5)
    g = np.array([1.0, 2.0, 0.5, -1.0, 3.0])
    ones = infer(servicer, raw_request("tanh_grad", x=x))["grad_input"]
    scaled = infer(servicer, raw_request("tanh_grad", x=x, grad_output=g))["grad_input"]
    np.testing.assert_allclose(ones, 1 - np.tanh(x) ** 2, rtol=1e-13)
    np.testing.assert_allclose(scaled, g * ones, rtol=1e-13)


def test_prelu_slope_is_an_input_and_its_gradient_an_output(
    servicer: OipServicer, engine: Engine
) -> None:
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    g = np.full_like(x, 2.0)
    result = infer(servicer, raw_request("prelu_grad", x=x, grad_output=g, slope=slope))
    expected = engine.gradient(bind("prelu", x, slope=slope), x, g)
    assert list(result) == ["grad_input", "grad_slope"]
    np.testing.assert_array_equal(result["grad_input"], expected.grad_input)
    np.testing.assert_array_equal(result["grad_slope"], expected.grad_params["slope"])
    assert result["grad_slope"].shape == (3,)


def test_request_parameters_reach_the_function(servicer: OipServicer) -> None:
    x = np.array([[1.0, 2.0], [3.0, 5.0]])
    request = raw_request("softmax", x=x)
    request.parameters["axis"].int64_param = 0
    request.parameters["temperature"].double_param = 2.0
    request.parameters["log"].bool_param = True
    request.parameters["priority"].uint64_param = 1  # a scheduling hint, ignored
    y = infer(servicer, request)["y"]
    shifted = x / 2.0
    expected = shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(y, expected, rtol=1e-13)


def test_requested_outputs_select_and_order(servicer: OipServicer) -> None:
    x = np.array([-1.0, 1.0])
    request = raw_request("prelu_grad", x=x, slope=np.array([0.5]))
    request.outputs.add(name="grad_slope")
    result = infer(servicer, request)
    assert list(result) == ["grad_slope"]
    np.testing.assert_allclose(result["grad_slope"], [-1.0])


def test_response_echoes_id_and_canonical_name(servicer: OipServicer) -> None:
    request = raw_request("silu", x=np.zeros(2))
    request.id = "request-7"
    response = servicer.ModelInfer(request, FakeContext())  # type: ignore[arg-type]
    assert (response.id, response.model_name, response.model_version) == ("request-7", "swish", "1")


def test_unknown_model_and_version_are_not_found(servicer: OipServicer) -> None:
    code, details = abort_code(servicer.ModelInfer, raw_request("gelu_gard", x=np.zeros(1)))
    assert code is grpc.StatusCode.NOT_FOUND and "gelu_grad" in details
    for call, request in [
        (servicer.ModelMetadata, pb.ModelMetadataRequest(name="nope")),
        (servicer.ModelReady, pb.ModelReadyRequest(name="nope")),
        (servicer.ModelConfig, pb.ModelConfigRequest(name="nope")),
        (servicer.ModelReady, pb.ModelReadyRequest(name="gelu", version="2")),
    ]:
        assert abort_code(call, request)[0] is grpc.StatusCode.NOT_FOUND


def _bad_requests() -> list[tuple[str, pb.ModelInferRequest, str]]:
    x = np.zeros(4, dtype=np.float32)
    cases = []
    request = raw_request("relu", x=x)
    request.raw_input_contents[0] = b"\x00" * 15
    cases.append(("short raw", request, "raw_input_contents[0]"))
    request = raw_request("relu", x=x)
    request.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    cases.append(("raw and typed", request, "inputs[0].contents"))
    request = raw_request("relu", x=x)
    request.raw_input_contents.append(b"")
    cases.append(("extra raw entry", request, "raw_input_contents"))
    request = raw_request("relu", y=x)
    cases.append(("unknown input", request, "inputs[0].name"))
    request = raw_request("relu", x=x)
    request.inputs[0].datatype = "INT32"
    cases.append(("datatype", request, "inputs[0].datatype"))
    request = raw_request("relu", x=x)
    request.inputs[0].shape[:] = [2, -2]
    cases.append(("negative dim", request, "inputs[0].shape"))
    request = raw_request("relu", x=np.zeros(1001, dtype=np.float32))
    cases.append(("too many elements", request, "inputs[0].shape"))
    request = raw_request("relu", x=np.zeros((1,) * 5, dtype=np.float32))
    cases.append(("rank over the limit", request, "inputs[0].shape"))
    request = pb.ModelInferRequest(model_name="relu")
    request.inputs.add(name="x", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1, 2])
    cases.append(("typed count", request, "fp32_contents"))
    request = pb.ModelInferRequest(model_name="relu")
    request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp32_contents.append(1)
    cases.append(("typed field of another datatype", request, "contents.fp32_contents"))
    cases.append(("missing slope", raw_request("prelu", x=x), "'slope' is required"))
    request = raw_request("prelu", x=x, slope=np.zeros(3, dtype=np.float32))
    cases.append(("slope not broadcastable", request, "slope"))
    request = raw_request("prelu", x=x, slope=np.zeros(1, dtype=np.float64))
    cases.append(("slope dtype", request, "slope"))
    request = raw_request("tanh_grad", x=x, grad_output=np.zeros(3, dtype=np.float32))
    cases.append(("grad_output shape", request, "grad_output"))
    request = raw_request("tanh_grad", x=x, grad_output=np.zeros(4))
    cases.append(("grad_output datatype", request, "grad_output"))
    request = raw_request("softmax", x=x)
    request.parameters["temperature"].double_param = 0.0
    cases.append(("temperature", request, "parameters['temperature']"))
    request = raw_request("softmax", x=x)
    request.parameters["axis"].int64_param = 1
    cases.append(("axis", request, "parameters['axis']"))
    request = raw_request("gelu", x=x)
    request.parameters["approximate"].string_param = "erf"
    cases.append(("choice", request, "parameters['approximate']"))
    request = raw_request("relu", x=x)
    request.parameters["alpha"].double_param = 0.1
    cases.append(("unknown parameter", request, "parameters['alpha']"))
    request = raw_request("leaky_relu", x=x)
    request.parameters["alpha"].CopyFrom(pb.InferParameter())
    cases.append(("empty parameter", request, "parameters['alpha']"))
    request = raw_request("relu", x=x)
    request.outputs.add(name="grad_input")
    cases.append(("unknown output", request, "outputs[0].name"))
    return cases


@pytest.mark.parametrize(
    ("request_", "field"),
    [(request, field) for _, request, field in _bad_requests()],
    ids=[case for case, _, _ in _bad_requests()],
)
def test_bad_requests_are_invalid_argument(
    servicer: OipServicer, request_: pb.ModelInferRequest, field: str
) -> None:
    code, details = abort_code(servicer.ModelInfer, request_)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in details


def test_metadata_and_config_describe_the_model(servicer: OipServicer) -> None:
    context: Any = FakeContext()
    metadata = servicer.ModelMetadata(pb.ModelMetadataRequest(name="prelu_grad"), context)
    assert [t.name for t in metadata.inputs] == ["x", "grad_output", "slope"]
    assert [t.name for t in metadata.outputs] == ["grad_input", "grad_slope"]
    assert all(list(t.shape) == [-1] for t in [*metadata.inputs, *metadata.outputs])
    assert list(metadata.versions) == ["1"]
    config = servicer.ModelConfig(pb.ModelConfigRequest(name="softmax_grad"), context).config
    assert config.backend == "onnxruntime" and config.max_batch_size == 0
    assert [(i.name, i.optional) for i in config.input] == [("x", False), ("grad_output", True)]
    ready = servicer.ServerReady(pb.ServerReadyRequest(), context)
    assert ready.ready
    server = servicer.ServerMetadata(pb.ServerMetadataRequest(), context)
    assert server.name == "actgrad" and server.version


def test_server_ready_follows_the_readiness_callback(engine: Engine) -> None:
    state = {"ready": False}
    servicer = OipServicer(engine, LIMITS, is_ready=lambda: state["ready"])
    context: Any = FakeContext()
    assert not servicer.ServerReady(pb.ServerReadyRequest(), context).ready
    assert not servicer.ModelReady(pb.ModelReadyRequest(name="relu"), context).ready
    state["ready"] = True
    assert servicer.ServerReady(pb.ServerReadyRequest(), context).ready
    assert servicer.ServerLive(pb.ServerLiveRequest(), context).live
