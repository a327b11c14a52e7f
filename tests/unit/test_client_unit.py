"""The SDK without a network: request building, response decoding, errors, dataclasses.

The shared base is exercised directly; `Client` and `AsyncClient` run over fake
channels (no sockets) to check that they only add I/O: deadlines, error mapping,
lifetime.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.message import Message

import actgrad
from actgrad import _shm, errors
from actgrad import wire as codec
from actgrad._client import _BaseClient
from actgrad.v1 import activation_pb2, tensor_pb2

BF16 = np.dtype(ml_dtypes.bfloat16)
SERVED = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]


def make_base(**kwargs: Any) -> _BaseClient:
    options: dict[str, Any] = {
        "timeout": 30.0,
        "max_message_bytes": 1 << 20,
        "options": None,
    }
    options.update(kwargs)
    return _BaseClient("localhost:50051", **options)


def wire(array: npt.NDArray[Any]) -> tensor_pb2.Tensor:
    return codec.encode(np.asarray(array))


def read(tensor: tensor_pb2.Tensor) -> npt.NDArray[Any]:
    return codec.decode(tensor)


# -- request building ------------------------------------------------------------


@pytest.mark.parametrize("dtype", SERVED, ids=str)
def test_activate_request_keeps_dtype_and_shape(dtype: np.dtype[Any]) -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3).astype(dtype)
    rpc = make_base()._activate_rpc(x, "gelu", {"approximate": "tanh"})
    assert rpc.method == "Activate"
    request = rpc.request
    assert isinstance(request, activation_pb2.ActivateRequest)
    assert request.function == "gelu"
    assert request.input.dtype == codec.dtype_info(dtype).wire
    assert list(request.input.shape) == [2, 3]
    np.testing.assert_array_equal(read(request.input), x)
    assert request.params["approximate"].text == "tanh"


def test_params_map_each_python_type_to_its_oneof() -> None:
    x = np.zeros(3, dtype=np.float32)
    params = {
        "flag": True,
        "np_flag": np.bool_(False),
        "count": 3,
        "np_count": np.int32(-2),
        "alpha": 0.1,
        "np_alpha": np.float32(0.5),
        "mode": "tanh",
    }
    request = make_base()._activate_rpc(x, "f", params).request
    assert isinstance(request, activation_pb2.ActivateRequest)
    kinds = {name: value.WhichOneof("kind") for name, value in request.params.items()}
    assert kinds == {
        "flag": "flag",
        "np_flag": "flag",
        "count": "integer",
        "np_count": "integer",
        "alpha": "number",
        "np_alpha": "number",
        "mode": "text",
    }
    assert request.params["flag"].flag is True
    assert request.params["np_flag"].flag is False
    assert request.params["count"].integer == 3
    assert request.params["np_count"].integer == -2
    assert request.params["alpha"].number == 0.1
    assert request.params["np_alpha"].number == 0.5


@pytest.mark.parametrize("dtype", SERVED, ids=str)
@pytest.mark.parametrize(
    "slope",
    [[0.25, 0.5], (0.25, 0.5), np.array([0.25, 0.5]), np.array([0.25, 0.5], dtype=">f4"), [1, 2]],
    ids=["list", "tuple", "float64", "big-endian", "ints"],
)
def test_tensor_params_follow_the_input_dtype(dtype: np.dtype[Any], slope: Any) -> None:
    x = np.ones((4, 2), dtype=dtype)
    request = make_base()._activate_rpc(x, "prelu", {"slope": slope}).request
    assert isinstance(request, activation_pb2.ActivateRequest)
    sent = read(request.params["slope"].tensor)
    assert sent.dtype == dtype
    np.testing.assert_array_equal(sent.astype(np.float64), np.asarray(slope, dtype=np.float64))


@pytest.mark.parametrize("value", [None, {"a": 1}, b"bytes", 1 + 2j, object()])
def test_unsupported_param_types_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="parameter 'p'"):
        make_base()._activate_rpc([1.0], "f", {"p": value})


@pytest.mark.parametrize("value", [[True, False], ["a"], [1 + 2j]])
def test_non_numeric_tensor_params_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="parameter 'slope'"):
        make_base()._activate_rpc([1.0], "prelu", {"slope": value})


def test_a_string_in_a_companion_tensor_is_named() -> None:
    with pytest.raises(TypeError, match=r"^parameter 'slope': expected numbers, got str 'a'$"):
        make_base()._activate_rpc([1.0, -1.0], "prelu", {"slope": [0.1, "a"]})
    with pytest.raises(TypeError, match=r"^grad_output: expected numbers, got None$"):
        make_base()._gradient_rpc([1.0], "relu", {}, grad_output=[None], return_output=False)


def test_int_param_outside_int64_is_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        make_base()._activate_rpc([1.0], "f", {"n": 2**63})


@pytest.mark.parametrize(
    "x",
    [np.array([1, 2], dtype=np.int64), np.array([1], dtype=np.uint8), [1, 2], 3, [True]],
    ids=["int64", "uint8", "int-list", "int-scalar", "bool-list"],
)
def test_integer_and_bool_inputs_raise_type_error(x: Any) -> None:
    base = make_base()
    with pytest.raises(TypeError, match="x"):
        base._activate_rpc(x, "relu", {})
    with pytest.raises(TypeError):
        base._gradient_rpc(x, "relu", {}, grad_output=None, return_output=False)
    with pytest.raises(TypeError):
        base._softmax_rpc(x, axis=-1, temperature=1.0, log=False)


def sent_input(x: Any) -> npt.NDArray[Any]:
    request = make_base()._activate_rpc(x, "relu", {}).request
    assert isinstance(request, activation_pb2.ActivateRequest)
    return read(request.input)


def test_lists_scalars_big_endian_and_strided_inputs_are_accepted() -> None:
    listed = sent_input([[1.0, -2.0]])
    assert listed.dtype == np.float64 and listed.shape == (1, 2)
    scalar = sent_input(1.5)
    assert scalar.shape == () and scalar == 1.5
    big = sent_input(np.array([1.0, 2.0], dtype=">f8"))
    assert big.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(big, [1.0, 2.0])
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2].T
    np.testing.assert_array_equal(sent_input(strided), strided)


def test_function_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="function"):
        make_base()._activate_rpc([1.0], 3, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("x_dtype", SERVED, ids=str)
def test_grad_output_is_converted_to_the_input_dtype(x_dtype: np.dtype[Any]) -> None:
    x = np.array([-1.0, 0.0, 2.0]).astype(x_dtype)
    g = np.array([1.0, 0.5, 2.0], dtype=np.float64)
    rpc = make_base()._gradient_rpc(
        x, "leaky_relu", {"alpha": 0.1}, grad_output=g, return_output=True
    )
    request = rpc.request
    assert rpc.method == "Gradient"
    assert isinstance(request, activation_pb2.GradientRequest)
    assert request.function == "leaky_relu"
    assert request.return_output is True
    assert request.params["alpha"].number == 0.1
    sent = read(request.grad_output)
    assert sent.dtype == x_dtype
    np.testing.assert_array_equal(sent.astype(np.float64), g)


def test_grad_output_shape_is_left_to_the_server() -> None:
    request = (
        make_base()
        ._gradient_rpc(
            np.zeros((2, 2)), "tanh", {}, grad_output=[1.0, 2.0, 3.0], return_output=False
        )
        .request
    )
    assert isinstance(request, activation_pb2.GradientRequest)
    assert list(request.grad_output.shape) == [3]


def test_absent_grad_output_is_not_sent() -> None:
    request = (
        make_base()._gradient_rpc([1.0], "tanh", {}, grad_output=None, return_output=False).request
    )
    assert isinstance(request, activation_pb2.GradientRequest)
    assert not request.HasField("grad_output")
    assert request.return_output is False


def test_softmax_request_always_sends_axis_and_temperature() -> None:
    rpc = make_base()._softmax_rpc(np.zeros((2, 3)), axis=-1, temperature=1.0, log=False)
    request = rpc.request
    assert rpc.method == "Softmax"
    assert isinstance(request, activation_pb2.SoftmaxRequest)
    assert request.HasField("axis") and request.axis == -1
    assert request.HasField("temperature") and request.temperature == 1.0
    assert request.log is False
    axis: Any = np.int64(0)  # numpy integers are accepted as axes
    request = make_base()._softmax_rpc([1.0], axis=axis, temperature=2, log=True).request
    assert isinstance(request, activation_pb2.SoftmaxRequest)
    assert (request.axis, request.temperature, request.log) == (0, 2.0, True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"axis": 1.0}, "axis"), ({"axis": True}, "axis"), ({"temperature": "hot"}, "temperature")],
)
def test_softmax_option_types_are_checked(kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"axis": -1, "temperature": 1.0, "log": False}
    options.update(kwargs)
    with pytest.raises(TypeError, match=match):
        make_base()._softmax_rpc([1.0], **options)


# -- response decoding -----------------------------------------------------------


@pytest.mark.parametrize("dtype", SERVED, ids=str)
def test_activate_response_is_decoded_with_dtype_and_shape(dtype: np.dtype[Any]) -> None:
    x = np.array([[-1.0, 2.0]]).astype(dtype)
    rpc = make_base()._activate_rpc(x, "relu", {})
    y = rpc.parse(activation_pb2.ActivateResponse(output=wire(np.maximum(x, 0))))
    assert y.dtype == dtype and y.shape == (1, 2)
    np.testing.assert_array_equal(y.astype(np.float64), [[0.0, 2.0]])


def test_zero_d_input_stays_zero_d() -> None:
    rpc = make_base()._activate_rpc(np.float32(-3.0), "relu", {})
    y = rpc.parse(activation_pb2.ActivateResponse(output=wire(np.array(0.0, dtype=np.float32))))
    assert y.shape == () and y.dtype == np.float32


def test_gradient_response_with_params_and_output() -> None:
    x = np.array([-1.0, 2.0], dtype=np.float32)
    rpc = make_base()._gradient_rpc(
        x, "prelu", {"slope": [0.25]}, grad_output=None, return_output=True
    )
    response = activation_pb2.GradientResponse(
        grad_input=wire(np.array([0.25, 1.0], dtype=np.float32)),
        output=wire(np.array([-0.25, 2.0], dtype=np.float32)),
    )
    response.grad_params["slope"].CopyFrom(wire(np.array([-1.0], dtype=np.float32)))
    result = rpc.parse(response)
    assert isinstance(result, actgrad.VjpResult)
    np.testing.assert_array_equal(result.grad_input, [0.25, 1.0])
    assert result.grad_input.dtype == np.float32
    assert list(result.grad_params) == ["slope"]
    np.testing.assert_array_equal(result.grad_params["slope"], [-1.0])
    assert result.output is not None
    np.testing.assert_array_equal(result.output, [-0.25, 2.0])


def test_gradient_response_without_output_gives_none() -> None:
    x = np.array([1.0])
    rpc = make_base()._gradient_rpc(x, "tanh", {}, grad_output=None, return_output=False)
    result = rpc.parse(activation_pb2.GradientResponse(grad_input=wire(np.array([0.42]))))
    assert result.output is None and result.grad_params == {}


@pytest.mark.parametrize(
    "output",
    [
        np.array([1.0, 2.0], dtype=np.float32),  # wrong dtype
        np.array([1.0, 2.0, 3.0]),  # wrong shape
    ],
    ids=["dtype", "shape"],
)
def test_response_of_another_dtype_or_shape_is_an_internal_error(
    output: npt.NDArray[Any],
) -> None:
    rpc = make_base()._activate_rpc(np.array([1.0, 2.0]), "relu", {})
    with pytest.raises(actgrad.InternalError, match="malformed response") as info:
        rpc.parse(activation_pb2.ActivateResponse(output=wire(output)))
    assert info.value.code is grpc.StatusCode.INTERNAL


def test_undecodable_response_is_an_internal_error() -> None:
    rpc = make_base()._activate_rpc(np.array([1.0]), "relu", {})
    bad = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT64, shape=[1], data=b"\x00" * 3)
    with pytest.raises(actgrad.InternalError) as info:
        rpc.parse(activation_pb2.ActivateResponse(output=bad))
    assert isinstance(info.value.__cause__, codec.TensorError)


# -- catalog and server info -----------------------------------------------------


def catalog_response() -> activation_pb2.ListFunctionsResponse:
    response = activation_pb2.ListFunctionsResponse()
    gelu = response.functions.add(
        name="gelu",
        aliases=["GELU"],
        summary="Gaussian error linear unit.",
        formula="x * Phi(x)",
        formula_latex=r"x \Phi(x)",
        gradient_note="Phi(x) + x phi(x)",
        elementwise=True,
        dtypes=[tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_BFLOAT16],
    )
    approximate = gelu.params.add(
        name="approximate",
        type=activation_pb2.PARAM_TYPE_STRING,
        description="none or tanh",
        choices=["none", "tanh"],
    )
    approximate.default.text = "none"
    prelu = response.functions.add(name="prelu", elementwise=True)
    prelu.params.add(name="slope", type=activation_pb2.PARAM_TYPE_TENSOR, required=True)
    elu = response.functions.add(name="elu")
    alpha = elu.params.add(
        name="alpha", type=activation_pb2.PARAM_TYPE_NUMBER, minimum=0.0, minimum_exclusive=True
    )
    alpha.default.number = 1.0
    limit = elu.params.add(name="n", type=activation_pb2.PARAM_TYPE_INTEGER, maximum=8)
    limit.default.integer = 3
    inplace = elu.params.add(name="inplace", type=activation_pb2.PARAM_TYPE_BOOL)
    inplace.default.flag = False
    weights = elu.params.add(name="w", type=activation_pb2.PARAM_TYPE_TENSOR)
    weights.default.tensor.CopyFrom(wire(np.array([0.5, 0.25], dtype=np.float32)))
    return response


def test_list_functions_response_becomes_frozen_dataclasses() -> None:
    rpc = make_base()._functions_rpc()
    assert rpc.method == "ListFunctions"
    assert isinstance(rpc.request, activation_pb2.ListFunctionsRequest)
    functions = rpc.parse(catalog_response())
    assert [f.name for f in functions] == ["gelu", "prelu", "elu"]
    gelu, prelu, elu = functions
    assert isinstance(gelu, actgrad.FunctionInfo)
    assert gelu.aliases == ["GELU"]
    assert (gelu.summary, gelu.formula, gelu.formula_latex) == (
        "Gaussian error linear unit.",
        "x * Phi(x)",
        r"x \Phi(x)",
    )
    assert gelu.gradient_note == "Phi(x) + x phi(x)"
    assert gelu.elementwise is True and elu.elementwise is False
    assert gelu.dtypes == ["float32", "bfloat16"]
    assert gelu.params == [
        actgrad.ParamInfo(
            name="approximate",
            type="string",
            description="none or tanh",
            default="none",
            choices=["none", "tanh"],
        )
    ]
    (slope,) = prelu.params
    assert (slope.type, slope.required, slope.default) == ("tensor", True, None)
    alpha, n, inplace, w = elu.params
    assert (alpha.type, alpha.default, alpha.minimum, alpha.minimum_exclusive) == (
        "number",
        1.0,
        0.0,
        True,
    )
    assert alpha.maximum is None
    assert (n.type, n.default, n.minimum, n.maximum) == ("integer", 3, None, 8.0)
    assert (inplace.type, inplace.default) == ("bool", False)
    assert (w.type, w.default) == ("tensor", [0.5, 0.25])
    with pytest.raises(AttributeError):
        gelu.name = "other"  # type: ignore[misc]


def test_unknown_enum_values_from_a_newer_server_are_kept_readable() -> None:
    response = activation_pb2.ListFunctionsResponse()
    function = response.functions.add(name="future", dtypes=[99])
    function.params.add(name="p", type=42)
    (info,) = make_base()._functions_rpc().parse(response)
    assert info.dtypes == ["dtype_99"]
    assert info.params[0].type == "42"


def test_server_info_response_becomes_a_dataclass() -> None:
    rpc = make_base()._server_info_rpc()
    assert rpc.method == "GetServerInfo"
    response = activation_pb2.GetServerInfoResponse(
        version="0.1.0",
        onnx_opset=21,
        onnxruntime_version="1.20.1",
        execution_providers=["CPUExecutionProvider"],
        limits=activation_pb2.Limits(
            max_message_bytes=64 << 20, max_elements=1 << 24, max_rank=8, max_concurrent_rpcs=64
        ),
    )
    info = rpc.parse(response)
    assert info == actgrad.ServerInfo(
        version="0.1.0",
        onnx_opset=21,
        onnxruntime_version="1.20.1",
        execution_providers=["CPUExecutionProvider"],
        limits=actgrad.Limits(
            max_message_bytes=64 << 20, max_elements=1 << 24, max_rank=8, max_concurrent_rpcs=64
        ),
    )


def test_public_api_has_no_protobuf_types() -> None:
    for name in actgrad.__all__:
        obj = getattr(actgrad, name)
        assert obj.__doc__, name
        if isinstance(obj, type):
            assert not issubclass(obj, Message), name


# -- options ---------------------------------------------------------------------


def test_channel_options_carry_message_limits_and_caller_overrides() -> None:
    base = make_base(
        max_message_bytes=1234,
        options=[("grpc.max_receive_message_length", 99), ("grpc.primary_user_agent", "t")],
    )
    options = dict(base._channel_options)
    # gRPC's transparent retries stay on (the client retries UNAVAILABLE itself).
    assert options.pop("grpc.enable_retries") == 1
    # A restarted server is reconnected to within a second (gRPC's backoff: 120 s).
    assert options.pop("grpc.initial_reconnect_backoff_ms") == 100
    assert options.pop("grpc.max_reconnect_backoff_ms") == 1000
    assert options == {
        "grpc.max_send_message_length": 1234,
        "grpc.max_receive_message_length": 99,
        "grpc.primary_user_agent": "t",
    }


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": 0}, ValueError),
        ({"timeout": -1.0}, ValueError),
        ({"timeout": float("inf")}, ValueError),
        ({"timeout": "30"}, TypeError),
        ({"max_message_bytes": 0}, ValueError),
        ({"max_message_bytes": 1.5}, TypeError),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        make_base(**kwargs)


def test_per_call_timeout_overrides_the_default() -> None:
    base = make_base(timeout=12.5)
    assert base.timeout == 12.5
    # A deadline is a point in time (monotonic), shared by every attempt of a call.
    now = time.monotonic()
    assert now + 12.4 < base._deadline(None) <= time.monotonic() + 12.5
    assert now + 1.9 < base._deadline(2) <= time.monotonic() + 2.0
    with pytest.raises(ValueError):
        base._deadline(0.0)


# -- errors ----------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    """What a sync call raises: an RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


