"""Large results laid out in the response before they are computed (`wire.Prepared`).

The servicer runs in process on an engine that chunks at 4 Ki elements. A response
whose results travel in the message and reach `SMALL_BYTES` is prepared: the engine
writes each chunk's result straight into the bytes gRPC sends. Those bytes must be
exactly what the copy path (`wire.Outgoing` of the engine's arrays) would have sent.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from _context import FakeContext

from actgrad import wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.wire import frames
from actgrad_server import catalog
from actgrad_server.api.activation import ActivationServicer
from actgrad_server.config import Limits
from actgrad_server.engine import Engine

LIMITS = Limits(max_message_bytes=1 << 24, max_elements=1 << 22, max_rank=4, max_concurrent_rpcs=4)
SHAPE = (64, 1024)  # 256 KiB of float32: above SMALL_BYTES


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=64, chunk_elements=4096)


@pytest.fixture(scope="module")
def servicer(engine: Engine) -> ActivationServicer:
    return ActivationServicer(engine, LIMITS)


def _x(dtype: Any = np.float32) -> np.ndarray:
    return (np.random.default_rng(5).standard_normal(SHAPE) * 4).astype(dtype)


def _copy_path(response: type[Any], results: dict[str, np.ndarray]) -> bytes:
    return frames.Outgoing(frames.codec_for(response), response(), results).serialize()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_activate_writes_its_result_into_the_bytes_sent(
    servicer: ActivationServicer, engine: Engine, dtype: Any
) -> None:
    x = _x(dtype)
    answer = servicer.Activate(pb.ActivateRequest(function="gelu", input=wire.encode(x)), None)
    assert isinstance(answer, frames.Prepared)
    expected = engine.activate(
        catalog.bind(catalog.lookup("gelu"), {}, x_shape=x.shape, x_dtype=x.dtype), x
    )
    assert answer.serialize() == _copy_path(pb.ActivateResponse, {"output": expected})


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_along_rows_and_columns(
    servicer: ActivationServicer, engine: Engine, axis: int
) -> None:
    """Along the last axis the chunks are runs of elements, written chunk by chunk;
    along axis 0 they are column blocks, and the result is copied in whole."""
    x = _x()
    answer = servicer.Softmax(pb.SoftmaxRequest(input=wire.encode(x), axis=axis), None)
    assert isinstance(answer, frames.Prepared)
    call = catalog.bind(
        catalog.SOFTMAX, {"axis": axis}, x_shape=x.shape, x_dtype=x.dtype, field_prefix="request"
    )
    expected = engine.activate(call, x)
    assert answer.serialize() == _copy_path(pb.SoftmaxResponse, {"output": expected})


@pytest.mark.parametrize("return_output", [False, True])
def test_gradient_writes_both_results_into_the_bytes_sent(
    servicer: ActivationServicer, engine: Engine, return_output: bool
) -> None:
    x = _x()
    g = _x() / 7
    request = pb.GradientRequest(
        function="gelu",
        input=wire.encode(x),
        grad_output=wire.encode(g),
        return_output=return_output,
    )
    answer = servicer.Gradient(request, FakeContext())
    assert isinstance(answer, frames.Prepared)
    call = catalog.bind(catalog.lookup("gelu"), {}, x_shape=x.shape, x_dtype=x.dtype)
    result = engine.gradient(call, x, g, with_output=return_output)
    assert result.grad_input is not None
    results = {"grad_input": result.grad_input}
    if return_output:
        assert result.output is not None
        results["output"] = result.output
    assert answer.serialize() == _copy_path(pb.GradientResponse, results)


def test_parameter_gradients_keep_the_copy_path(servicer: ActivationServicer) -> None:
    """prelu's slope gradient is known only after computing: nothing is prepared."""
    x = _x()
    request = pb.GradientRequest(function="prelu", input=wire.encode(x))
    request.params["slope"].tensor.CopyFrom(wire.encode(np.float32([[0.25]])))
    answer = servicer.Gradient(request, FakeContext())
    assert isinstance(answer, frames.Outgoing)
    got = pb.GradientResponse.FromString(answer.serialize())
    expected = np.where(x > 0, 1.0, 0.25).astype(np.float32)
    np.testing.assert_array_equal(wire.decode(got.grad_input), expected)
    np.testing.assert_array_equal(
        wire.decode(got.grad_params["slope"]),
        np.float32([[np.minimum(x, 0).astype(np.float64).sum()]]),
    )


def test_small_results_stay_with_protobuf(servicer: ActivationServicer) -> None:
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    answer = servicer.Activate(pb.ActivateRequest(function="relu", input=wire.encode(x)), None)
    assert isinstance(answer, pb.ActivateResponse)
    np.testing.assert_array_equal(wire.decode(answer.output), np.maximum(x, 0))
