"""Shared-memory regions read and written a chunk at a time by the engine.

The servicer runs in process on an engine that chunks at 64 elements, over segment
files this test writes with pwrite and reads with pread (never mapped here, so that
the test that shrinks a segment cannot fault this process). Every result is compared
bit for bit with the same call whose tensors travel in the message.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from _context import Aborted, FakeContext

from actgrad import _shm, wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad_server import shm
from actgrad_server.api.activation import ActivationServicer
from actgrad_server.config import Limits
from actgrad_server.engine import Engine

pytestmark = pytest.mark.skipif(
    not os.path.isdir(_shm.DIRECTORY), reason="POSIX shared memory (/dev/shm) is Linux-only"
)

LIMITS = Limits(max_message_bytes=1 << 22, max_elements=1 << 20, max_rank=4, max_concurrent_rpcs=4)
CHUNK = 64
SEGMENT_BYTES = 1 << 20
OUT = 1 << 16  # an output offset past every input


class File:
    """A segment file of our own, in the shared-memory directory, never mapped."""

    def __init__(self) -> None:
        self.name = f"{_shm.PREFIX}test-{secrets.token_hex(6)}"
        self.path = os.path.join(_shm.DIRECTORY, self.name)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.pwrite(self.fd, b"\xab" * SEGMENT_BYTES, 0)

    def put(self, offset: int, array: np.ndarray) -> tensor_pb2.Tensor:
        os.pwrite(self.fd, np.ascontiguousarray(array).tobytes(), offset)
        tensor = tensor_pb2.Tensor(dtype=wire.dtype_info(array.dtype).wire, shape=array.shape)
        tensor.region.CopyFrom(self.region(offset, array.nbytes))
        return tensor

    def region(self, offset: int, size: int) -> tensor_pb2.SharedMemoryRegion:
        return tensor_pb2.SharedMemoryRegion(segment=self.name, offset=offset, size=size)

    def get(self, offset: int, like: np.ndarray) -> np.ndarray:
        data = os.pread(self.fd, like.nbytes, offset)
        return np.frombuffer(data, dtype=like.dtype).reshape(like.shape)

    def raw(self) -> bytes:
        return os.pread(self.fd, SEGMENT_BYTES, 0)

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


@pytest.fixture(scope="module")
def servicer() -> ActivationServicer:
    engine = Engine(device="cpu", cache_size=64, chunk_elements=CHUNK)
    return ActivationServicer(engine, LIMITS, allow_shared_memory=True)


@pytest.fixture
def segment() -> Iterator[File]:
    made = File()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[shm.Region]:
    """The regions read whole into the server's memory during the test."""
    seen: list[shm.Region] = []
    original = shm.RegionTensor.array

    def array(self: shm.RegionTensor) -> Any:
        seen.append(self.region)
        return original(self)

    monkeypatch.setattr(shm.RegionTensor, "array", array)
    return seen


def _x(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    values = np.random.default_rng(7).standard_normal(shape) * 4
    return values.astype(dtype)


def _decoded(tensor: tensor_pb2.Tensor) -> np.ndarray:
    return np.asarray(wire.decode(tensor))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1000,), (40, 25), (3, 7, 50)])
def test_activate_is_computed_chunk_by_chunk_and_equals_the_message_path(
    servicer: ActivationServicer,
    segment: File,
    whole_reads: list[shm.Region],
    dtype: Any,
    shape: tuple[int, ...],
) -> None:
    x = _x(shape, dtype)
    request = pb.ActivateRequest(function="gelu", input=segment.put(0, x))
    request.output_region.CopyFrom(segment.region(OUT, x.nbytes))
    before = segment.raw()
    response = servicer.Activate(request, FakeContext())
    assert response.output.region == request.output_region
    expected = _decoded(
        servicer.Activate(
            pb.ActivateRequest(function="gelu", input=wire.encode(x)), FakeContext()
        ).output
    )
    assert segment.get(OUT, x).tobytes() == expected.tobytes()
    assert whole_reads == []  # the input was never copied whole
    after = segment.raw()
    assert after[:OUT] == before[:OUT]  # the input and the bytes around are untouched
    assert after[OUT + x.nbytes :] == before[OUT + x.nbytes :]


def test_softmax_chunks_along_rows_and_reads_columns_whole(
    servicer: ActivationServicer, segment: File, whole_reads: list[shm.Region]
) -> None:
    x = _x((30, 40))
    for axis, read_whole in ((1, False), (0, True)):
        whole_reads.clear()
        request = pb.SoftmaxRequest(input=segment.put(0, x), axis=axis)
        request.output_region.CopyFrom(segment.region(8192, x.nbytes))
        servicer.Softmax(request, FakeContext())
        plain = pb.SoftmaxRequest(input=wire.encode(x), axis=axis)
        expected = _decoded(servicer.Softmax(plain, FakeContext()).output)
        assert segment.get(8192, x).tobytes() == expected.tobytes()
        # Along axis 0 the chunks are column blocks, not runs of elements.
        assert bool(whole_reads) is read_whole


def test_bfloat16_is_widened_whole_and_still_exact(
    servicer: ActivationServicer, segment: File
) -> None:
    x = _x((20, 50), ml_dtypes.bfloat16)
    request = pb.ActivateRequest(function="sigmoid", input=segment.put(64, x))
    request.output_region.CopyFrom(segment.region(4096, x.nbytes))
    servicer.Activate(request, FakeContext())
    plain = pb.ActivateRequest(function="sigmoid", input=wire.encode(x))
    expected = _decoded(servicer.Activate(plain, FakeContext()).output)
    assert segment.get(4096, x).tobytes() == expected.tobytes()


