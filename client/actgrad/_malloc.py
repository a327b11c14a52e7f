"""Priming glibc's allocator for the SDK's large messages, once per process.

A call with a large tensor holds a few buffers of about the message's size at once
in the calling process: the request's bytes (`actgrad.wire.frames`), gRPC's copy of
them, and the bytes gRPC builds from the answer. glibc adapts its thresholds to the
blocks a process frees: freeing a mapped block of up to 32 MiB raises the mmap
threshold to that block's size and the trim threshold (the free memory glibc keeps
at the top of the heap instead of giving it back) to twice that. After 4 MiB
messages that is 8 MiB: less than the three 4 MiB buffers of one call, so when they
are freed the top of the heap goes back to the kernel, and the next call faults its
pages in again, one fault per 4 KiB page (about 3,000 a call at 1 Mi float32
elements; `tests/unit/test_sdk_malloc.py` shows it with three bare 4 MiB blocks).

`prime()` takes glibc's adaptive step for a larger block at once: it allocates one
block of 31 MiB (without touching it) and frees it, as freeing any large numpy
temporary would. The mmap threshold is then 31 MiB and the trim threshold 62 MiB,
so the buffers of calls up to that size are reused. Measured on the development
machine (docs/performance.md): a fresh process calling `Client.activate` on 1 Mi
float32 elements, 14-16 ms a call and about 3,000 minor page faults, against
8.4-10 ms and under 100 once primed. The cost: up to about 62 MiB of freed memory
may stay with the process instead of going back to the kernel.

It does nothing where the C library is not glibc, where the thresholds were set
explicitly (``mallopt``, ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``:
glibc stops adapting then), or with ``ACTGRAD_PRIME_MALLOC=0`` in the environment.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

__all__ = ["prime"]

_LOGGER = logging.getLogger(__name__)

# glibc adapts to freed blocks of up to 4 MiB * sizeof(long) = 32 MiB; this one's
# chunk (31 MiB and its header, rounded to pages) stays below that.
_BLOCK_BYTES = 31 << 20
_ENV = "ACTGRAD_PRIME_MALLOC"

_lock = threading.Lock()
_primed: bool | None = None


def prime() -> bool:
    """Primes glibc's mmap threshold once per process; True when it was done."""
    global _primed
    with _lock:
        if _primed is None:
            _primed = _prime()
        return _primed


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False


def _prime() -> bool:
    if os.environ.get(_ENV, "1") == "0" or not _is_glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        malloc, free = libc.malloc, libc.free
    except (OSError, AttributeError):
        return False
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    free.restype = None
    free.argtypes = [ctypes.c_void_p]
    block = malloc(_BLOCK_BYTES)
    if not block:
        return False
    free(block)
    _LOGGER.debug("glibc's mmap threshold primed with a %d-byte block", _BLOCK_BYTES)
    return True
