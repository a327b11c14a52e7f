"""Tensor-bearing messages read and written without copying their payloads.

protobuf's Python runtime copies a `bytes` field's value when it parses a message,
again each time the field is read, and again when a message is built and
serialized: a 4 MiB tensor went through four copies on each end of a call before
any of them was gRPC's own. This module reads and writes the *top-level* `Tensor`
fields of the actgrad.v1 requests and responses (`input`, `grad_output`, `output`,
`weight`, ...) by hand, and leaves every other byte to protobuf:

- `Codec.parse` walks the message's top-level fields, and inside each Tensor field
  finds the `data` entries (field 3). It hands everything else, re-framed without
  those entries, to protobuf (which validates it as usual), and returns a `Parsed`
  message whose tensors' `data` is a read-only memoryview of the received bytes.
  Whatever the walk does not understand exactly (wire types of groups, a varint
  or a length that runs past the end, a region that a later `data` overrides) is
  parsed by protobuf alone, so both paths accept, refuse and decode the same bytes
  (tests/unit/test_frames.py checks it against protobuf with random, reordered,
  repeated, unknown and truncated fields).
- `Codec.serialize` writes an `Outgoing` message: the tensors first (dtype, packed
  shape, then the payload copied once from the array, or written in place by the
  caller through `Frame.array`), then protobuf's serialization of the rest. Field
  order on the wire does not matter to any protobuf parser. A `Prepared` message is
  laid out before its tensors are computed: the server's engine writes its results
  straight into the bytes that gRPC then sends.

Small messages take protobuf's own path (`SMALL_BYTES`, 128 KiB): below that its C
parser and serializer, copies and all, are faster than the walk. The result is the same.
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from actgrad.v1 import tensor_pb2
from actgrad.wire.dtypes import dtype_info
from actgrad.wire.tensors import encode, to_float_array

__all__ = [
    "SMALL_BYTES",
    "Codec",
    "Frame",
    "Outgoing",
    "Parsed",
    "Prepared",
    "TensorView",
    "codec_for",
    "frame_for",
]

# Messages shorter than this are parsed and written by protobuf alone: the walk costs
# about 12 us whatever the size, protobuf's copies about 13 us per 100 KiB (measured
# in docs/performance.md, "Copies of the tensor bytes per call").
SMALL_BYTES = 128 << 10

_LEN = 2  # the wire type of length-delimited fields
_DATA_TAG = (3 << 3) | _LEN  # Tensor.data
_REGION_TAG = (4 << 3) | _LEN  # Tensor.region
_TENSOR = tensor_pb2.Tensor.DESCRIPTOR.full_name


class _Irregular(Exception):
    """The walk met bytes it does not handle exactly; protobuf parses them instead."""


# -- varints ----------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            break
    raise _Irregular


def _put_varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _skip(buf: bytes, pos: int, end: int, wire_type: int) -> int:
    """The position after a field's value that starts at `pos`."""
    if wire_type == 0:
        return _varint(buf, pos, end)[1]
    if wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    elif wire_type == _LEN:
        length, pos = _varint(buf, pos, end)
        pos += length
    else:  # groups (3, 4) and the undefined wire types 6, 7
        raise _Irregular
    if pos > end:
        raise _Irregular
    return pos


# -- reading ----------------------------------------------------------------------------


class TensorView:
    """A parsed `Tensor` whose `data` is a read-only view of the received bytes.

    Every other attribute is the protobuf Tensor's (dtype, shape, region, ...).
    """

    __slots__ = ("_tensor", "data")

    def __init__(self, tensor: tensor_pb2.Tensor, data: memoryview) -> None:
        self._tensor = tensor
        self.data = data

    def WhichOneof(self, group: str) -> str | None:
        return "data" if group == "payload" else self._tensor.WhichOneof(group)

    def HasField(self, name: str) -> bool:
        if name in ("data", "payload"):
            return True
        return self._tensor.HasField(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tensor, name)

    def __repr__(self) -> str:
        tensor = self._tensor
        size = len(self.data)
        return f"TensorView(dtype={tensor.dtype}, shape={list(tensor.shape)}, {size} bytes)"


