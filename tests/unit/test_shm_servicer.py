"""Shared-memory payloads through the servicer, called in-process (no sockets), on SDK
segments: `Tensor.region` for inputs and the requests' output regions, unary and
streamed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from _context import Aborted, FakeContext

from actgrad import _shm, wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad_server.api.activation import ActivationServicer
from actgrad_server.config import Limits
from actgrad_server.engine import Engine

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=10_000, max_rank=4, max_concurrent_rpcs=4)
INVALID = grpc.StatusCode.INVALID_ARGUMENT

pytestmark = pytest.mark.skipif(
    not os.path.isdir(_shm.DIRECTORY), reason="POSIX shared memory (/dev/shm) is Linux-only"
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=16)


@pytest.fixture(scope="module")
def servicer(engine: Engine) -> ActivationServicer:
    return ActivationServicer(engine, LIMITS, allow_shared_memory=True)


@pytest.fixture
def segment() -> Iterator[_shm.Segment]:
    pool = _shm.SegmentPool()
    lent = pool.acquire(4096)
    try:
        yield lent
    finally:
        pool.release(lent)
        pool.close()


def _region(segment: _shm.Segment, offset: int, size: int) -> tensor_pb2.SharedMemoryRegion:
    return tensor_pb2.SharedMemoryRegion(segment=segment.name, offset=offset, size=size)


def _put(segment: _shm.Segment, offset: int, array: np.ndarray) -> tensor_pb2.Tensor:
    """A request tensor whose bytes are at `offset` of `segment`."""
    segment.array(offset, array.dtype, array.shape)[...] = array
    tensor = tensor_pb2.Tensor(dtype=wire.dtype_info(array.dtype).wire, shape=array.shape)
    tensor.region.CopyFrom(_region(segment, offset, array.nbytes))
    return tensor


def _code(call: Callable[[Any, Any], Any], request: Any) -> grpc.StatusCode:
    with pytest.raises(Aborted) as info:
        call(request, FakeContext())
    return info.value.code


def _in_region(tensor: tensor_pb2.Tensor, region: tensor_pb2.SharedMemoryRegion) -> None:
    """A response tensor that names `region` and carries no bytes."""
    assert tensor.WhichOneof("payload") == "region"
    assert tensor.region == region and tensor.data == b""
    assert tensor.dtype == tensor_pb2.DTYPE_FLOAT32 and tuple(tensor.shape) == X.shape


X = np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10)
X64 = X.astype(np.float64)


def test_activate_writes_the_output_region_only(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    segment.array(0, np.dtype(np.uint8), (4096,))[...] = 0xAB
    request = pb.ActivateRequest(function="gelu", input=_put(segment, 128, X))
    request.output_region.CopyFrom(_region(segment, 1024, X.nbytes))
    response = servicer.Activate(request, FakeContext())
    _in_region(response.output, request.output_region)
    plain = pb.ActivateRequest(function="gelu", input=wire.encode(X))
    expected = servicer.Activate(plain, FakeContext()).output.data
    assert segment.array(1024, X.dtype, X.shape).tobytes() == expected
    raw = segment.array(0, np.dtype(np.uint8), (4096,))
    np.testing.assert_array_equal(raw[:128], 0xAB)
    np.testing.assert_array_equal(raw[128 + X.nbytes : 1024], 0xAB)
    np.testing.assert_array_equal(raw[1024 + X.nbytes :], 0xAB)
    np.testing.assert_array_equal(segment.array(128, X.dtype, X.shape), X)  # input untouched


def test_in_place_and_mixed_payloads(servicer: ActivationServicer, segment: _shm.Segment) -> None:
    # The output over the input's own region.
    request = pb.ActivateRequest(function="tanh", input=_put(segment, 0, X))
    request.output_region.CopyFrom(request.input.region)
    _in_region(servicer.Activate(request, FakeContext()).output, request.input.region)
    np.testing.assert_allclose(segment.array(0, X.dtype, X.shape), np.tanh(X64), rtol=1e-6)
    # Input in the message, output in a region.
    request = pb.ActivateRequest(function="relu", input=wire.encode(-X))
    request.output_region.CopyFrom(_region(segment, 1024, X.nbytes))
    _in_region(servicer.Activate(request, FakeContext()).output, request.output_region)
    np.testing.assert_array_equal(segment.array(1024, X.dtype, X.shape), np.maximum(-X, 0))
    # Input in a region, output in the message.
    request = pb.ActivateRequest(function="relu", input=_put(segment, 2048, X))
    output = servicer.Activate(request, FakeContext()).output
    assert output.WhichOneof("payload") == "data"
    np.testing.assert_array_equal(wire.decode(output), np.maximum(X, 0))


def test_softmax_in_place(servicer: ActivationServicer, segment: _shm.Segment) -> None:
    request = pb.SoftmaxRequest(input=_put(segment, 64, X), axis=0, log=True)
    request.output_region.CopyFrom(request.input.region)
    _in_region(servicer.Softmax(request, FakeContext()).output, request.input.region)
    shifted = X64 - X64.max(axis=0)
    expected = shifted - np.log(np.exp(shifted).sum(axis=0))
    np.testing.assert_allclose(segment.array(64, X.dtype, X.shape), expected, rtol=1e-5, atol=1e-6)


def test_not_allowed_is_failed_precondition(engine: Engine, segment: _shm.Segment) -> None:
    closed = ActivationServicer(engine, LIMITS)
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    # A region input, a region parameter, an output region: each refused.
    request = pb.SoftmaxRequest(input=_put(segment, 0, X))
    assert _code(closed.Softmax, request) is precondition
    request = pb.ActivateRequest(function="relu", input=wire.encode(X))
    request.output_region.CopyFrom(_region(segment, 0, X.nbytes))
    assert _code(closed.Activate, request) is precondition
    request = pb.ActivateRequest(function="prelu", input=wire.encode(X))
    request.params["slope"].tensor.CopyFrom(_put(segment, 1024, np.ones(1, np.float32)))
    assert _code(closed.Activate, request) is precondition
    info = closed.GetServerInfo(pb.GetServerInfoRequest(), FakeContext())
    assert not info.shared_memory
    # The same call in messages is served.
    plain = pb.ActivateRequest(function="relu", input=wire.encode(X))
    np.testing.assert_array_equal(
        wire.decode(closed.Activate(plain, FakeContext()).output), np.maximum(X, 0)
    )


def test_server_info_says_shared_memory(servicer: ActivationServicer) -> None:
    assert servicer.GetServerInfo(pb.GetServerInfoRequest(), FakeContext()).shared_memory


def _gradient_request(segment: _shm.Segment) -> pb.GradientRequest:
    request = pb.GradientRequest(function="tanh", input=_put(segment, 0, X))
    request.grad_input_region.CopyFrom(_region(segment, 0, X.nbytes))
    return request


def test_gradient_with_grad_output_and_output(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    request = _gradient_request(segment)
    request.grad_output.CopyFrom(_put(segment, 1024, np.full(X.shape, 0.5, dtype=np.float32)))
    request.return_output = True
    request.output_region.CopyFrom(_region(segment, 2048, X.nbytes))
    response = servicer.Gradient(request, FakeContext())
    _in_region(response.grad_input, request.grad_input_region)
    _in_region(response.output, request.output_region)
    np.testing.assert_allclose(
        segment.array(0, X.dtype, X.shape), 0.5 * (1 - np.tanh(X64) ** 2), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(segment.array(2048, X.dtype, X.shape), np.tanh(X64), rtol=1e-6)


def test_gradient_output_in_the_message_and_params_in_a_region(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    slope = np.array([0.25], dtype=np.float32)
    request = pb.GradientRequest(function="prelu", input=_put(segment, 0, X), return_output=True)
    request.params["slope"].tensor.CopyFrom(_put(segment, 1024, slope))
    request.grad_input_region.CopyFrom(_region(segment, 2048, X.nbytes))
    response = servicer.Gradient(request, FakeContext())
    _in_region(response.grad_input, request.grad_input_region)
    np.testing.assert_array_equal(
        segment.array(2048, X.dtype, X.shape), np.where(X > 0, 1.0, 0.25).astype(np.float32)
    )
    # No output region: the forward value travels in the message, as grad_params do.
    np.testing.assert_array_equal(wire.decode(response.output), np.where(X > 0, X, 0.25 * X))
    np.testing.assert_allclose(
        wire.decode(response.grad_params["slope"]), [X64[X < 0].sum()], rtol=1e-6
    )


def test_gradient_region_rules(servicer: ActivationServicer, segment: _shm.Segment) -> None:
    call = servicer.Gradient

    request = _gradient_request(segment)
    request.output_region.CopyFrom(_region(segment, 1024, X.nbytes))  # without return_output
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.return_output = True
    request.output_region.CopyFrom(_region(segment, 64, X.nbytes))  # overlaps grad_input
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.ClearField("input")
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.grad_input_region.size = X.nbytes - 4
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.input.region.size = X.nbytes + 4
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.input.region.offset = segment.size - 8  # runs past the end of the segment
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.grad_output.CopyFrom(_put(segment, 1024, np.ones(5, np.float32)))  # another shape
    assert _code(call, request) is INVALID

    request = _gradient_request(segment)
    request.function = "no_such_function"
    assert _code(call, request) is grpc.StatusCode.NOT_FOUND

    # After all of these, a valid call on the same servicer.
    request = _gradient_request(segment)
    _in_region(call(request, FakeContext()).grad_input, request.grad_input_region)


def test_a_tensor_without_data_or_region_is_a_byte_length_error(
    servicer: ActivationServicer,
) -> None:
    request = pb.ActivateRequest(function="relu")
    request.input.dtype = tensor_pb2.DTYPE_FLOAT32
    request.input.shape[:] = [3]
    with pytest.raises(Aborted) as info:
        servicer.Activate(request, FakeContext())
    assert info.value.code is INVALID and "input.data" in info.value.details
    request.input.shape[:] = [0]  # no elements: no bytes needed
    assert tuple(servicer.Activate(request, FakeContext()).output.shape) == (0,)


def test_streams_take_regions_per_chunk(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    halves = np.split(X, 2)
    requests = []
    for k, half in enumerate(halves):
        request = pb.ActivateRequest(function="sigmoid", input=_put(segment, 512 * k, half))
        request.output_region.CopyFrom(request.input.region)  # in place, chunk by chunk
        requests.append(request)
    responses = list(servicer.ActivateStream(iter(requests), FakeContext()))
    assert [r.output.region for r in responses] == [r.output_region for r in requests]
    for k, half in enumerate(halves):
        np.testing.assert_allclose(
            segment.array(512 * k, X.dtype, half.shape),
            1 / (1 + np.exp(-half.astype(np.float64))),
            rtol=1e-6,
        )

    gradients = []
    for k, half in enumerate(np.split(X, 2)):
        request = pb.GradientRequest(function="tanh", input=_put(segment, 1024 + 512 * k, half))
        request.grad_output.CopyFrom(wire.encode(np.full(half.shape, 2.0, np.float32)))
        request.grad_input_region.CopyFrom(_region(segment, 2048 + 512 * k, half.nbytes))
        gradients.append(request)
    responses = list(servicer.GradientStream(iter(gradients), FakeContext()))
    assert [r.grad_input.region for r in responses] == [r.grad_input_region for r in gradients]
    np.testing.assert_allclose(
        np.concatenate([segment.array(2048 + 512 * k, X.dtype, (3, 10)) for k in range(2)]),
        2 * (1 - np.tanh(X64) ** 2),
        rtol=1e-5,
        atol=1e-6,
    )

    chunks = [
        pb.SoftmaxRequest(input=_put(segment, 3072 + 512 * k, h)) for k, h in enumerate(halves)
    ]
    chunks[1].output_region.CopyFrom(chunks[1].input.region)
    first, second = servicer.SoftmaxStream(iter(chunks), FakeContext())
    assert first.output.WhichOneof("payload") == "data"  # no output region for chunk 0
    assert second.output.region == chunks[1].output_region
    np.testing.assert_allclose(wire.decode(first.output).sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(segment.array(3072 + 512, X.dtype, (3, 10)).sum(axis=-1), 1.0)


def test_a_bad_chunk_ends_the_stream_with_its_status(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    good = pb.ActivateRequest(function="relu", input=_put(segment, 0, X))
    bad = pb.ActivateRequest(function="relu", input=_put(segment, 1024, X))
    bad.input.region.segment = "actgrad-no-such-segment-here"
    stream = servicer.ActivateStream(iter([good, bad]), FakeContext())
    assert next(stream).output.WhichOneof("payload") == "data"
    with pytest.raises(Aborted) as info:
        next(stream)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    responses = list(servicer.ActivateStream(iter([good]), FakeContext()))
    np.testing.assert_array_equal(wire.decode(responses[0].output), np.maximum(X, 0))
