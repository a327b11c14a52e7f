"""`python -m bench.transport` at its smallest: both parts run and report every cell.

A benchmark is not a test: nothing here looks at a time beyond its being positive. It
starts real servers (8 processes, on 127.0.0.1 and Unix-domain sockets in a temporary
folder), for about ten seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from bench import transport  # noqa: E402  (the repository root is not a package path)

# One unary size and one stream of two messages; every setting and both server models.
UNARY = "4 KiB"
STREAMED = "128 KiB streamed, 2 x 64 KiB"
CONCURRENCY = 2


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("transport")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.transport",
            f"--out={out}",
            "--name=smoke",
            "--sizes=4Ki",
            "--stream-bytes=128Ki",
            "--stream-chunk-bytes=64Ki",
            "--repeats=1",
            "--warmup=2",
            "--min-calls=2",
            "--max-calls=3",
            "--cell-seconds=0.01",
            f"--concurrency={CONCURRENCY}",
            "--throughput-seconds=0.2",
            "--throughput-warmup=0.05",
            "--throughput-repeats=1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((out / "smoke.json").read_text(encoding="utf-8"))
    return data, (out / "smoke.md").read_text(encoding="utf-8")


def _groups(part: str) -> list[str]:
    if part == transport.PART_SETTINGS:
        return [s.name for s in transport.SETTINGS]
    return list(transport.MODELS)


@pytest.mark.parametrize("part", [transport.PART_SETTINGS, transport.PART_MODEL])
def test_every_latency_cell_is_measured_and_checked(
    results: tuple[dict[str, Any], str], part: str
) -> None:
    data, _ = results
    rows = data[part]["latency"]
    expected = {
        (group, kind, payload)
        for group in _groups(part)
        for kind in transport.TRANSPORTS
        for payload in (UNARY, STREAMED)
    }
    assert {(r["group"], r["transport"], r["payload"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert row["echo_checked"] is True
        assert row["samples"] >= 2
        assert 0 < row["min_us"] <= row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["server_cpu_us_per_call"] >= 0  # 10 ms ticks: often 0 this short
        streamed = row["payload"] == STREAMED
        assert row["mode"] == ("streamed" if streamed else "unary")
        assert row["messages"] == (2 if streamed else 1)
        assert row["payload_bytes"] == (128 if streamed else 4) * 1024


@pytest.mark.parametrize("part", [transport.PART_SETTINGS, transport.PART_MODEL])
def test_every_throughput_cell_is_measured(results: tuple[dict[str, Any], str], part: str) -> None:
    data, _ = results
    measured = data[part]
    groups = measured["throughput_groups"]
    if part == transport.PART_SETTINGS:
        best = measured["best_setting"]
        assert set(best["scores"]) == set(_groups(part)) - {transport.BASELINE_SETTING}
        assert best["setting"] in best["scores"] and best["geomean_p50_ratio"] > 0
        assert groups == [transport.BASELINE_SETTING, best["setting"]]
    else:
        assert groups == list(transport.MODELS)
    rows = measured["throughput"]
    expected = {(g, kind, CONCURRENCY) for g in groups for kind in transport.TRANSPORTS}
    assert {(r["group"], r["transport"], r["concurrency"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert row["echo_checked"] is True and row["payload_bytes"] == 64
        assert row["calls"] > 0 and row["calls_per_s"] > 0
        assert row["server_cpu_us_per_call"] >= 0 and row["client_cpu_cores"] >= 0


def test_servers_and_sockets_are_gone(results: tuple[dict[str, Any], str]) -> None:
    data, _ = results
    assert len(data["servers"]) == len(transport.SETTINGS) + len(transport.MODELS)
    for server in data["servers"]:
        try:
            cmdline = Path(f"/proc/{server['pid']}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        assert b"bench.transport" not in cmdline, server
    assert not Path(data["socket_dir"]).exists()


def test_report(results: tuple[dict[str, Any], str]) -> None:
    data, table = results
    assert table.startswith("# Transport: HTTP/2 settings and server models")
    assert "## Part 6" in table and "## Part 5" in table
    for setting in transport.SETTINGS:
        assert f"| {setting.name} |" in table
    assert "load_average_at_end" in data["machine"] and data["machine"]["versions"]["grpcio"]
    assert set(data["channel_args"]) >= {transport.BDP_PROBE, transport.LOOKAHEAD}


def test_an_echo_that_changed_the_bytes_stops_the_run() -> None:
    sent = [b"abc", b"def"]
    transport.check_echo("same", sent, [b"abc", b"def"])
    for got in ([b"abc", b"deF"], [b"abc"], [b"abc", b"def", b""], [b"abcdef"]):
        with pytest.raises(transport.EchoMismatch, match="not the same bytes"):
            transport.check_echo("changed", sent, got)
