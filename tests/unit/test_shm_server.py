"""The server's checks of client segments (actgrad_server.shm), on files in a temp dir.

No sockets: the trust rules are exercised on real files, links and FIFOs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from actgrad.v1 import tensor_pb2
from actgrad.wire import TensorError
from actgrad_server.errors import ConfigError, InvalidArgument
from actgrad_server.shm import FailedPrecondition, Region, SharedMemory, Transfer, check_name
from actgrad_server.statuses import status_for

LIMITS = {"max_rank": 4, "max_elements": 1000}


@pytest.fixture
def shared(tmp_path: Path) -> SharedMemory:
    return SharedMemory(allowed=True, directory=str(tmp_path))


@pytest.fixture
def transfer(shared: SharedMemory) -> Iterator[Transfer]:
    with shared.transfer() as transfer:
        yield transfer


def _segment(directory: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _header(dtype: int, shape: list[int]) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=shape)  # type: ignore[arg-type]


def _read(transfer: Transfer, region: Region, shape: list[int] | None = None) -> np.ndarray:
    return transfer.source(
        _header(tensor_pb2.DTYPE_FLOAT32, [4] if shape is None else shape),
        region,
        field="input",
        region_field="input.region",
        **LIMITS,
    ).array()


def test_not_allowed_is_failed_precondition(tmp_path: Path) -> None:
    shared = SharedMemory(allowed=False, directory=str(tmp_path))
    with pytest.raises(FailedPrecondition) as info, shared.transfer():
        pass
    assert status_for(info.value, "test")[0] is grpc.StatusCode.FAILED_PRECONDITION


def test_allowed_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SharedMemory(allowed=True, directory=str(tmp_path / "missing"))
    SharedMemory(allowed=False, directory=str(tmp_path / "missing"))  # not needed when off


@pytest.mark.parametrize(
    "name",
    [
        "",
        "actgrad-",
        "segment",
        "Actgrad-abc",
        "actgrad-a/b",
        "actgrad-../x",
        "actgrad-a b",
        "actgrad-\u00e4",
        "actgrad-x\x00",
        "actgrad-" + "a" * 201,
    ],
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name, field="input")


@pytest.mark.parametrize("name", ["actgrad-1", "actgrad-123-0a1b-7", "actgrad-a.b_c-D"])
def test_sdk_names_are_accepted(name: str) -> None:
    check_name(name, field="input")


def test_reads_a_region_at_any_offset(tmp_path: Path, transfer: Transfer) -> None:
    values = np.array([1.5, -2.0, 3.25, 7.0], dtype=np.float32)
    offset = 4096 + 64  # not a multiple of the mapping granularity
    _segment(tmp_path, "actgrad-t1", b"\xff" * offset + values.tobytes() + b"\xff" * 100)
    x = _read(transfer, Region("actgrad-t1", offset, 16))
    assert x.dtype == np.float32 and x.shape == (4,)
    np.testing.assert_array_equal(x, values)
    assert not x.flags.writeable  # mapped read-only
    del x


def test_missing_segment_is_failed_precondition(transfer: Transfer) -> None:
    with pytest.raises(FailedPrecondition):
        _read(transfer, Region("actgrad-absent", 0, 16))


def test_symlink_is_refused(tmp_path: Path, transfer: Transfer) -> None:
    target = _segment(tmp_path, "actgrad-real", bytes(16))
    (tmp_path / "actgrad-link").symlink_to(target)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        _read(transfer, Region("actgrad-link", 0, 16))


def test_directory_and_fifo_are_not_regular_files(tmp_path: Path, transfer: Transfer) -> None:
    (tmp_path / "actgrad-dir").mkdir(mode=0o700)
    os.mkfifo(tmp_path / "actgrad-fifo", 0o600)
    for name in ("actgrad-dir", "actgrad-fifo"):
        with pytest.raises(InvalidArgument):
            _read(transfer, Region(name, 0, 16))


def test_group_or_other_permissions_are_refused(tmp_path: Path, transfer: Transfer) -> None:
    _segment(tmp_path, "actgrad-shared", bytes(16), mode=0o640)
    with pytest.raises(InvalidArgument, match="permissions"):
        _read(transfer, Region("actgrad-shared", 0, 16))


def test_hard_links_are_refused(tmp_path: Path, transfer: Transfer) -> None:
    path = _segment(tmp_path, "actgrad-one", bytes(16))
    os.link(path, tmp_path / "actgrad-two")
    with pytest.raises(InvalidArgument, match="links"):
        _read(transfer, Region("actgrad-one", 0, 16))


def test_another_users_segment_is_failed_precondition(tmp_path: Path) -> None:
    _segment(tmp_path, "actgrad-mine", bytes(16))
    other = SharedMemory(allowed=True, directory=str(tmp_path), uid=os.geteuid() + 1)
    with other.transfer() as transfer, pytest.raises(FailedPrecondition, match="another user"):
        _read(transfer, Region("actgrad-mine", 0, 16))


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, 12),  # shorter than 4 float32 need
        (0, 20),  # longer
    ],
)
def test_region_size_must_match_the_tensor(
    tmp_path: Path, transfer: Transfer, offset: int, size: int
) -> None:
    _segment(tmp_path, "actgrad-s", bytes(64))
    with pytest.raises(InvalidArgument, match="size"):
        _read(transfer, Region("actgrad-s", offset, size))


@pytest.mark.parametrize("offset", [49, 64, 2**63, 2**64 - 8])
def test_regions_beyond_the_segment_are_refused(
    tmp_path: Path, transfer: Transfer, offset: int
) -> None:
    _segment(tmp_path, "actgrad-end", bytes(64))
    with pytest.raises(InvalidArgument, match="beyond the end"):
        _read(transfer, Region("actgrad-end", offset, 16))


def test_header_checks_apply_before_mapping(tmp_path: Path, transfer: Transfer) -> None:
    _segment(tmp_path, "actgrad-h", bytes(8192))
    with pytest.raises(TensorError, match="elements exceed"):
        _read(transfer, Region("actgrad-h", 0, 4004), shape=[1001])
    with pytest.raises(TensorError, match="rank"):
        _read(transfer, Region("actgrad-h", 0, 4), shape=[1, 1, 1, 1, 1])
    with pytest.raises(TensorError, match="negative"):
        _read(transfer, Region("actgrad-h", 0, 4), shape=[-1])
    with pytest.raises(TensorError, match="unspecified"):
        transfer.source(
            _header(0, [1]), Region("actgrad-h", 0, 4), field="f", region_field="r", **LIMITS
        )


def test_empty_tensor_needs_no_mapping(tmp_path: Path, transfer: Transfer) -> None:
    _segment(tmp_path, "actgrad-e", bytes(8))
    x = _read(transfer, Region("actgrad-e", 8, 0), shape=[0, 3])
    assert x.shape == (0, 3) and x.dtype == np.float32


def test_writes_only_into_the_reserved_region(tmp_path: Path, transfer: Transfer) -> None:
    path = _segment(tmp_path, "actgrad-w", b"\xaa" * 100)
    region = Region("actgrad-w", 40, 16)
    transfer.reserve(region, 16, field="output")
    y = np.array([1, 2, 3, 4], dtype=np.float32)
    transfer.write(region, y, field="output")
    data = path.read_bytes()
    assert data[:40] == b"\xaa" * 40 and data[56:] == b"\xaa" * 44
    np.testing.assert_array_equal(np.frombuffer(data[40:56], dtype=np.float32), y)
    assert len(data) == 100  # never resized


def test_writes_need_a_reservation_of_the_right_size(tmp_path: Path, transfer: Transfer) -> None:
    _segment(tmp_path, "actgrad-r", bytes(64))
    with pytest.raises(RuntimeError):
        transfer.write(Region("actgrad-r", 0, 16), np.zeros(4, np.float32), field="output")
    transfer.reserve(Region("actgrad-r", 0, 16), 16, field="output")
    with pytest.raises(RuntimeError):
        transfer.write(Region("actgrad-r", 0, 16), np.zeros(2, np.float64), field="other")


def test_outputs_must_not_overlap(tmp_path: Path, transfer: Transfer) -> None:
    _segment(tmp_path, "actgrad-o", bytes(64))
    transfer.reserve(Region("actgrad-o", 0, 16), 16, field="grad_input")
    with pytest.raises(InvalidArgument, match="overlaps grad_input"):
        transfer.reserve(Region("actgrad-o", 8, 16), 16, field="output")
    transfer.reserve(Region("actgrad-o", 16, 16), 16, field="output")  # adjacent is fine


def test_transfer_closes_its_descriptors(tmp_path: Path, shared: SharedMemory) -> None:
    _segment(tmp_path, "actgrad-fd", bytes(64))
    before = len(os.listdir("/proc/self/fd"))
    with shared.transfer() as transfer:
        x = _read(transfer, Region("actgrad-fd", 0, 16))
        total = float(x.sum())
        del x
        assert len(os.listdir("/proc/self/fd")) > before
    assert total == 0.0
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_segment_that_shrank_is_not_grown_back(tmp_path: Path, transfer: Transfer) -> None:
    path = _segment(tmp_path, "actgrad-shrink", bytes(64))
    region = Region("actgrad-shrink", 32, 16)
    transfer.reserve(region, 16, field="output")
    os.truncate(path, 40)
    with pytest.raises(InvalidArgument, match="shrank"):
        transfer.write(region, np.ones(4, np.float32), field="output")
    assert path.stat().st_size == 40


@pytest.mark.parametrize("mode", [0o000, 0o200, 0o400])
def test_segments_their_owner_cannot_read_and_write_are_refused(
    tmp_path: Path, transfer: Transfer, mode: int
) -> None:
    # As root the server could open them anyway; the SDK makes 0600 segments only.
    _segment(tmp_path, f"actgrad-mode{mode:o}", bytes(16), mode=mode)
    with pytest.raises(InvalidArgument, match="readable and writable by its owner"):
        _read(transfer, Region(f"actgrad-mode{mode:o}", 0, 16))


def test_a_segment_shrunk_during_a_call_is_a_short_read_not_a_fault(
    tmp_path: Path, transfer: Transfer
) -> None:
    path = _segment(tmp_path, "actgrad-cut", bytes(4000))
    # The segment is opened and sized (as by an earlier region of the same call)...
    transfer.reserve(Region("actgrad-cut", 0, 16), 16, field="output")
    # ...then the client cuts it: a mapping would now fault the process (SIGBUS).
    os.truncate(path, 100)
    with pytest.raises(InvalidArgument, match="shrank during the call"):
        _read(transfer, Region("actgrad-cut", 0, 4000), shape=[1000])
