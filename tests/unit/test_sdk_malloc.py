"""The SDK primes glibc's mmap threshold once per process (`actgrad._malloc`).

Each check runs in a fresh interpreter, whose allocator has seen nothing yet, and asks
glibc itself (`mallinfo2().hblks`, the number of blocks it serves with their own
mapping) whether a block of a large message's size gets a fresh mapping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="glibc's allocator only",
)

_PROBE = """
import ctypes, json, resource

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def faults_of_a_call(nbytes, buffers=3):
    # What a call with a large message does here: a few buffers of the message's
    # size (the request, gRPC's copy, the answer), written, then freed.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(nbytes) for _ in range(buffers)]
    for block in blocks:
        ctypes.memset(block, 1, nbytes)
    for block in blocks:
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

seen = {"before": [faults_of_a_call(4 << 20) for _ in range(3)]}
import actgrad
client = actgrad.Client("localhost:1")
faults_of_a_call(4 << 20)  # the first call after priming takes the heap's pages once
seen["after"] = [faults_of_a_call(4 << 20) for _ in range(3)]
client.close()
from actgrad import _malloc
seen["primed"] = _malloc.prime()
print(json.dumps(seen))
"""

PAGES = 3 * (4 << 20) // 4096  # the pages of one call's three buffers


def _probe(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_client_keeps_large_buffers_from_faulting_on_every_call() -> None:
    seen = _probe()
    # Without priming, every call takes a fault on about every page of its buffers.
    assert all(count > PAGES // 2 for count in seen["before"]), seen  # type: ignore[attr-defined]
    assert all(count < PAGES // 20 for count in seen["after"]), seen  # type: ignore[attr-defined]
    assert seen["primed"] is True


def test_the_environment_can_turn_it_off() -> None:
    seen = _probe(ACTGRAD_PRIME_MALLOC="0")
    assert all(count > PAGES // 2 for count in seen["after"]), seen  # type: ignore[attr-defined]
    assert seen["primed"] is False
