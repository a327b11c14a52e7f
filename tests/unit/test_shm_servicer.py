"""The *Shared RPCs of the servicer called in-process (no sockets), on SDK segments."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc
import numpy as np
import pytest

from actgrad import _shm
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad_server.api.activation import ActivationServicer
from actgrad_server.config import Limits
from actgrad_server.engine import Engine

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=10_000, max_rank=4, max_concurrent_rpcs=4)

pytestmark = pytest.mark.skipif(
    not os.path.isdir(_shm.DIRECTORY), reason="POSIX shared memory (/dev/shm) is Linux-only"
)


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class FakeContext:
    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


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


def _region(segment: _shm.Segment, offset: int, size: int) -> pb.SharedMemoryRegion:
    return pb.SharedMemoryRegion(segment=segment.name, offset=offset, size=size)


def _put(segment: _shm.Segment, offset: int, array: np.ndarray) -> pb.SharedMemoryRegion:
    segment.array(offset, array.dtype, array.shape)[...] = array
    return _region(segment, offset, array.nbytes)


def _described(message: Any, array: np.ndarray) -> None:
    message.dtype = tensor_pb2.DTYPE_FLOAT32
    message.shape[:] = array.shape


def _code(call: Any, request: Any) -> grpc.StatusCode:
    with pytest.raises(Aborted) as info:
        call(request, FakeContext())
    return info.value.code


X = np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10)


def test_activate_writes_the_output_region_only(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    segment.array(0, np.dtype(np.uint8), (4096,))[...] = 0xAB
    region = _put(segment, 128, X)
    output = _region(segment, 1024, X.nbytes)
    request = pb.ActivateSharedRequest(
        request=pb.ActivateRequest(function="gelu"), input=region, output=output
    )
    _described(request.request.input, X)
    response = servicer.ActivateShared(request, FakeContext())
    assert response.output == output
    plain = pb.ActivateRequest(function="gelu")
    plain.input.dtype = tensor_pb2.DTYPE_FLOAT32
    plain.input.shape[:] = X.shape
    plain.input.data = X.tobytes()
    expected = servicer.Activate(plain, FakeContext()).output.data
    assert segment.array(1024, X.dtype, X.shape).tobytes() == expected
    raw = segment.array(0, np.dtype(np.uint8), (4096,))
    np.testing.assert_array_equal(raw[:128], 0xAB)
    np.testing.assert_array_equal(raw[128 + X.nbytes : 1024], 0xAB)
    np.testing.assert_array_equal(raw[1024 + X.nbytes :], 0xAB)
    np.testing.assert_array_equal(segment.array(128, X.dtype, X.shape), X)  # input untouched


def test_not_allowed_is_failed_precondition(engine: Engine, segment: _shm.Segment) -> None:
    closed = ActivationServicer(engine, LIMITS)
    region = _put(segment, 0, X)
    request = pb.SoftmaxSharedRequest(request=pb.SoftmaxRequest(), input=region, output=region)
    _described(request.request.input, X)
    assert _code(closed.SoftmaxShared, request) is grpc.StatusCode.FAILED_PRECONDITION


def _gradient_request(segment: _shm.Segment) -> pb.GradientSharedRequest:
    request = pb.GradientSharedRequest(
        request=pb.GradientRequest(function="tanh"),
        input=_put(segment, 0, X),
        grad_input=_region(segment, 0, X.nbytes),
    )
    _described(request.request.input, X)
    return request


def test_gradient_with_grad_output_and_output(
    servicer: ActivationServicer, segment: _shm.Segment
) -> None:
    request = _gradient_request(segment)
    g = np.full(X.shape, 0.5, dtype=np.float32)
    request.grad_output.CopyFrom(_put(segment, 1024, g))
    _described(request.request.grad_output, g)
    request.request.return_output = True
    request.output.CopyFrom(_region(segment, 2048, X.nbytes))
    response = servicer.GradientShared(request, FakeContext())
    assert response.grad_input == request.grad_input and response.output == request.output
    x64 = X.astype(np.float64)
    np.testing.assert_allclose(
        segment.array(0, X.dtype, X.shape), 0.5 * (1 - np.tanh(x64) ** 2), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(segment.array(2048, X.dtype, X.shape), np.tanh(x64), rtol=1e-6)


def test_gradient_region_rules(servicer: ActivationServicer, segment: _shm.Segment) -> None:
    call = servicer.GradientShared
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    request = _gradient_request(segment)
    request.grad_output.CopyFrom(_region(segment, 1024, X.nbytes))  # no header for it
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.output.CopyFrom(_region(segment, 1024, X.nbytes))  # without return_output
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.request.return_output = True  # without an output region
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.request.return_output = True
    request.output.CopyFrom(_region(segment, 64, X.nbytes))  # overlaps grad_input
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.ClearField("grad_input")
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.ClearField("input")
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.grad_input.size = X.nbytes - 4
    assert _code(call, request) is invalid

    request = _gradient_request(segment)
    request.request.function = "no_such_function"
    assert _code(call, request) is grpc.StatusCode.NOT_FOUND