class Parsed:
    """A message read by `Codec.parse`: protobuf's message, its tensors' data as views.

    Attribute access is the message's, except that a tensor field whose payload
    was `data` reads as a `TensorView`. `message` is the protobuf message itself,
    whose tensors have no `data` (their dtype, shape and any region are there).
    """

    __slots__ = ("_views", "message")

    def __init__(self, message: Message, views: dict[str, TensorView]) -> None:
        self.message = message
        self._views = views

    def __getattr__(self, name: str) -> Any:
        view = self._views.get(name)
        if view is not None:
            return view
        return _message_attribute(self.message, name, type(self).__name__)

    def __repr__(self) -> str:
        return f"Parsed({type(self.message).__name__}, tensors={sorted(self._views)})"


@dataclass
class _Occurrence:
    """One occurrence of a top-level Tensor field on the wire."""

    number: int
    start: int  # where its tag starts
    body: int  # where its value starts
    end: int
    data: list[tuple[int, int, int, int]]  # each data entry: (entry start, end, value start, end)
    regions: list[int]  # each region entry's start


class Codec:
    """Reads and writes one message type whose top-level Tensor fields carry data."""

    def __init__(self, message: type[Message]) -> None:
        self.message = message
        self.DESCRIPTOR = message.DESCRIPTOR  # named in errors like Message.FromString
        self.tensors: dict[int, str] = {
            f.number: f.name
            for f in message.DESCRIPTOR.fields
            if f.message_type is not None
            and f.message_type.full_name == _TENSOR
            and not _is_repeated(f)
        }
        self.numbers: dict[str, int] = {name: number for number, name in self.tensors.items()}

    # -- parse ---------------------------------------------------------------------

    def parse(self, buf: bytes) -> Message | Parsed:
        """`buf` as a message; raises protobuf's DecodeError for what it refuses."""
        if len(buf) < SMALL_BYTES or not self.tensors:
            return self.message.FromString(buf)
        try:
            rest, views = self._split(buf)
        except _Irregular:
            return self.message.FromString(buf)
        message = self.message.FromString(rest)
        if not views:
            return message
        data = memoryview(buf).toreadonly()
        return Parsed(
            message,
            {
                name: TensorView(getattr(message, name), data[start:end])
                for name, (start, end) in views.items()
            },
        )

    def _split(self, buf: bytes) -> tuple[bytes, dict[str, tuple[int, int]]]:
        end = len(buf)
        pos = 0
        occurrences: list[_Occurrence] = []
        while pos < end:
            start = pos
            tag, pos = _varint(buf, pos, end)
            number, wire_type = tag >> 3, tag & 7
            if number == 0:
                raise _Irregular
            if wire_type == _LEN and number in self.tensors:
                length, body = _varint(buf, pos, end)
                pos = body + length
                if pos > end:
                    raise _Irregular
                occurrences.append(self._tensor_entries(buf, number, start, body, pos))
            else:
                pos = _skip(buf, pos, end, wire_type)
        if not any(o.data for o in occurrences):
            raise _Irregular  # nothing to gain: protobuf parses it all
        views: dict[str, tuple[int, int]] = {}
        strip: dict[int, set[int]] = {}  # occurrence index -> data entry starts to drop
        for number, name in self.tensors.items():
            mine = [(i, o) for i, o in enumerate(occurrences) if o.number == number]
            if not any(o.data for _, o in mine):
                continue
            # The payload is a oneof: the last of its entries on the wire wins.
            # Positions are offsets into `buf`, so they order entries across occurrences.
            last_data = max(d[0] for _, o in mine for d in o.data)
            if any(r < last_data for _, o in mine for r in o.regions):
                raise _Irregular  # a region that data clears: protobuf decides
            for i, o in mine:
                strip[i] = {d[0] for d in o.data}
            if not any(r > last_data for _, o in mine for r in o.regions):
                entry = last_data
                for _, o in mine:
                    for d in o.data:
                        if d[0] == entry:
                            views[name] = (d[2], d[3])
        rest = bytearray()
        pos = 0
        for i, o in enumerate(occurrences):
            drop = strip.get(i)
            if not drop:
                continue
            rest += buf[pos : o.start]
            kept = bytearray()
            cursor = o.body
            for entry_start, entry_end, _, _ in o.data:
                kept += buf[cursor:entry_start]
                cursor = entry_end
            kept += buf[cursor : o.end]
            _put_varint((o.number << 3) | _LEN, rest)
            _put_varint(len(kept), rest)
            rest += kept
            pos = o.end
        rest += buf[pos:]
        return bytes(rest), views

    @staticmethod
    def _tensor_entries(buf: bytes, number: int, start: int, body: int, end: int) -> _Occurrence:
        found = _Occurrence(number, start, body, end, [], [])
        pos = body
        while pos < end:
            entry = pos
            tag, pos = _varint(buf, pos, end)
            if tag >> 3 == 0:
                raise _Irregular
            if tag == _DATA_TAG:
                length, value = _varint(buf, pos, end)
                pos = value + length
                if pos > end:
                    raise _Irregular
                found.data.append((entry, pos, value, pos))
                continue
            if tag == _REGION_TAG:
                found.regions.append(entry)
            pos = _skip(buf, pos, end, tag & 7)
        return found

    # -- serialize ---------------------------------------------------------------------

    def serialize(self, message: Any) -> bytes:
        """A protobuf message, an `Outgoing` or a `Prepared` as wire bytes."""
        if isinstance(message, Outgoing | Prepared):
            return message.serialize()
        return message.SerializeToString()  # type: ignore[no-any-return]


