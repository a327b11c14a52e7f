"""Where a request's tensor bytes are: in the message, or in client shared memory.

Every tensor field of Activate, Gradient, Softmax and their streams (input,
grad_output, tensor parameters) goes through `Payloads.read`, whichever of the
Tensor's `payload` oneof is set: `data` is decoded with `actgrad.wire.decode` (a
view of the received bytes when the request was large, see `actgrad.wire.frames`),
a `region` is read through a `shm.Transfer`. `Payloads.source` is the same for the
tensors the engine can read a chunk at a time (input, grad_output): a region stays in
shared memory as a `shm.RegionTensor`. Results go out through `Payloads.put`: kept
for `Payloads.respond`, which frames them into the response, or written into the
output region the request named, whole or (through `Payloads.sink`, handed to the
engine) a chunk at a time. Large results in the message can be laid out in the bytes
gRPC sends before they are computed (`Payloads.prepare`, a `wire.Prepared`), so that
the engine writes them there directly. One `Payloads` serves one request message
(one chunk of a stream); the transfer is opened on its first region, so that a
request without one never touches shared memory, and closed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from actgrad.v1 import tensor_pb2
from actgrad.wire import Outgoing, Prepared, codec_for, decode, dtype_info, frame_for
from actgrad.wire.frames import SMALL_BYTES
from actgrad_server.catalog import Shaped
from actgrad_server.config import Limits
from actgrad_server.errors import InvalidArgument
from actgrad_server.shm import Region, RegionSink, RegionTensor, SharedMemory, Transfer

__all__ = ["Payloads"]


class _Like(Shaped, Protocol):
    """What a result will be like: an input's dtype, shape and byte length."""

    @property
    def nbytes(self) -> int: ...


class Payloads:
    """One request's tensors; use as a context manager (``with Payloads(...) as p:``)."""

    def __init__(self, shared: SharedMemory, limits: Limits) -> None:
        self._shared = shared
        self._limits = limits
        # Made on the first shared-memory region: most calls have none.
        self._stack: ExitStack | None = None
        self._transfer: Transfer | None = None
        self._results: dict[str, npt.NDArray[Any]] = {}
        # What each reserved output region will hold: its dtype and shape.
        self._reserved: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        self._prepared: Prepared | None = None

    def __enter__(self) -> Payloads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            self._stack.close()

    def _regions(self) -> Transfer:
        # FAILED_PRECONDITION here when the server does not allow shared memory.
        if self._transfer is None:
            self._stack = ExitStack()
            self._transfer = self._stack.enter_context(self._shared.transfer())
        return self._transfer

    def read(self, message: Any, name: str, field: str) -> npt.NDArray[Any]:
        """The tensor `message.<name>` as a read-only array; `field` names it in errors."""
        tensor = self.source(message, name, field)
        return tensor if isinstance(tensor, np.ndarray) else tensor.array()

    def source(self, message: Any, name: str, field: str) -> npt.NDArray[Any] | RegionTensor:
        """The tensor `message.<name>`: a read-only array, or a region left in shared
        memory for the engine to read a chunk at a time (an `engine.Source`)."""
        if not message.HasField(name):
            raise InvalidArgument(f"{field}: is required")
        tensor: tensor_pb2.Tensor = getattr(message, name)
        if tensor.WhichOneof("payload") == "region":
            return self._regions().source(
                tensor,
                _region(tensor.region),
                field=field,
                region_field=f"{field}.region",
                max_rank=self._limits.max_rank,
                max_elements=self._limits.max_elements,
            )
        return decode(
            tensor,
            field=field,
            max_rank=self._limits.max_rank,
            max_elements=self._limits.max_elements,
        )

    def reserve(
        self, message: Any, name: str, like: npt.NDArray[Any] | _Like
    ) -> tensor_pb2.SharedMemoryRegion | None:
        """The output region `message.<name>` checked for a result like `like`, or None.

        Called once the input is read (its byte size is known) and before
        anything is computed; output regions must not overlap each other.
        """
        if not message.HasField(name):
            return None
        region: tensor_pb2.SharedMemoryRegion = getattr(message, name)
        self._regions().reserve(_region(region), like.nbytes, field=name)
        self._reserved[name] = (like.dtype, tuple(like.shape))
        return region

    def sink(self, region: tensor_pb2.SharedMemoryRegion | None, field: str) -> RegionSink | None:
        """The reserved output region `field` as an `engine.Sink`, or None (no region)."""
        if region is None:
            return None
        return self._regions().sink(_region(region), field=field)

    def prepare(self, response: Message, results: Mapping[str, _Like]) -> dict[str, _Room]:
        """Sinks for the response's tensors `results` (name -> what the result will be
        like) straight into the bytes gRPC will send, or {} when they are small.

        Only for results that travel in the message, and once every other field of
        `response` is final: it is serialized now. `put` then takes None for them.
        """
        if self._prepared is not None or sum(r.nbytes for r in results.values()) < SMALL_BYTES:
            return {}
        self._prepared = Prepared(
            codec_for(type(response)),
            response,
            {name: (like.dtype, tuple(like.shape)) for name, like in results.items()},
        )
        return {name: _Room(self._prepared, name) for name in results}

    def put(
        self,
        array: npt.NDArray[Any] | None,
        region: tensor_pb2.SharedMemoryRegion | None,
        *,
        response: Message,
        name: str,
        field: str,
    ) -> None:
        """A result for the response's tensor `name`: kept for `respond`, or written
        into its reserved region now (None: the engine wrote it there through `sink`);
        the response then names the region."""
        if region is None:
            if array is None:
                if self._prepared is None or not self._prepared.HasField(name):
                    raise RuntimeError(f"{name}: no result, no region and not prepared")
                return
            self._results[name] = array
            return
        dtype, shape = self._reserved[field]
        if array is not None:
            self._regions().write(_region(region), array, field=field)
        out: tensor_pb2.Tensor = getattr(response, name)
        out.dtype = dtype_info(dtype).wire  # type: ignore[assignment]
        out.shape[:] = shape
        out.region.CopyFrom(region)

    def respond(self, response: Message) -> Message | Outgoing | Prepared:
        """`response` with its results: prepared ones already in the bytes gRPC sends;
        of those `put` kept, small ones encoded into it and large ones copied once,
        straight into the bytes gRPC sends (`actgrad.wire.frames`)."""
        if self._prepared is not None:
            if self._results:
                raise RuntimeError("a prepared response takes no more tensors")
            return self._prepared
        return frame_for(response, self._results)


class _Room:
    """An `engine.Sink` into a tensor's room in a `Prepared` response."""

    __slots__ = ("_name", "_prepared")

    def __init__(self, prepared: Prepared, name: str) -> None:
        self._prepared = prepared
        self._name = name

    def write(self, start: int, piece: npt.NDArray[Any]) -> None:
        flat = self._prepared.array(self._name).reshape(-1)
        flat[start : start + piece.size] = piece.reshape(-1)

    def write_all(self, result: npt.NDArray[Any]) -> None:
        room = self._prepared.array(self._name)
        np.copyto(room, result.reshape(room.shape), casting="no")


def _region(region: tensor_pb2.SharedMemoryRegion) -> Region:
    return Region(segment=region.segment, offset=region.offset, size=region.size)