FAMILIES = [
    (grpc.StatusCode.INVALID_ARGUMENT, actgrad.InvalidArgumentError),
    (grpc.StatusCode.NOT_FOUND, actgrad.NotFoundError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, actgrad.ResourceExhaustedError),
    (grpc.StatusCode.UNAUTHENTICATED, actgrad.UnauthenticatedError),
    (grpc.StatusCode.PERMISSION_DENIED, actgrad.PermissionDeniedError),
    (grpc.StatusCode.UNAVAILABLE, actgrad.UnavailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, actgrad.DeadlineExceededError),
    (grpc.StatusCode.CANCELLED, actgrad.CallCancelledError),
    (grpc.StatusCode.UNIMPLEMENTED, actgrad.UnimplementedError),
    (grpc.StatusCode.INTERNAL, actgrad.InternalError),
    (grpc.StatusCode.UNKNOWN, actgrad.UnexpectedStatusError),
    (grpc.StatusCode.ABORTED, actgrad.UnexpectedStatusError),
]


@pytest.mark.parametrize(("code", "cls"), FAMILIES, ids=[c.name for c, _ in FAMILIES])
def test_sync_and_aio_errors_map_to_their_family(
    code: grpc.StatusCode, cls: type[actgrad.ActgradError]
) -> None:
    aio_error = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom", debug_error_string=""
    )
    for raw in (FakeRpcError(code, "boom"), aio_error):
        mapped = errors.from_grpc_error(raw)
        assert type(mapped) is cls
        assert isinstance(mapped, actgrad.ActgradError)
        assert mapped.code is code
        assert mapped.details == "boom"
        assert str(mapped) == f"{code.name}: boom"


