"""Reading and writing tensors in POSIX shared memory that a client on this host made.

The same-host fast path (``--allow-shared-memory``): a client puts its tensors in a
shared-memory segment, sends the segment's name, offsets and sizes in place of the
bytes (``Tensor.region``), and reads the results the server wrote back into regions
it named (``output_region``, ...). What the server accepts is
the trust model, enforced here on every call:

- only with ``--allow-shared-memory`` (otherwise FAILED_PRECONDITION);
- the name is the SDK's: ``actgrad-`` and then ``[A-Za-z0-9_.-]``, no ``/``, so it
  names a file directly in the shared-memory directory (``/dev/shm``);
- the file is opened with O_NOFOLLOW (a symbolic link is refused), must be a
  regular file owned by the server's effective user, with one link and no group
  or other permission bits (the SDK creates segments 0600);
- every region lies within the file's size as fstat reports it, and has exactly
  the byte length its dtype and shape need; the usual element and rank limits
  apply before anything is mapped;
- inputs are read with pread into the server's own memory, from their region
  only; outputs are written with pwrite into their region and nowhere else;
  outputs must not overlap;
- where the engine computes a tensor in chunks that are runs of elements, an
  input is read and its result written one chunk at a time (`RegionTensor`,
  `RegionSink`), so that neither is ever copied whole into the server's memory;
  an output region that overlaps an input region other than exactly (in place)
  has that input read whole before anything is written;
- the server never creates, resizes or unlinks a segment, and never maps one: a
  segment shrunk during a call (by a client going wrong, or on purpose) gives a
  short read, which is INVALID_ARGUMENT for that call. A shared mapping would
  fault the whole process with SIGBUS instead, taking every call of the worker
  down with it. The copy costs about 0.2 ms per MiB here (docs/shared-memory.md).
  A call that fails part way (a segment shrunk under it) may leave an output
  region partly written.

Same user means the client could harm the server anyway (it may signal or trace
it), so what this guards against is confusion, not a hostile peer: a segment of
another program, another user's file, a typo in a name.

A segment missing or inaccessible here means the client is not on this host (or
not in this container, or another user): FAILED_PRECONDITION, so that it falls
back to sending the bytes. Nothing here imports grpc.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from actgrad.wire import check_shape, wire_dtype
from actgrad_server.errors import ActgradServerError, ConfigError, InvalidArgument, shown

__all__ = [
    "DEFAULT_DIRECTORY",
    "SEGMENT_PREFIX",
    "FailedPrecondition",
    "Region",
    "RegionSink",
    "RegionTensor",
    "SharedMemory",
    "Transfer",
    "check_name",
    "describe",
]

DEFAULT_DIRECTORY = "/dev/shm"
SEGMENT_PREFIX = "actgrad-"
# NAME_MAX is 255; the prefix plus 200 characters stays well under it.
_NAME = re.compile(re.escape(SEGMENT_PREFIX) + r"[A-Za-z0-9_.-]{1,200}")
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# pread and pwrite move at most about 2 GiB per call on Linux.
_IO_STEP = 1 << 30


class FailedPrecondition(ActgradServerError):
    """The transfer cannot work on this server; the client should send the bytes."""

    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Region:
    """Bytes [offset, offset + size) of the segment named `segment`."""

    segment: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


class TensorHeader(Protocol):
    """A wire Tensor's metadata (actgrad.v1.Tensor): dtype and shape."""

    @property
    def dtype(self) -> Any: ...
    @property
    def shape(self) -> Any: ...


@dataclass
class _Segment:
    fd: int
    size: int
    inode: tuple[int, int]


class SharedMemory:
    """The server's access to client segments; one per front end.

    >>> SharedMemory(allowed=False).transfer()  # doctest: +SKIP
    FailedPrecondition: shared memory is not allowed on this server ...
    """

    def __init__(
        self,
        *,
        allowed: bool,
        directory: str = DEFAULT_DIRECTORY,
        uid: int | None = None,
    ) -> None:
        self.allowed = allowed
        self.directory = directory
        self.uid = os.geteuid() if uid is None else uid
        if allowed and not os.path.isdir(directory):
            raise ConfigError(
                f"allow_shared_memory needs the shared-memory directory {directory}, "
                "which does not exist here"
            )

    @contextmanager
    def transfer(self) -> Iterator[Transfer]:
        """One call's access: every segment opened and region mapped is released after."""
        if not self.allowed:
            raise FailedPrecondition(
                "shared memory is not allowed on this server; send the tensors in the message"
            )
        transfer = Transfer(self)
        try:
            yield transfer
        finally:
            transfer.close()