@pytest.mark.parametrize("slope_shape", [(40, 1), (40, 25), (1, 25)])
def test_gradient_with_every_tensor_in_regions(
    servicer: ActivationServicer, segment: File, slope_shape: tuple[int, ...]
) -> None:
    x = _x((40, 25))
    g = np.linspace(-2, 2, x.size, dtype=np.float32).reshape(x.shape)
    slope = np.linspace(0.01, 0.5, int(np.prod(slope_shape)), dtype=np.float32)
    slope = slope.reshape(slope_shape)
    request = pb.GradientRequest(function="prelu", input=segment.put(0, x), return_output=True)
    request.grad_output.CopyFrom(segment.put(8192, g))
    request.params["slope"].tensor.CopyFrom(segment.put(16384, slope))
    request.grad_input_region.CopyFrom(segment.region(24576, x.nbytes))
    request.output_region.CopyFrom(segment.region(32768, x.nbytes))
    response = servicer.Gradient(request, FakeContext())

    plain = pb.GradientRequest(
        function="prelu", input=wire.encode(x), grad_output=wire.encode(g), return_output=True
    )
    plain.params["slope"].tensor.CopyFrom(wire.encode(slope))
    expected = servicer.Gradient(plain, FakeContext())
    assert segment.get(24576, x).tobytes() == _decoded(expected.grad_input).tobytes()
    assert segment.get(32768, x).tobytes() == _decoded(expected.output).tobytes()
    ours = _decoded(response.grad_params["slope"])
    np.testing.assert_array_equal(ours, _decoded(expected.grad_params["slope"]))


def test_gradient_into_a_region_with_its_output_in_the_message(
    servicer: ActivationServicer, segment: File
) -> None:
    x = _x((500,))
    request = pb.GradientRequest(function="swish", input=segment.put(0, x), return_output=True)
    request.grad_input_region.CopyFrom(segment.region(4096, x.nbytes))
    response = servicer.Gradient(request, FakeContext())
    plain = pb.GradientRequest(function="swish", input=wire.encode(x), return_output=True)
    expected = servicer.Gradient(plain, FakeContext())
    assert segment.get(4096, x).tobytes() == _decoded(expected.grad_input).tobytes()
    assert response.output.WhichOneof("payload") == "data"
    assert _decoded(response.output).tobytes() == _decoded(expected.output).tobytes()


@pytest.mark.parametrize(
    "shift",
    [0, 4, 256, -256, 2000],
    ids=["in-place", "one-element", "one-chunk", "one-chunk-before", "tail"],
)
def test_outputs_over_inputs_see_the_inputs_as_sent(
    servicer: ActivationServicer, segment: File, whole_reads: list[shm.Region], shift: int
) -> None:
    """An output region on the input's own bytes (in place) is computed chunk by chunk;
    one that overlaps them elsewhere would overwrite chunks not read yet, so that
    input is read whole first. Either way the result is that of the input as sent."""
    x = _x((1000,))
    base = 8192
    request = pb.ActivateRequest(function="tanh", input=segment.put(base, x))
    request.output_region.CopyFrom(segment.region(base + shift, x.nbytes))
    servicer.Activate(request, FakeContext())
    plain = pb.ActivateRequest(function="tanh", input=wire.encode(x))
    expected = _decoded(servicer.Activate(plain, FakeContext()).output)
    assert segment.get(base + shift, x).tobytes() == expected.tobytes()
    assert bool(whole_reads) is (shift != 0)


def test_gradient_outputs_over_its_grad_output(
    servicer: ActivationServicer, segment: File, whole_reads: list[shm.Region]
) -> None:
    """grad_output is read after the output regions are reserved: the same rule."""
    x = _x((1000,))
    g = _x((1000,)) / 3
    request = pb.GradientRequest(function="sigmoid", input=segment.put(0, x))
    request.grad_input_region.CopyFrom(segment.region(8192 + 400, x.nbytes))
    request.grad_output.CopyFrom(segment.put(8192, g))
    servicer.Gradient(request, FakeContext())
    plain = pb.GradientRequest(function="sigmoid", input=wire.encode(x), grad_output=wire.encode(g))
    expected = _decoded(servicer.Gradient(plain, FakeContext()).grad_input)
    assert segment.get(8192 + 400, x).tobytes() == expected.tobytes()
    assert [r.offset for r in whole_reads] == [8192]


def test_a_segment_shrunk_between_chunks_fails_that_call_only(
    servicer: ActivationServicer, segment: File, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _x((1000,))
    request = pb.ActivateRequest(function="sigmoid", input=segment.put(0, x))
    request.output_region.CopyFrom(segment.region(8192, x.nbytes))
    original = shm.RegionTensor.read
    reads: list[int] = []

    def read(self: shm.RegionTensor, start: int, stop: int) -> Any:
        reads.append(start)
        if len(reads) == 3:
            os.ftruncate(segment.fd, 1024)
        return original(self, start, stop)

    monkeypatch.setattr(shm.RegionTensor, "read", read)
    with pytest.raises(Aborted) as info:
        servicer.Activate(request, FakeContext())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "shrank during the call" in info.value.details
    assert len(reads) == 3
    # The server serves the next call, on a whole segment.
    os.pwrite(segment.fd, b"\x00" * SEGMENT_BYTES, 0)
    monkeypatch.setattr(shm.RegionTensor, "read", original)
    request = pb.ActivateRequest(function="sigmoid", input=segment.put(0, x))
    request.output_region.CopyFrom(segment.region(8192, x.nbytes))
    servicer.Activate(request, FakeContext())
    np.testing.assert_allclose(
        segment.get(8192, x), 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6
    )