def test_rpc_error_without_status_maps_to_unknown() -> None:
    mapped = errors.from_grpc_error(grpc.RpcError("interceptor failed"))
    assert type(mapped) is actgrad.UnexpectedStatusError
    assert mapped.code is grpc.StatusCode.UNKNOWN
    assert mapped.details == "interceptor failed"


def test_errors_survive_pickling() -> None:
    error = actgrad.UnexpectedStatusError("x", code=grpc.StatusCode.ABORTED)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is actgrad.UnexpectedStatusError
    assert (copy.code, copy.details) == (grpc.StatusCode.ABORTED, "x")


# -- the two clients over fake channels (no sockets) -----------------------------

Handler = Callable[[str, Message], Message]


class FakeChannel:
    """Records calls and answers them through `handler`, serializing both ways."""

    def __init__(self, handler: Handler, *, asynchronous: bool) -> None:
        self.handler = handler
        self.asynchronous = asynchronous
        self.calls: list[tuple[str, Message, float | None]] = []
        self.waits: list[bool] = []
        self.closed = 0

    def unary_unary(
        self,
        path: str,
        request_serializer: Callable[[Message], bytes],
        response_deserializer: Callable[[bytes], Message],
        _registered_method: bool = False,
    ) -> Callable[..., Any]:
        def call(
            request: Message, timeout: float | None = None, wait_for_ready: bool = False
        ) -> Message:
            self.calls.append((path, request, timeout))
            self.waits.append(wait_for_ready)
            wire_request = type(request).FromString(request_serializer(request))
            return response_deserializer(self.handler(path, wire_request).SerializeToString())

        async def acall(
            request: Message, timeout: float | None = None, wait_for_ready: bool = False
        ) -> Message:
            return call(request, timeout, wait_for_ready)

        return acall if self.asynchronous else call

    def stream_stream(
        self,
        path: str,
        request_serializer: Callable[[Message], bytes],
        response_deserializer: Callable[[bytes], Message],
        _registered_method: bool = False,
    ) -> Callable[..., Any]:
        # A chunk stream is answered chunk by chunk, as the unary method would.
        unary_path = path.removesuffix("Stream")

        def answer(request: Message) -> Message:
            self.calls.append((path, request, None))
            wire_request = type(request).FromString(request_serializer(request))
            wire = self.handler(unary_path, wire_request).SerializeToString()
            return response_deserializer(wire)

        def call(requests: Any, timeout: float | None = None) -> Any:
            return (answer(request) for request in requests)

        def acall(requests: Any, timeout: float | None = None) -> Any:
            async def responses() -> Any:
                for request in requests:
                    yield answer(request)

            return responses()

        return acall if self.asynchronous else call

    def close(self, grace: float | None = None) -> Any:
        self.closed += 1
        if self.asynchronous:

            async def done() -> None:
                return None

            return done()
        return None