def check_name(name: str, *, field: str) -> None:
    """Refuses names that are not the SDK's (INVALID_ARGUMENT)."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{field}.segment: {shown(name)} is not an actgrad segment name "
            f"({SEGMENT_PREFIX!r} and then 1 to 200 of [A-Za-z0-9_.-])"
        )


def describe(
    tensor: TensorHeader, *, field: str, max_rank: int, max_elements: int
) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Checks a tensor header whose bytes are in a region: dtype, shape, byte length."""
    info = wire_dtype(int(tensor.dtype), field=f"{field}.dtype")
    shape = tuple(int(d) for d in tensor.shape)
    count = check_shape(shape, field=f"{field}.shape", max_rank=max_rank, max_elements=max_elements)
    return info.numpy, shape, count * info.itemsize


class RegionTensor:
    """An input tensor in a client's region, read with pread when asked: a piece at a
    time (`read`, for the engine's chunks) or whole (`array`). Both copy into the
    server's own memory. Made by `Transfer.source`."""

    def __init__(
        self,
        segment: _Segment,
        region: Region,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        *,
        field: str,
    ) -> None:
        self._segment = segment
        self.region = region
        self.dtype = dtype
        self.shape = shape
        self._field = field
        self._whole: npt.NDArray[Any] | None = None

    @property
    def nbytes(self) -> int:
        return self.region.size

    @property
    def inode(self) -> tuple[int, int]:
        return self._segment.inode

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        """Elements [start, stop) of the C-ordered tensor, as a 1-d array of our own."""
        if self._whole is not None:
            return self._whole.reshape(-1)[start:stop]
        itemsize = self.dtype.itemsize
        if not 0 <= start <= stop <= self.region.size // max(1, itemsize):
            raise ValueError(f"elements [{start}, {stop}) lie outside {self._field}")
        buffer = np.empty(stop - start, dtype=self.dtype)
        self._pread(buffer.view(np.uint8), self.region.offset + start * itemsize)
        return buffer

    def array(self) -> npt.NDArray[Any]:
        """The whole tensor, read-only, read once."""
        if self._whole is None:
            buffer = np.empty(self.region.size, dtype=np.uint8)
            if self.region.size:
                self._pread(buffer, self.region.offset)
            whole = buffer.view(self.dtype).reshape(self.shape)
            whole.flags.writeable = False
            self._whole = whole
        return self._whole

    def _pread(self, buffer: npt.NDArray[np.uint8], offset: int) -> None:
        # Into memory of our own: a segment that shrinks meanwhile is a short read here,
        # never a fault of the process (see the module's docstring).
        view = memoryview(buffer.data).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self._segment.fd, [view[done : done + _IO_STEP]], offset + done)
            if got <= 0:
                raise InvalidArgument(
                    f"{self._field}: segment {self.region.segment!r} shrank during the call"
                )
            done += got


class RegionSink:
    """A result's way into an output region reserved by `Transfer.reserve`, a piece
    at a time (`write`) or whole (`write_all`), with pwrite. Made by `Transfer.sink`."""

    def __init__(self, segment: _Segment, region: Region, *, field: str) -> None:
        self._segment = segment
        self.region = region
        self._field = field

    def write(self, start: int, piece: npt.NDArray[Any]) -> None:
        """`piece`, C-ordered, at element `start` of the region's tensor."""
        data = np.ascontiguousarray(piece)
        offset = start * data.dtype.itemsize
        if offset < 0 or offset + data.nbytes > self.region.size:
            raise RuntimeError(
                f"{self._field}: {data.nbytes} result bytes at byte {offset} of a "
                f"{self.region.size}-byte region"
            )
        self._pwrite(data, self.region.offset + offset)

    def write_all(self, result: npt.NDArray[Any]) -> None:
        """The whole result, which must fill the region exactly."""
        data = np.ascontiguousarray(result)
        if data.nbytes != self.region.size:
            raise RuntimeError(
                f"{self._field}: {data.nbytes} result bytes for a {self.region.size}-byte region"
            )
        self._pwrite(data, self.region.offset)

    def _pwrite(self, data: npt.NDArray[Any], offset: int) -> None:
        fd = self._segment.fd
        # pwrite past the end would grow the segment; the server never resizes one.
        if os.fstat(fd).st_size < offset + data.nbytes:
            raise InvalidArgument(
                f"{self._field}: segment {self.region.segment!r} shrank during the call"
            )
        # Bytes, whatever the dtype (bfloat16 has no buffer format of its own).
        view = data.reshape(-1).view(np.uint8).data
        done = 0
        while done < data.nbytes:
            written = os.pwrite(fd, view[done : done + _IO_STEP], offset + done)
            if written <= 0:
                raise OSError(errno.EIO, f"{self._field}: short write to the shared-memory segment")
            done += written