def _is_repeated(field: Any) -> bool:
    # protobuf 5+ has `is_repeated`; `label` is deprecated there.
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


_CODECS: dict[type[Message], Codec] = {}


def codec_for(message: type[Message]) -> Codec:
    """The codec of a message type (made once)."""
    codec = _CODECS.get(message)
    if codec is None:
        codec = _CODECS[message] = Codec(message)
    return codec


# -- writing ----------------------------------------------------------------------------


def _tensor_header(number: int, wire_dtype: int, shape: Iterable[int], nbytes: int) -> bytes:
    """A top-level Tensor field up to its payload: tag, length, dtype, shape, data tag."""
    inner = bytearray()
    if wire_dtype:
        inner.append((1 << 3) | 0)
        _put_varint(wire_dtype, inner)
    dims = bytearray()
    for dim in shape:
        _put_varint(dim, dims)
    if dims:
        inner.append((2 << 3) | _LEN)
        _put_varint(len(dims), inner)
        inner += dims
    inner.append(_DATA_TAG)
    _put_varint(nbytes, inner)
    head = bytearray()
    _put_varint((number << 3) | _LEN, head)
    _put_varint(len(inner) + nbytes, head)
    return bytes(head + inner)


if sys.implementation.name == "cpython":
    # The C API's way to build a bytes object in place: PyBytes_FromStringAndSize(NULL,
    # n) returns an uninitialised object for its creator to fill before anyone else
    # sees it (PyBytes_AsString gives the address). gRPC takes bytes, and this saves
    # the copy from a bytearray.
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _bytes_address = ctypes.pythonapi.PyBytes_AsString
    _bytes_address.restype = ctypes.c_void_p
    _bytes_address.argtypes = (ctypes.py_object,)

    def _writable_bytes(size: int) -> tuple[Any, memoryview]:
        made = _new_bytes(None, size)
        if size == 0:
            return made, memoryview(bytearray())
        window = (ctypes.c_char * size).from_address(_bytes_address(made))
        return made, memoryview(window).cast("B")