def relu_server(path: str, request: Message) -> Message:
    if path.endswith("/Activate"):
        assert isinstance(request, activation_pb2.ActivateRequest)
        if request.function != "relu":
            raise FakeRpcError(grpc.StatusCode.NOT_FOUND, f"unknown function {request.function!r}")
        x = read(request.input)
        return activation_pb2.ActivateResponse(output=wire(np.maximum(x, 0).astype(x.dtype)))
    if path.endswith("/Gradient"):
        assert isinstance(request, activation_pb2.GradientRequest)
        x = read(request.input)
        g = read(request.grad_output) if request.HasField("grad_output") else np.ones_like(x)
        if g.shape != x.shape:
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "grad_output.shape differs")
        return activation_pb2.GradientResponse(grad_input=wire((g * (x > 0)).astype(x.dtype)))
    if path.endswith("/GetServerInfo"):
        return activation_pb2.GetServerInfoResponse(version="9")
    if path.endswith("/ListFunctions"):
        return catalog_response()
    raise FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, path)


@pytest.fixture
def sync_channel(monkeypatch: pytest.MonkeyPatch) -> FakeChannel:
    channel = FakeChannel(relu_server, asynchronous=False)
    seen: dict[str, Any] = {}

    def insecure_channel(target: str, options: Any = None) -> FakeChannel:
        seen.update(target=target, options=dict(options))
        return channel

    monkeypatch.setattr(grpc, "insecure_channel", insecure_channel)
    channel.seen = seen  # type: ignore[attr-defined]
    return channel


