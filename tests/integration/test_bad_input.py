"""Every bad-input row: the status code, then a valid call still succeeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from _common import TEST_SETTINGS

import actgrad
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc, tensor_pb2
from actgrad_server.app import ActgradServer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def stub(server: ActgradServer) -> Iterator[activation_pb2_grpc.ActivationServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield activation_pb2_grpc.ActivationServiceStub(channel)


def still_serving(client: Any) -> None:
    y = client.activate(np.array([0.0, 1.0], dtype=np.float32), "relu")
    np.testing.assert_array_equal(y, [0.0, 1.0])


def raw_tensor(dtype: int, shape: list[int], data: bytes) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)  # type: ignore[arg-type]


def expect_raw(stub: Any, request: Any, code: grpc.StatusCode, *fragments: str) -> None:
    method = {
        pb.ActivateRequest: stub.Activate,
        pb.GradientRequest: stub.Gradient,
        pb.SoftmaxRequest: stub.Softmax,
    }[type(request)]
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=10)
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()


def test_unknown_function_names_close_matches(client: Any) -> None:
    with pytest.raises(actgrad.NotFoundError) as info:
        client.activate(np.ones(3), "sigmoyd")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "sigmoid" in info.value.details
    still_serving(client)


@pytest.mark.parametrize(
    ("function", "params", "fragment"),
    [
        ("leaky_relu", {"slope": 0.1}, "slope"),  # unknown parameter
        ("leaky_relu", {"alpha": "big"}, "alpha"),  # ill-typed
        ("leaky_relu", {"alpha": float("nan")}, "alpha"),  # not finite
        ("softmax", {"temperature": 0.0}, "temperature"),
        ("softmax", {"temperature": -1.0}, "temperature"),
        ("softmax", {"axis": 2}, "axis"),
        ("softmax", {"axis": -3}, "axis"),
        ("gelu", {"approximate": "foo"}, "approximate"),
        ("prelu", {}, "slope"),  # required
        ("prelu", {"slope": np.ones(3)}, "slope"),  # not broadcastable to (2, 4)
        ("prelu", {"slope": np.ones((1, 2, 4))}, "slope"),  # rank above the input's
    ],
)
def test_bad_parameters(client: Any, function: str, params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        client.activate(np.ones((2, 4)), function, **params)
    assert info.value.code == INVALID
    assert fragment in info.value.details
    still_serving(client)


def test_softmax_rpc_bad_temperature(client: Any) -> None:
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        client.softmax(np.ones(3), temperature=0.0)
    assert "temperature" in info.value.details
    still_serving(client)


def test_grad_output_shape_mismatch(client: Any) -> None:
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        client.gradient(np.ones((2, 3)), "tanh", grad_output=np.ones((3, 2)))
    assert "grad_output" in info.value.details
    still_serving(client)


def test_grad_output_dtype_mismatch(stub: Any, client: Any) -> None:
    x = raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2], np.ones(2, "<f4").tobytes())
    g = raw_tensor(tensor_pb2.DTYPE_FLOAT64, [2], np.ones(2, "<f8").tobytes())
    request = pb.GradientRequest(function="tanh", input=x, grad_output=g)
    expect_raw(stub, request, INVALID, "grad_output", "dtype")
    still_serving(client)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (raw_tensor(tensor_pb2.DTYPE_UNSPECIFIED, [1], b"\0\0\0\0"), "input.dtype"),
        (raw_tensor(99, [1], b"\0\0\0\0"), "input.dtype"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [3], b"\0" * 8), "input.data"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2], b"\0" * 12), "input.data"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [-1], b""), "input.shape"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2, -4], b"\0" * 32), "input.shape"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2**40, 2**40], b""), "input.shape"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2**62, 2**62, 4], b""), "input.shape"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [1] * 9, b"\0" * 4), "rank"),
        (raw_tensor(tensor_pb2.DTYPE_FLOAT32, [(1 << 20) + 1], b""), "limit"),
    ],
)
@pytest.mark.parametrize("rpc", ["activate", "gradient", "softmax"])
def test_bad_tensors_refused_before_allocation(
    stub: Any, client: Any, tensor: tensor_pb2.Tensor, fragment: str, rpc: str
) -> None:
    request: Any
    if rpc == "activate":
        request = pb.ActivateRequest(function="sigmoid", input=tensor)
    elif rpc == "gradient":
        request = pb.GradientRequest(function="sigmoid", input=tensor)
    else:
        request = pb.SoftmaxRequest(input=tensor)
    expect_raw(stub, request, INVALID, fragment)
    still_serving(client)


def test_missing_input(stub: Any, client: Any) -> None:
    expect_raw(stub, pb.ActivateRequest(function="relu"), INVALID, "input")
    still_serving(client)


def test_bad_slope_tensor(stub: Any, client: Any) -> None:
    x = raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2], np.ones(2, "<f4").tobytes())
    slope = raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2], b"\0")
    request = pb.ActivateRequest(
        function="prelu", input=x, params={"slope": pb.ParamValue(tensor=slope)}
    )
    expect_raw(stub, request, INVALID, "slope")
    wrong_dtype = raw_tensor(tensor_pb2.DTYPE_FLOAT64, [2], np.ones(2, "<f8").tobytes())
    request = pb.ActivateRequest(
        function="prelu", input=x, params={"slope": pb.ParamValue(tensor=wrong_dtype)}
    )
    expect_raw(stub, request, INVALID, "slope", "dtype")
    still_serving(client)


def test_empty_param_value(stub: Any, client: Any) -> None:
    x = raw_tensor(tensor_pb2.DTYPE_FLOAT32, [2], np.ones(2, "<f4").tobytes())
    request = pb.ActivateRequest(function="leaky_relu", input=x, params={"alpha": pb.ParamValue()})
    expect_raw(stub, request, INVALID, "alpha")
    still_serving(client)


def test_unknown_rpc_is_unimplemented(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/actgrad.v1.ActivationService/Nope")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# Bytes that are no protobuf message: 0xff starts a field with an invalid wire type.
GARBAGE = [b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc"]
UNARY_METHODS = [
    "/actgrad.v1.ActivationService/Activate",
    "/actgrad.v1.ActivationService/Gradient",
    "/actgrad.v1.ActivationService/Softmax",
    "/inference.GRPCInferenceService/ModelInfer",
    "/grpc.health.v1.Health/Check",
]
STREAM_METHODS = [
    "/actgrad.v1.ActivationService/ActivateStream",
    "/actgrad.v1.ActivationService/GradientStream",
    "/actgrad.v1.ActivationService/SoftmaxStream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


def _identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize("method", UNARY_METHODS + STREAM_METHODS)
def test_bytes_that_are_no_message_are_invalid_argument(
    server: ActgradServer, client: Any, method: str
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for garbage in GARBAGE:
            if method in UNARY_METHODS:
                call = channel.unary_unary(method, _identity, _identity)
                with pytest.raises(grpc.RpcError) as info:
                    call(garbage, timeout=10)
            else:
                stream = channel.stream_stream(method, _identity, _identity)
                with pytest.raises(grpc.RpcError) as info:
                    list(stream(iter([garbage, garbage]), timeout=10))
            assert info.value.code() == INVALID, (method, garbage, info.value)
            assert "not a valid" in (info.value.details() or "")
    still_serving(client)


def test_malformed_stream_messages_do_not_hold_the_drain() -> None:
    # grpcio answered a failed deserialization on a stream twice; the second status
    # was refused and the call never released, so the drain never ended.
    server = ActgradServer(dataclasses.replace(TEST_SETTINGS, port=0, grace=2.0, access_log=False))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stream = channel.stream_stream(
                "/actgrad.v1.ActivationService/ActivateStream", _identity, _identity
            )
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as info:
                    list(stream(iter([b"\xff"]), timeout=10))
                assert info.value.code() == INVALID
        assert server.stop().wait(10), "the drain did not end"
    finally:
        server.stop(0)
        server.wait()
