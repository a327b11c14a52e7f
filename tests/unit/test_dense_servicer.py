"""Dense and GradientFlow on the servicer, without sockets: shared-memory inputs, the
output element limit, the probe's size limit."""

from __future__ import annotations

import os
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

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=1000, max_rank=4, max_concurrent_rpcs=4)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def servicer() -> ActivationServicer:
    return ActivationServicer(Engine(device="cpu"), LIMITS, allow_shared_memory=True)


def _request(x: Any, w: Any, **fields: Any) -> pb.DenseRequest:
    request = pb.DenseRequest(**fields)
    wire.encode(np.asarray(x, np.float32), out=request.input)
    wire.encode(np.asarray(w, np.float32), out=request.weight)
    return request


def _aborted(call: Any, request: Any) -> Aborted:
    with pytest.raises(Aborted) as info:
        call(request, FakeContext())
    return info.value


@pytest.mark.skipif(not os.path.isdir(_shm.DIRECTORY), reason="needs /dev/shm")
def test_inputs_in_shared_memory(servicer: ActivationServicer) -> None:
    pool = _shm.SegmentPool()
    segment = pool.acquire(4096)
    try:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        segment.array(0, x.dtype, x.shape)[...] = x
        request = _request(np.zeros((1, 1)), np.eye(3), activation="relu", gradient=True)
        request.input.Clear()
        request.input.dtype = tensor_pb2.DTYPE_FLOAT32
        request.input.shape[:] = x.shape
        request.input.region.CopyFrom(
            tensor_pb2.SharedMemoryRegion(segment=segment.name, offset=0, size=x.nbytes)
        )
        response = servicer.Dense(request, FakeContext())
        # relu'(z) = 0 at z = x[0, 0] = 0: unit 0 sees only the second sample.
        grad_weight = wire.decode(response.grad_weight)
        np.testing.assert_array_equal(grad_weight, [[3, 4, 5], [3, 5, 7], [3, 5, 7]])
    finally:
        pool.release(segment)
        pool.close()


def test_the_output_counts_against_the_element_limit(servicer: ActivationServicer) -> None:
    # 100 inputs and a 10 x 1 weight are within 1000 elements; the 100 x 10 output is not.
    error = _aborted(servicer.Dense, _request(np.ones((100, 1)), np.ones((11, 1))))
    assert error.code == INVALID and error.details.startswith("output:")
    response = servicer.Dense(_request(np.ones((100, 1)), np.ones((10, 1))), FakeContext())
    assert wire.decode(response.output).shape == (100, 10)


def test_the_probe_counts_against_the_element_limit(servicer: ActivationServicer) -> None:
    request = pb.GradientFlowRequest(function="tanh", depth=3, width=10, batch=40, init="he_normal")
    error = _aborted(servicer.GradientFlow, request)
    assert error.code == INVALID and error.details.startswith("depth:")
    request.batch = 30
    assert len(servicer.GradientFlow(request, FakeContext()).grad_rms) == 4


def test_streamed_chunks_are_each_answered(servicer: ActivationServicer) -> None:
    chunks = [_request(np.full((2, 3), k), np.eye(3), gradient=True) for k in (1, 2)]
    first, second = servicer.DenseStream(iter(chunks), FakeContext())
    np.testing.assert_array_equal(wire.decode(first.grad_bias), [2, 2, 2])
    np.testing.assert_array_equal(wire.decode(second.grad_weight), np.full((3, 3), 4))