@pytest.fixture
def async_channel(monkeypatch: pytest.MonkeyPatch) -> FakeChannel:
    channel = FakeChannel(relu_server, asynchronous=True)
    monkeypatch.setattr(grpc.aio, "insecure_channel", lambda target, options: channel)
    return channel


def test_client_round_trip_deadlines_and_close(sync_channel: FakeChannel) -> None:
    x = np.array([-1.0, 0.0, 2.0], dtype=ml_dtypes.bfloat16)
    with actgrad.Client("host:1", timeout=7.0, max_message_bytes=4096) as client:
        y = client.activate(x, "relu")
        dx = client.gradient(x, "relu", grad_output=[3.0, 3.0, 3.0], timeout=1.5)
        r = client.vjp(x, "relu")
        assert client.server_info().version == "9"
        assert [f.name for f in client.functions()] == ["gelu", "prelu", "elu"]
    assert y.dtype == BF16 and y.shape == (3,)
    np.testing.assert_array_equal(y.astype(np.float32), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(dx.astype(np.float32), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(r.grad_input.astype(np.float32), [0.0, 0.0, 1.0])
    calls = [(path.rsplit("/", 1)[1], timeout) for path, _, timeout in sync_channel.calls]
    assert [name for name, _ in calls] == [
        "Activate",
        "Gradient",
        "Gradient",
        "GetServerInfo",
        "ListFunctions",
    ]
    # Each call gets what is left of its own deadline.
    for (_, timeout), given in zip(calls, [7.0, 1.5, 7.0, 7.0, 7.0], strict=True):
        assert timeout is not None and given - 0.5 < timeout <= given
    seen = sync_channel.seen  # type: ignore[attr-defined]
    assert seen["target"] == "host:1"
    assert seen["options"]["grpc.max_send_message_length"] == 4096
    assert seen["options"]["grpc.max_receive_message_length"] == 4096
    assert sync_channel.closed == 1 and client.closed
    client.close()
    assert sync_channel.closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        client.activate(x, "relu")


def test_client_raises_typed_errors_from_the_rpc_error(sync_channel: FakeChannel) -> None:
    with actgrad.Client() as client:
        with pytest.raises(actgrad.NotFoundError) as info:
            client.activate([1.0], "relux")
        assert info.value.code is grpc.StatusCode.NOT_FOUND
        assert isinstance(info.value.__cause__, grpc.RpcError)
        with pytest.raises(actgrad.InvalidArgumentError):
            client.gradient([1.0, 2.0], "relu", grad_output=[1.0])
        with pytest.raises(actgrad.UnimplementedError):
            client.softmax([1.0])
        calls = len(sync_channel.calls)
        with pytest.raises(TypeError):
            client.activate([1, 2], "relu")
        assert len(sync_channel.calls) == calls  # refused before any call


async def test_async_client_has_the_same_methods(async_channel: FakeChannel) -> None:
    x = np.array([-1.0, 2.0], dtype=np.float16)
    async with actgrad.AsyncClient("host:1", timeout=3.0) as client:
        y = await client.activate(x, "relu")
        dx = await client.gradient(x, "relu", grad_output=np.array([5.0, 5.0]), timeout=0.5)
        r = await client.vjp(x, "relu")
        info = await client.server_info()
        functions = await client.functions()
        with pytest.raises(actgrad.NotFoundError) as error:
            await client.activate(x, "relux")
        assert error.value.details == "unknown function 'relux'"
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, [0.0, 2.0])
    np.testing.assert_array_equal(dx, [0.0, 5.0])
    np.testing.assert_array_equal(r.grad_input, [0.0, 1.0])
    assert info.version == "9" and len(functions) == 3
    first, second = (t for _, _, t in async_channel.calls[:2])
    assert 2.9 < first <= 3.0 and 0.4 < second <= 0.5  # what is left of the deadline
    # By default no call waits for a server it cannot reach (UNAVAILABLE comes back
    # and is tried again as the client's rules say); wait_for_ready=True waits.
    assert not any(async_channel.waits)
    assert async_channel.closed == 1
    async with actgrad.AsyncClient("host:1", timeout=3.0, wait_for_ready=True) as waiting:
        await waiting.activate(x, "relu")
    assert async_channel.waits[-1] is True
    with pytest.raises(RuntimeError, match="closed"):
        await client.softmax(x)


def test_async_client_made_outside_a_loop_opens_its_channel_in_the_first_one(
    async_channel: FakeChannel,
) -> None:
    client = actgrad.AsyncClient("host:1")

    async def use() -> npt.NDArray[Any]:
        return await client.activate([-1.0, 1.0], "relu")

    np.testing.assert_array_equal(asyncio.run(use()), [0.0, 1.0])
    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(use())
    asyncio.run(client.close())
    assert async_channel.closed == 1


def test_sync_and_async_public_methods_match() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(actgrad.Client) == public(actgrad.AsyncClient)
    assert {"activate", "gradient", "vjp", "softmax", "functions", "server_info", "close"} <= (
        public(actgrad.Client)
    )


# -- shared memory through both clients over fake channels ----------------------


def sharing_server(max_elements: int, *, refuse: bool = False) -> Handler:
    """A fake server that takes shared memory: relu, reading and writing the SDK's
    segments in /dev/shm as the real one does; with `refuse`, a region gets
    FAILED_PRECONDITION (as from a server that cannot open the client's segments)."""

    def handle(path: str, request: Message) -> Message:
        if path.endswith("/GetServerInfo"):
            limits = activation_pb2.Limits(max_elements=max_elements)
            return activation_pb2.GetServerInfoResponse(shared_memory=True, limits=limits)
        tensor = request.input  # type: ignore[attr-defined]
        if tensor.WhichOneof("payload") != "region":
            return relu_server(path, request)
        if refuse:
            raise FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "no such segment here")
        assert isinstance(request, activation_pb2.ActivateRequest)
        if request.function != "relu":
            raise FakeRpcError(grpc.StatusCode.NOT_FOUND, f"unknown function {request.function!r}")
        region, out = tensor.region, request.output_region
        dtype = codec.dtype_info(tensor.dtype).numpy
        with open(os.path.join(_shm.DIRECTORY, region.segment), "r+b") as file:
            file.seek(region.offset)
            x = np.frombuffer(file.read(region.size), dtype=dtype)
            file.seek(out.offset)
            file.write(np.maximum(x, 0).astype(dtype).tobytes())
        response = activation_pb2.ActivateResponse()
        response.output.dtype = tensor.dtype
        response.output.shape[:] = tensor.shape
        response.output.region.CopyFrom(out)
        return response

    return handle


