"""Keeps glibc from returning large freed buffers to the kernel after every call.

Each call with a large tensor allocates a few buffers of the tensor's size (the
parsed request, onnxruntime's output, the encoded response). glibc serves blocks
above its mmap threshold with a fresh mmap and unmaps them on free, so every call
pays the page faults and zeroing of new memory again: about 10 ms of a 4 MiB call
here (docs/performance.md). Raising the threshold to its maximum and keeping freed
memory at the top of the heap lets the next call reuse those pages. The cost is
that the server keeps its high-water mark of such buffers resident, in every malloc
arena (one per busy thread, up to 8 per CPU): a soak at 24 calls in flight took a
server from 352 MiB to 2.6 GiB that it never gave back. So `release_free_memory`
(malloc_trim) returns what is free once the server has been idle a few seconds
(`actgrad_server.app`): busy, the buffers are reused; idle, they go back. That
works for the main arena only (glibc never trims the top of a thread's arena), so
the process keeps to one arena: the RPC threads hold the GIL around most of their
allocations anyway, and a large buffer is allocated once per call.
"""

from __future__ import annotations

import ctypes
import logging
import platform

__all__ = ["release_free_memory", "retain_large_buffers"]

_LOGGER = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# glibc caps the mmap threshold at 4 MiB * sizeof(long): 32 MiB on 64-bit systems.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20
_TOP_PAD = 16 << 20


def retain_large_buffers() -> bool:
    """Tunes glibc's malloc for this process; False (and nothing done) elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
            (_M_ARENA_MAX, 1),
        )
    )
    _LOGGER.debug("malloc tuned to retain large buffers: %s", ok)
    return ok


def release_free_memory() -> bool:
    """Returns the free memory of every malloc arena to the kernel (glibc's
    malloc_trim(0)); True when something was released, False elsewhere or if not."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