else:  # pragma: no cover - other interpreters: one more copy at the end

    def _writable_bytes(size: int) -> tuple[Any, memoryview]:
        made = bytearray(size)
        return made, memoryview(made)


class Frame:
    """A response or request whose tensor payloads are written in place.

    `Frame(codec, rest, {"output": (dtype, shape)})` lays out the wire bytes: each
    tensor's header and room for its payload, then `rest` (a message of the same
    type without those tensors) serialized by protobuf. `array(name)` is a
    writable numpy array over that room; fill each one before `finish()`, which
    returns the bytes (after it, the arrays must not be used).
    """

    def __init__(
        self,
        codec: Codec,
        rest: Message,
        tensors: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
    ) -> None:
        numbers = codec.numbers
        for name in tensors:
            if rest.HasField(name):
                raise ValueError(f"{name}: is framed, so it must not be set in the message too")
        tail = rest.SerializeToString()
        parts: list[tuple[bytes, np.dtype[Any], tuple[int, ...], int]] = []
        size = len(tail)
        for name, (dtype, shape) in tensors.items():
            info = dtype_info(dtype)
            nbytes = math.prod(shape) * info.itemsize
            header = _tensor_header(numbers[name], info.wire, shape, nbytes)
            parts.append((header, info.numpy, tuple(shape), nbytes))
            size += len(header) + nbytes
        self._bytes, window = _writable_bytes(size)
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        pos = 0
        for name, (header, dtype, shape, nbytes) in zip(tensors, parts, strict=True):
            window[pos : pos + len(header)] = header
            pos += len(header)
            self._arrays[name] = np.frombuffer(window[pos : pos + nbytes], dtype=dtype).reshape(
                shape
            )
            pos += nbytes
        window[pos:] = tail
        self._window: memoryview | None = window
        self.size = size

    def array(self, name: str) -> npt.NDArray[Any]:
        """The writable room for tensor `name`'s payload, of its dtype and shape."""
        if self._window is None:
            raise RuntimeError("the frame is finished")
        return self._arrays[name]

    def finish(self) -> bytes:
        """The wire bytes; the arrays are released and must not be used any more."""
        self._arrays.clear()
        if self._window is not None:
            self._window.release()
            self._window = None
        made = self._bytes
        return made if isinstance(made, bytes) else bytes(made)


class Outgoing:
    """A request (or response) to serialize with its arrays copied straight in.

    `message` holds every field but the big tensors; `arrays` maps a top-level
    Tensor field's name to a C-contiguous array of a served dtype (see
    `actgrad.wire.to_float_array`). Serializing copies each array once, into the
    bytes gRPC sends; it can be serialized again (a retried call).
    """

    __slots__ = ("arrays", "codec", "message")

    def __init__(self, codec: Codec, message: Message, arrays: Mapping[str, npt.NDArray[Any]]):
        self.codec = codec
        self.message = message
        # Any strides are fine (copied once either way); other dtypes are converted.
        self.arrays = {
            name: array if _served(array) else to_float_array(array, name=name)
            for name, array in arrays.items()
        }

    def serialize(self) -> bytes:
        frame = Frame(
            self.codec,
            self.message,
            {name: (array.dtype, array.shape) for name, array in self.arrays.items()},
        )
        for name, array in self.arrays.items():
            np.copyto(frame.array(name), array, casting="no")
        return frame.finish()

    def SerializeToString(self) -> bytes:
        return self.serialize()

    def ByteSize(self) -> int:
        """The serialized size, without serializing."""
        numbers = self.codec.numbers
        size = self.message.ByteSize()
        for name, array in self.arrays.items():
            info = dtype_info(array.dtype)
            size += len(_tensor_header(numbers[name], info.wire, array.shape, array.nbytes))
            size += array.nbytes
        return size

    def __getattr__(self, name: str) -> Any:
        # Reads as the message would (labels, logs, tests): a framed tensor is encoded
        # on demand, a copy.
        array = self.arrays.get(name)
        if array is not None:
            return encode(array)
        return _message_attribute(self.message, name, type(self).__name__)

    def HasField(self, name: str) -> bool:
        return name in self.arrays or self.message.HasField(name)

    def __repr__(self) -> str:
        shapes = {name: array.shape for name, array in self.arrays.items()}
        return f"Outgoing({type(self.message).__name__}, {shapes})"