class Blocking:
    """A Client, or an AsyncClient whose calls run to completion on a private loop."""

    def __init__(self, kind: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop() if kind == "async" else None
        cls = actgrad.Client if self._loop is None else actgrad.AsyncClient
        self.client: Any = cls("localhost:1", **options)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        loop = self._loop
        if loop is None or not inspect.iscoroutinefunction(method):
            return method
        return lambda *args, **kwargs: loop.run_until_complete(method(*args, **kwargs))

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if self._loop is not None:
            self._loop.close()


def _sent(channel: FakeChannel) -> list[tuple[str, str | None]]:
    """(method, where the input's bytes went) of every call made."""
    sent = []
    for path, request, _ in channel.calls:
        has_input = "input" in request.DESCRIPTOR.fields_by_name and request.HasField("input")
        payload = request.input.WhichOneof("payload") if has_input else None  # type: ignore[attr-defined]
        sent.append((path.rsplit("/", 1)[1], payload))
    return sent


SHARING = {"shared_memory": True, "shared_memory_min_bytes": 0}
SHM_ONLY = pytest.mark.skipif(
    not os.path.isdir(_shm.DIRECTORY), reason="POSIX shared memory (/dev/shm) is Linux-only"
)


@pytest.fixture(params=["sync", "async"])
def fake(
    request: pytest.FixtureRequest, sync_channel: FakeChannel, async_channel: FakeChannel
) -> tuple[str, FakeChannel]:
    """(client kind, the fake channel that kind of client will use)."""
    return request.param, sync_channel if request.param == "sync" else async_channel


@SHM_ONLY
def test_no_regions_for_a_server_without_shared_memory(
    fake: tuple[str, FakeChannel], caplog: pytest.LogCaptureFixture
) -> None:
    """relu_server's GetServerInfo leaves shared_memory false, as older servers do."""
    kind, channel = fake
    x = np.array([-1.0, 2.0], dtype=np.float32)
    caplog.set_level(logging.WARNING, logger="actgrad._requests")
    with Blocking(kind, **SHARING) as client:
        assert client.shared_memory
        np.testing.assert_array_equal(client.activate(x, "relu"), [0.0, 2.0])
        assert not client.shared_memory
        np.testing.assert_array_equal(client.activate(x, "relu"), [0.0, 2.0])
        np.testing.assert_array_equal(client.gradient(x, "relu"), [0.0, 1.0])
    assert _sent(channel) == [
        ("GetServerInfo", None),
        ("Activate", "data"),
        ("Activate", "data"),
        ("Gradient", "data"),
    ]
    warnings = [r.getMessage() for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1 and "does not allow" in warnings[0]


@SHM_ONLY
def test_regions_within_the_servers_element_limit(fake: tuple[str, FakeChannel]) -> None:
    kind, channel = fake
    channel.handler = sharing_server(max_elements=4)
    small = np.array([-1.0, 2.0, -3.0], dtype=np.float32)
    large = np.linspace(-1, 1, 5)
    with Blocking(kind, **SHARING) as client:
        first = client.activate(small, "relu")
        np.testing.assert_array_equal(first, [0.0, 2.0, 0.0])
        assert first.flags.owndata  # a copy, not a view of the segment
        np.testing.assert_array_equal(client.activate(large, "relu"), np.maximum(large, 0))
        np.testing.assert_array_equal(client.activate(-small, "relu"), [1.0, 0.0, 3.0])
        assert client.shared_memory  # over the limit is not a refusal
        np.testing.assert_array_equal(small, [-1.0, 2.0, -3.0])  # the caller's array untouched
    assert _sent(channel) == [
        ("GetServerInfo", None),
        ("Activate", "region"),
        ("Activate", "data"),
        ("Activate", "region"),
    ]
    request = channel.calls[1][1]
    assert request.output_region == request.input.region  # type: ignore[attr-defined]


@SHM_ONLY
def test_a_refused_region_falls_back_to_messages_once(
    fake: tuple[str, FakeChannel], caplog: pytest.LogCaptureFixture
) -> None:
    kind, channel = fake
    channel.handler = sharing_server(max_elements=100, refuse=True)
    x = np.array([-1.0, 2.0], dtype=np.float64)
    caplog.set_level(logging.WARNING, logger="actgrad._requests")
    with Blocking(kind, **SHARING) as client:
        np.testing.assert_array_equal(client.activate(x, "relu"), [0.0, 2.0])
        assert not client.shared_memory
        assert client.client._shared_pool is None  # segments unlinked at the refusal
        np.testing.assert_array_equal(client.activate(x, "relu"), [0.0, 2.0])
    assert _sent(channel) == [
        ("GetServerInfo", None),
        ("Activate", "region"),
        ("Activate", "data"),
        ("Activate", "data"),
    ]
    warnings = [r.getMessage() for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1 and "FAILED_PRECONDITION" in warnings[0]


@SHM_ONLY
def test_other_errors_of_a_shared_call_are_raised(fake: tuple[str, FakeChannel]) -> None:
    kind, channel = fake
    channel.handler = sharing_server(max_elements=100)
    with Blocking(kind, **SHARING) as client:
        with pytest.raises(actgrad.NotFoundError):
            client.activate([1.0, 2.0], "relux")  # relu_server refuses it by name...
        assert client.shared_memory  # ...and sharing goes on
        assert client.client._shared_pool.names != []  # the segment was given back, kept
        np.testing.assert_array_equal(client.activate([-1.0, 1.0], "relu"), [0.0, 1.0])
