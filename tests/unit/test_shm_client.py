"""The SDK's shared-memory pieces without a server: targets, layout, the segment pool."""

from __future__ import annotations

import gc
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actgrad import AsyncClient, Client, _shm


@pytest.mark.parametrize(
    "target",
    [
        "localhost:50051",
        "LOCALHOST:1",
        "127.0.0.1:50051",
        "127.3.2.1:8",
        "[::1]:50051",
        "ipv4:127.0.0.1:50051",
        "ipv6:[::1]:50051",
        "dns:///localhost:50051",
        "dns://8.8.8.8/localhost:50051",
        "unix:/run/actgrad.sock",
        "unix-abstract:actgrad",
        "localhost",
        "::1",
    ],
)
def test_local_targets(target: str) -> None:
    assert _shm.is_local_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "actgrad.internal:50051",
        "10.0.0.7:50051",
        "[2001:db8::1]:443",
        "dns:///actgrad:50051",
        "ipv4:192.168.1.2:1",
        "localhost.example.com:1",
        "0.0.0.0:50051",
    ],
)
def test_remote_targets(target: str) -> None:
    assert not _shm.is_local_target(target)


def test_layout_aligns_every_region() -> None:
    offsets, total = _shm.layout([10, 100, 1])
    assert offsets == [0, 64, 192]
    assert total == 193
    assert all(o % _shm.ALIGNMENT == 0 for o in offsets)


def _files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_pool_creates_private_segments_and_reuses_them(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path), min_size=4096)
    try:
        segment = pool.acquire(10_000)
        assert segment.name.startswith(f"{_shm.PREFIX}{os.getpid()}-")
        assert segment.size == 16384  # the next power of two
        info = os.lstat(tmp_path / segment.name)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_size == segment.size
        view = segment.array(64, np.dtype(np.float32), (2, 3))
        view[...] = 7.0
        del view
        pool.release(segment)
        again = pool.acquire(5000)
        assert again is segment  # idle and large enough
        assert pool.names == [segment.name]
        bigger = pool.acquire(20_000)
        assert bigger is not segment and bigger.size == 32768
        assert _files(tmp_path) == sorted([segment.name, bigger.name])
        pool.release(again)
        pool.release(bigger)
    finally:
        pool.close()
    assert _files(tmp_path) == []


def test_pool_keeps_a_bounded_number_of_idle_segments(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path), max_idle=2, min_size=4096)
    lent = [pool.acquire(4096 * (k + 1)) for k in range(4)]
    assert len(_files(tmp_path)) == 4
    for segment in lent:
        pool.release(segment)
    # The two largest stay for reuse.
    assert pool.names == sorted(s.name for s in lent[2:])
    assert _files(tmp_path) == pool.names
    pool.close()
    assert _files(tmp_path) == []


def test_close_with_a_segment_still_lent(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path))
    segment = pool.acquire(100)
    pool.close()
    assert _files(tmp_path) == []  # unlinked at once
    segment.array(0, np.dtype(np.uint8), (4,))[...] = 1  # still mapped for its call
    pool.release(segment)
    assert segment.mapping.closed
    with pytest.raises(RuntimeError):
        pool.acquire(100)
    pool.close()  # idempotent


def test_segments_are_unlinked_when_the_pool_is_collected(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path))
    pool.release(pool.acquire(100))
    assert len(_files(tmp_path)) == 1
    del pool
    gc.collect()
    assert _files(tmp_path) == []


def test_a_forked_child_leaves_the_parents_segments(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path))
    segment = pool.acquire(100)
    live = {str(tmp_path / segment.name): segment}
    _shm._cleanup(live, pid=os.getpid() + 1)  # as the finalizer runs in a child
    assert _files(tmp_path) == [segment.name]
    pool.release(segment)
    pool.close()


def test_a_full_or_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    pool = _shm.SegmentPool(directory=str(tmp_path / "missing"))
    with pytest.raises(OSError):
        pool.acquire(100)
    pool.close()


def test_client_ignores_shared_memory_for_remote_targets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="actgrad._requests")
    with Client("actgrad.internal:50051", shared_memory=True) as client:
        assert not client.shared_memory
    assert any("not on this host" in r.getMessage() for r in caplog.records)
    remote = AsyncClient("10.1.2.3:50051", shared_memory=True)
    assert not remote.shared_memory


def test_client_shared_memory_is_off_by_default_and_checked() -> None:
    with Client("localhost:50051") as client:
        assert not client.shared_memory
    with Client("localhost:50051", shared_memory=True) as client:
        assert client.shared_memory
    assert not client.shared_memory  # close() turns it off and unlinks
    with pytest.raises(TypeError):
        Client("localhost:50051", shared_memory=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Client("localhost:50051", shared_memory=True, shared_memory_min_bytes=-1)


def test_segments_are_unlinked_at_interpreter_exit(tmp_path: Path) -> None:
    program = (
        "import sys\n"
        "from actgrad import _shm\n"
        "pool = _shm.SegmentPool(directory=sys.argv[1])\n"
        "segment = pool.acquire(1000)\n"
        "print(segment.name, flush=True)\n"
        # No close(): the pool is still referenced when the interpreter exits.
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip().startswith(_shm.PREFIX)
    assert _files(tmp_path) == []
