"""Tensors beyond one message: the SDK streams chunks and reassembles, transparently."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from _common import AsyncAdapter

import actgrad
from actgrad import Client
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
from actgrad_server.api.activation import function_infos
from actgrad_server.app import ActgradServer
from actgrad_server.config import Settings

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
# Small chunks so that modest arrays take many chunks.
STREAMING = {"stream_threshold_bytes": 4096, "chunk_bytes": 1024}


@pytest.fixture(params=["sync", "async"])
def pair(request: pytest.FixtureRequest, server: ActgradServer) -> Iterator[tuple[Any, Any]]:
    """(streaming client, unary client) of the same kind against the same server."""
    target = f"127.0.0.1:{server.port}"
    if request.param == "sync":
        streaming, unary = Client(target, **STREAMING), Client(target)
    else:
        streaming, unary = AsyncAdapter(target, **STREAMING), AsyncAdapter(target)
    try:
        yield streaming, unary
    finally:
        streaming.close()
        unary.close()


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["gelu", "sigmoid", "xsin"])
def test_elementwise_stream_equals_unary(pair: tuple[Any, Any], name: str, dtype: Any) -> None:
    streaming, unary = pair
    x = _rng().normal(scale=4, size=(33, 71)).astype(dtype)
    y = streaming.activate(x, name)
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    np.testing.assert_array_equal(y, unary.activate(x, name))


def test_gradient_stream_with_grad_output_and_output(pair: tuple[Any, Any]) -> None:
    streaming, unary = pair
    rng = _rng()
    x = rng.normal(size=(40, 50)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    a = streaming.vjp(x, "swish", grad_output=g, return_output=True, beta=1.3)
    b = unary.vjp(x, "swish", grad_output=g, return_output=True, beta=1.3)
    np.testing.assert_array_equal(a.grad_input, b.grad_input)
    np.testing.assert_array_equal(a.output, b.output)
    assert a.grad_params == {} and b.grad_params == {}


@pytest.mark.parametrize("slope_shape", [(1,), (7, 1), (30, 7, 1)])
def test_prelu_stream_slices_or_repeats_the_slope(
    pair: tuple[Any, Any], slope_shape: tuple[int, ...]
) -> None:
    streaming, unary = pair
    rng = _rng()
    x = rng.normal(size=(30, 7, 9))
    g = rng.normal(size=x.shape)
    slope = rng.uniform(0.1, 0.5, size=slope_shape)
    a = streaming.vjp(x, "prelu", grad_output=g, slope=slope)
    b = unary.vjp(x, "prelu", grad_output=g, slope=slope)
    np.testing.assert_array_equal(a.grad_input, b.grad_input)
    assert a.grad_params["slope"].shape == slope_shape
    np.testing.assert_allclose(a.grad_params["slope"], b.grad_params["slope"], rtol=1e-12)
    np.testing.assert_array_equal(
        streaming.activate(x, "prelu", slope=slope), unary.activate(x, "prelu", slope=slope)
    )


@pytest.mark.parametrize(("shape", "axis"), [((20, 60), -1), ((60, 20), 0), ((4, 30, 10), 1)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_stream_equals_unary(
    pair: tuple[Any, Any], shape: tuple[int, ...], axis: int, log: bool
) -> None:
    streaming, unary = pair
    x = _rng().normal(size=shape).astype(np.float32)
    a = streaming.softmax(x, axis=axis, temperature=0.6, log=log)
    b = unary.softmax(x, axis=axis, temperature=0.6, log=log)
    # Reductions over another chunk shape may round differently in the last place.
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    c = streaming.activate(x, "softmax", axis=axis, temperature=0.6, log=log)
    np.testing.assert_allclose(c, b, rtol=1e-6, atol=1e-7)
    dx = streaming.gradient(x, "softmax", axis=axis, grad_output=x)
    np.testing.assert_allclose(
        dx, unary.gradient(x, "softmax", axis=axis, grad_output=x), rtol=1e-5, atol=1e-7
    )


def test_bad_parameter_in_a_stream_is_invalid_argument(pair: tuple[Any, Any]) -> None:
    streaming, _ = pair
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        streaming.activate(np.ones(5000, dtype=np.float32), "leaky_relu", alpha="steep")
    assert "alpha" in info.value.details
    with pytest.raises(actgrad.NotFoundError):
        streaming.activate(np.ones(5000, dtype=np.float32), "sigmoyd")
    np.testing.assert_array_equal(streaming.activate(np.zeros(5000), "relu"), np.zeros(5000))


def test_stream_above_the_message_limit(server: ActgradServer) -> None:
    # The test server's limit is 16 MiB a message and 1 Mi elements a tensor; 40 MiB
    # of float64 goes through as chunks with the client's default streaming settings.
    x = np.linspace(-8, 8, 5 << 20)
    assert x.nbytes > server.settings.max_message_bytes
    with Client(f"127.0.0.1:{server.port}", max_message_bytes=16 << 20) as client:
        y = client.activate(x, "relu")
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        dx = client.gradient(x, "tanh")
        np.testing.assert_allclose(dx, 1 / np.cosh(x) ** 2, rtol=1e-12, atol=0)


def test_raw_stream_answers_each_chunk_in_order(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
        chunks = [np.full(3, v, dtype="<f8") for v in (-1.0, 0.5, 2.0)]
        requests = [
            pb.ActivateRequest(function="relu", input=actgrad.wire.encode(c)) for c in chunks
        ]
        responses = list(stub.ActivateStream(iter(requests), timeout=10))
    assert len(responses) == 3
    values = [actgrad.wire.decode(r.output) for r in responses]
    np.testing.assert_array_equal(np.concatenate(values), np.maximum(np.concatenate(chunks), 0))


def test_broken_stream_returns_no_partial_result() -> None:
    # A server whose stream ends after one chunk: the SDK must raise, not hand
    # back a half-filled array.
    class OneChunkServicer(activation_pb2_grpc.ActivationServiceServicer):
        def ListFunctions(self, request: Any, context: Any) -> Any:
            return pb.ListFunctionsResponse(functions=function_infos())

        def ActivateStream(self, requests: Any, context: Any) -> Any:
            request = next(iter(requests))
            yield pb.ActivateResponse(output=request.input)

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    activation_pb2_grpc.add_ActivationServiceServicer_to_server(  # type: ignore[no-untyped-call]
        OneChunkServicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            Client(f"127.0.0.1:{port}", **STREAMING) as client,
            pytest.raises(actgrad.InternalError, match="ended after 1 of"),
        ):
            client.activate(np.ones(5000, dtype=np.float32), "relu")
    finally:
        server.stop(0).wait(5)


@pytest.mark.slow
def test_one_gibibyte_round_trip_with_default_limits() -> None:
    settings = Settings(host="127.0.0.1", port=0, http_port=0, device="cpu", grace=2.0)
    server = ActgradServer(settings)
    server.start()
    try:
        x = np.empty(1 << 28, dtype=np.float32)  # 1 GiB
        x[:] = np.tile(np.linspace(-4, 4, 1 << 16, dtype=np.float32), 1 << 12)
        with Client(f"127.0.0.1:{server.port}", timeout=600) as client:
            y = client.activate(x, "relu")
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.array_equal(y[: 1 << 16], np.maximum(x[: 1 << 16], 0))
        assert np.array_equal(y, np.maximum(x, 0, out=x))
    finally:
        server.stop(0).wait(10)
