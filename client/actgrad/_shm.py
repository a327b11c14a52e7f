"""The SDK's side of the same-host fast path: its own POSIX shared-memory segments.

A `SegmentPool` creates segments in ``/dev/shm`` (named ``actgrad-<pid>-<random>-<n>``,
mode 0600, created exclusively, never through a symbolic link, with their memory
reserved up front so that a full ``/dev/shm`` is an error here and not a crash
later), lends one to each call, keeps a few idle ones for reuse, and unlinks
every one of them on `close()`, when it is garbage-collected, and at interpreter
exit. A segment is only written by this process and the server it names it to.

Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import mmap
import os
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALIGNMENT",
    "DIRECTORY",
    "PREFIX",
    "Segment",
    "SegmentPool",
    "is_local_target",
    "layout",
]

_LOGGER = logging.getLogger(__name__)

DIRECTORY = "/dev/shm"
PREFIX = "actgrad-"
# Every region starts on a cache line (and so on any dtype's alignment).
ALIGNMENT = 64
_MIN_SEGMENT_BYTES = 1 << 20
_MAX_IDLE_SEGMENTS = 4


@dataclass(eq=False)
class Segment:
    """One mapped segment of the pool: `name` is what the server opens."""

    name: str
    size: int
    mapping: mmap.mmap = field(repr=False)

    def array(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
        """A writable view of bytes at `offset` as an array of `dtype` and `shape`."""
        count = 1
        for dim in shape:
            count *= dim
        return np.frombuffer(self.mapping, dtype=dtype, count=count, offset=offset).reshape(shape)


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of regions of `sizes` bytes laid end to end, aligned, and the total."""
    offsets = []
    end = 0
    for size in sizes:
        start = -(-end // ALIGNMENT) * ALIGNMENT
        offsets.append(start)
        end = start + size
    return offsets, end


def is_local_target(target: str) -> bool:
    """True when a gRPC target names this host: loopback addresses, localhost, unix:."""
    text = target.strip()
    if text.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in ("ipv4:", "ipv6:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    if text.startswith("dns:"):
        # dns:[//authority/]host[:port]
        text = text[len("dns:") :]
        if text.startswith("//"):
            text = text[2:].partition("/")[2]
    if text.startswith("["):
        host = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    else:
        host = text  # a bare host, or an IPv6 address without a port
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cleanup(paths: dict[str, Segment], pid: int) -> None:
    """Unlinks every segment still in `paths` (finalizer: also runs at exit)."""
    if os.getpid() != pid:
        return  # a forked child: the segments are the parent's to remove
    for path, segment in list(paths.items()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # A view still referenced keeps its mapping alive; it goes with the view.
        with contextlib.suppress(BufferError):
            segment.mapping.close()
        paths.pop(path, None)


class SegmentPool:
    """Segments lent one per call, reused, and unlinked on `close()`.

    Thread-safe: concurrent calls each hold their own segment.
    """

    def __init__(
        self,
        *,
        directory: str = DIRECTORY,
        max_idle: int = _MAX_IDLE_SEGMENTS,
        min_size: int = _MIN_SEGMENT_BYTES,
    ) -> None:
        self.directory = directory
        self._max_idle = max_idle
        self._min_size = min_size
        # The random part keeps names unguessable, so nobody else can squat them.
        self._stem = f"{PREFIX}{os.getpid()}-{secrets.token_hex(8)}-"
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._idle: list[Segment] = []
        self._closed = False
        # Every segment this pool created and has not unlinked, by path.
        self._live: dict[str, Segment] = {}
        self._finalizer = weakref.finalize(self, _cleanup, self._live, os.getpid())

    @property
    def names(self) -> list[str]:
        """Names of the segments that exist now (idle or lent)."""
        with self._lock:
            return sorted(s.name for s in self._live.values())

    def acquire(self, nbytes: int) -> Segment:
        """A segment of at least `nbytes` bytes, idle or new; raises OSError when none
        can be made (no /dev/shm, or it is full)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the segment pool is closed")
            fitting = [s for s in self._idle if s.size >= nbytes]
            if fitting:
                segment = min(fitting, key=lambda s: s.size)
                self._idle.remove(segment)
                return segment
            name = f"{self._stem}{next(self._counter)}"
        size = max(self._min_size, 1 << max(nbytes - 1, 0).bit_length())
        segment = self._create(name, size)
        with self._lock:
            if self._closed:
                self._destroy(segment)
                raise RuntimeError("the segment pool is closed")
            self._live[self._path(name)] = segment
        return segment

    def release(self, segment: Segment) -> None:
        """Gives a segment back: kept for reuse, or unlinked beyond `max_idle`."""
        with self._lock:
            if self._closed or self._path(segment.name) not in self._live:
                self._forget(segment)
                return
            self._idle.append(segment)
            if len(self._idle) <= self._max_idle:
                return
            # Keep the largest: a pool that grew serves the sizes it grew for.
            smallest = min(self._idle, key=lambda s: s.size)
            self._idle.remove(smallest)
            self._forget(smallest)

    def close(self) -> None:
        """Unlinks every segment; idempotent. Lent segments stay mapped until released."""
        with self._lock:
            self._closed = True
            for path in list(self._live):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            self._live.clear()
            idle, self._idle = self._idle, []
        # A lent segment is unmapped when its call releases it.
        for segment in idle:
            with contextlib.suppress(BufferError):
                segment.mapping.close()

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _forget(self, segment: Segment) -> None:
        """Unlinks and unmaps (called with the lock held)."""
        self._live.pop(self._path(segment.name), None)
        self._destroy(segment)

    def _destroy(self, segment: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(segment.name))
        with contextlib.suppress(BufferError):
            segment.mapping.close()

    def _create(self, name: str, size: int) -> Segment:
        path = self._path(name)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            # Reserves the memory now: writing to an unbacked page of a full
            # tmpfs would be SIGBUS instead of this OSError (ENOSPC).
            os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        _LOGGER.debug("created shared-memory segment %s (%d bytes)", name, size)
        return Segment(name=name, size=size, mapping=mapping)
