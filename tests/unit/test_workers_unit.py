"""The worker count of `actgrad serve`: the setting, and the CPUs a process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actgrad_server import config, workers
from actgrad_server.errors import ConfigError


def _cgroup(tmp_path: Path, group: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup with cpu.max files and a /proc/self placing us in `group`."""
    fs, proc = tmp_path / "cgroup", tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(f"0::{group}\n")
    (fs / group.lstrip("/")).mkdir(parents=True)
    for relative, text in limits.items():
        (fs / relative / "cpu.max").write_text(text)
    return fs, proc


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"app/web": "max 100000\n"}, None),  # no quota
        ({"app/web": "200000 100000\n"}, 2),
        ({"app/web": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"app/web": "50000 100000\n"}, 1),
        ({"app/web": "400000 100000\n", "app": "100000 100000\n"}, 1),  # a parent's is tighter
        ({"app/web": "max 100000\n", "app": "300000 100000\n"}, 3),
        ({"app/web": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_the_tightest_cgroup_v2_quota_counts(
    tmp_path: Path, limits: dict[str, str], expected: int | None
) -> None:
    fs, proc = _cgroup(tmp_path, "/app/web", limits)
    assert workers.cgroup_cpu_limit(fs, proc) == expected


def test_no_cgroup_v2_means_no_limit(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("12:cpu,cpuacct:/docker/abc\n")  # cgroup v1
    assert workers.cgroup_cpu_limit(tmp_path / "fs", tmp_path) is None
    assert workers.cgroup_cpu_limit(tmp_path / "fs", tmp_path / "absent") is None


def test_usable_cpus_is_within_the_affinity() -> None:
    assert 1 <= workers.usable_cpus() <= len(os.sched_getaffinity(0))


def test_the_worker_count_comes_from_the_setting_or_the_cpus() -> None:
    assert workers.worker_count(config.Settings(workers=3)) == 3
    assert workers.worker_count(config.Settings(workers=1)) == 1
    assert workers.worker_count(config.Settings()) == workers.usable_cpus()


def test_workers_is_read_from_flag_and_environment() -> None:
    assert config.load(environ={"ACTGRAD_WORKERS": "4"}).workers == 4
    assert config.load({"workers": "2"}, environ={"ACTGRAD_WORKERS": "4"}).workers == 2
    assert config.from_args(["--workers", "1"]).workers == 1
    with pytest.raises(ConfigError):
        config.Settings(workers=-1)
    with pytest.raises(ConfigError):
        config.load(environ={"ACTGRAD_WORKERS": "two"})


def test_supervise_needs_two_workers_or_more() -> None:
    with pytest.raises(ValueError):
        workers.supervise(config.Settings(), 1)