class Prepared:
    """A response laid out before its large tensors are computed.

    `Prepared(codec, message, {"output": (dtype, shape)})` makes the bytes gRPC will
    send at once (a `Frame`): `array(name)` is the writable room for tensor `name`'s
    payload, which the caller fills in place (the server's engine writes its results
    there, chunk by chunk), and `serialize()` hands the bytes over without copying
    the payloads again. `message` holds every other field and must be complete when
    the message is prepared (it is serialized then). Fill every room before the
    first `serialize()`; after it the rooms are gone, and reading a tensor field
    parses the bytes.
    """

    __slots__ = ("_bytes", "_frame", "_names", "codec", "message")

    def __init__(
        self,
        codec: Codec,
        message: Message,
        tensors: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
    ) -> None:
        self.codec = codec
        self.message = message
        self._names = frozenset(tensors)
        self._frame: Frame | None = Frame(codec, message, tensors)
        self._bytes: bytes | None = None

    def array(self, name: str) -> npt.NDArray[Any]:
        """The writable room for tensor `name`'s payload, of its dtype and shape."""
        if self._frame is None:
            raise RuntimeError("the message is serialized: its tensors cannot change")
        return self._frame.array(name)

    def serialize(self) -> bytes:
        if self._bytes is None:
            if self._frame is None:  # pragma: no cover - set together
                raise RuntimeError("nothing to serialize")
            self._bytes = self._frame.finish()
            self._frame = None
        return self._bytes

    def SerializeToString(self) -> bytes:
        return self.serialize()

    def ByteSize(self) -> int:
        return self._frame.size if self._frame is not None else len(self.serialize())

    def __getattr__(self, name: str) -> Any:
        if name in self._names:
            # Reads as the message would (logs, tests): parsed from the bytes sent.
            return getattr(type(self.message).FromString(self.serialize()), name)
        return _message_attribute(self.message, name, type(self).__name__)

    def HasField(self, name: str) -> bool:
        return name in self._names or self.message.HasField(name)

    def __repr__(self) -> str:
        return f"Prepared({type(self.message).__name__}, {sorted(self._names)})"


# What a Parsed or Outgoing message reads from the protobuf message it wraps: fields
# and what describes them. Its methods that see the whole message (SerializeToString,
# ByteSize, CopyFrom, ==, ...) would not see the framed tensors, so they are refused.
_MESSAGE_ATTRIBUTES = frozenset({"DESCRIPTOR", "HasField", "WhichOneof"})


def _message_attribute(message: Message, name: str, wrapper: str) -> Any:
    if name in _MESSAGE_ATTRIBUTES or name in message.DESCRIPTOR.fields_by_name:
        return getattr(message, name)
    raise AttributeError(
        f"{wrapper} has no attribute {name!r}: it reads a message's fields; its "
        f"`message` is the protobuf message without the framed tensors"
    )


def _served(array: npt.NDArray[Any]) -> bool:
    try:
        return dtype_info(array.dtype).numpy == array.dtype
    except KeyError:
        return False


def frame_for(message: Message, arrays: Mapping[str, npt.NDArray[Any]]) -> Message | Outgoing:
    """`message` with `arrays` as its tensors: encoded in it when small, else `Outgoing`."""
    if sum(a.nbytes for a in arrays.values()) < SMALL_BYTES:
        for name, array in arrays.items():
            encode(array, out=getattr(message, name))
        return message
    codec = codec_for(type(message))
    return Outgoing(codec, message, arrays)