class Transfer:
    """The segments of one call. Use through `SharedMemory.transfer()`."""

    def __init__(self, shared: SharedMemory) -> None:
        self._shared = shared
        self._segments: dict[str, _Segment] = {}
        self._outputs: list[tuple[tuple[int, int], Region, str]] = []
        self._inputs: list[RegionTensor] = []

    def source(
        self,
        tensor: TensorHeader,
        region: Region,
        *,
        field: str,
        region_field: str,
        max_rank: int,
        max_elements: int,
    ) -> RegionTensor:
        """The input in `region`, of the header's dtype and shape, read when asked."""
        dtype, shape, nbytes = describe(
            tensor, field=field, max_rank=max_rank, max_elements=max_elements
        )
        segment = self._locate(region, nbytes, field=region_field)
        source = RegionTensor(segment, region, dtype, shape, field=region_field)
        for inode, output, _ in self._outputs:
            _read_first_if_overlapped(source, inode, output)
        self._inputs.append(source)
        return source

    def reserve(self, region: Region, nbytes: int, *, field: str) -> None:
        """Checks an output region before computing: its size, bounds and overlaps."""
        segment = self._locate(region, nbytes, field=field)
        for inode, other, other_field in self._outputs:
            if inode == segment.inode and region.offset < other.end and other.offset < region.end:
                raise InvalidArgument(f"{field}: overlaps {other_field}")
        for source in self._inputs:
            _read_first_if_overlapped(source, segment.inode, region)
        self._outputs.append((segment.inode, region, field))

    def sink(self, region: Region, *, field: str) -> RegionSink:
        """The way into a region checked by `reserve`, and only there."""
        if not any(r == region and f == field for _, r, f in self._outputs):
            raise RuntimeError(f"{field}: region was not reserved")
        return RegionSink(self._segments[region.segment], region, field=field)

    def write(self, region: Region, array: npt.NDArray[Any], *, field: str) -> None:
        """Writes a result into a region checked by `reserve`, and only there."""
        self.sink(region, field=field).write_all(array)

    def close(self) -> None:
        for segment in self._segments.values():
            os.close(segment.fd)
        self._segments.clear()

    def _locate(self, region: Region, nbytes: int, *, field: str) -> _Segment:
        if region.size != nbytes:
            raise InvalidArgument(
                f"{field}.size: is {region.size} bytes but the tensor needs {nbytes}"
            )
        segment = self._open(region.segment, field=field)
        if region.end > segment.size:
            raise InvalidArgument(
                f"{field}: bytes [{region.offset}, {region.end}) lie beyond the end of "
                f"segment {region.segment!r} ({segment.size} bytes)"
            )
        return segment

    def _open(self, name: str, *, field: str) -> _Segment:
        segment = self._segments.get(name)
        if segment is not None:
            return segment
        check_name(name, field=field)
        path = os.path.join(self._shared.directory, name)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{field}.segment: no segment {name!r} on the server's host; a client "
                "on another host or in another container must send the tensors"
            ) from None
        except PermissionError:
            raise FailedPrecondition(
                f"{field}.segment: segment {name!r} is not accessible to the server's user"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidArgument(f"{field}.segment: {name!r} is a symbolic link") from None
            reason = errno.errorcode.get(exc.errno or 0, "error")
            raise InvalidArgument(
                f"{field}.segment: {name!r} cannot be opened ({reason})"
            ) from None
        try:
            info = os.fstat(fd)
            _check_file(info, name=name, field=field, uid=self._shared.uid)
        except BaseException:
            os.close(fd)
            raise
        segment = _Segment(fd=fd, size=info.st_size, inode=(info.st_dev, info.st_ino))
        self._segments[name] = segment
        return segment


def _read_first_if_overlapped(source: RegionTensor, inode: tuple[int, int], output: Region) -> None:
    # Chunk k of an output is written after chunk k of every input is read, so an
    # output exactly on an input (in place) is safe chunk by chunk; one that overlaps
    # it elsewhere would overwrite input chunks not read yet.
    region = source.region
    if source.inode != inode or region == output:
        return
    if region.offset < output.end and output.offset < region.end:
        source.array()


def _check_file(info: os.stat_result, *, name: str, field: str, uid: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InvalidArgument(f"{field}.segment: {name!r} is not a regular file")
    if info.st_uid != uid:
        raise FailedPrecondition(
            f"{field}.segment: {name!r} belongs to another user than the server's"
        )
    if info.st_nlink != 1:
        raise InvalidArgument(f"{field}.segment: {name!r} has {info.st_nlink} links, not 1")
    if info.st_mode & 0o600 != 0o600:
        # As root the server could open a segment its owner cannot read or write
        # (mode 0000, 0200, 0400): not one the SDK made (0600).
        raise InvalidArgument(
            f"{field}.segment: {name!r} is not readable and writable by its owner "
            f"({stat.filemode(info.st_mode)}); segments are created 0600"
        )
    if info.st_mode & 0o077:
        raise InvalidArgument(
            f"{field}.segment: {name!r} has group or other permissions "
            f"({stat.filemode(info.st_mode)}); segments must be private to their user"
        )
