"""The benchmark harness end to end at tiny sizes: it runs and writes its reports.

A benchmark is not a test, so nothing here looks at how fast anything was; this keeps
`python -m bench` working (real `actgrad serve` and echo processes, both clients, the
reports) and checks the shape of what it writes.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZES = (16, 1024, 256 * 1024)
OPS = ("activate", "gradient", "softmax")
CONCURRENCY = (1, 64)
REPEATS = 2
# 1 MiB: a 256Ki-element float32 tensor (1 MiB of data plus the request header) does
# not fit, which exercises the "needs streaming" path without a large tensor.
LIMIT = 1 << 20


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    proc = _bench(
        f"--out={folder}",
        "--sizes=" + ",".join(map(str, SIZES)),
        f"--repeats={REPEATS}",
        "--warmup=3",
        "--cell-seconds=0.01",
        "--min-calls=3",
        "--max-calls=10",
        "--concurrency=" + ",".join(map(str, CONCURRENCY)),
        "--throughput-seconds=0.2",
        "--throughput-warmup=0.1",
        "--memory-sizes=1Ki,1Mi",
        f"--max-message-bytes={LIMIT}",
        "--note=smoke test",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder


@pytest.fixture(scope="module")
def results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "bench.json").read_text())
    return data


def test_machine_and_run_are_recorded(results: dict[str, Any]) -> None:
    machine = results["machine"]
    for key in ("date", "cpu_model", "logical_cpus", "usable_cpus", "python", "platform"):
        assert machine[key], key
    assert machine["versions"]["grpcio"]
    assert machine["versions"]["onnxruntime"]
    assert len(machine["load_average_at_end"]) == 3
    assert results["note"] == "smoke test"
    assert results["server_settings"]["max_message_bytes"] == LIMIT
    assert [s["name"] for s in results["subjects"]] == ["actgrad", "echo", "onnxruntime"]


def test_every_latency_cell_is_measured_or_needs_streaming(results: dict[str, Any]) -> None:
    rows = {(r["subject"], r["op"], r["elements"]): r for r in results["latency"]}
    assert len(rows) == 3 * len(OPS) * len(SIZES)
    for (subject, _op, n), row in rows.items():
        if n == 256 * 1024 and subject != "onnxruntime":
            assert row["request_bytes"] > LIMIT
            assert row["skipped"].startswith("needs streaming")
            assert "p50_us" not in row
            continue
        assert "skipped" not in row
        assert row["samples"] == REPEATS * row["calls_per_round"]
        assert len(row["round_p50_us"]) == REPEATS
        assert 0 < row["min_us"] <= row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["tensor_bytes"] == 4 * n


def test_ratios_cover_both_floors(results: dict[str, Any]) -> None:
    ratios = {(r["floor"], r["op"], r["elements"]): r for r in results["ratios"]["latency"]}
    for op in OPS:
        for n in (16, 1024):
            for floor in ("echo", "onnxruntime"):
                r = ratios[floor, op, n]
                assert r["subject"] == "actgrad"
                assert math.isfinite(r["p50_ratio"]) and r["p50_ratio"] > 0
        assert ("echo", op, 256 * 1024) not in ratios  # nothing to compare with
    throughput = {(r["floor"], r["concurrency"]) for r in results["ratios"]["throughput"]}
    assert throughput == {("echo", c) for c in CONCURRENCY}


def test_throughput_rows(results: dict[str, Any]) -> None:
    rows = {(r["subject"], r["concurrency"]): r for r in results["throughput"]}
    assert set(rows) == {(s, c) for s in ("actgrad", "echo") for c in CONCURRENCY}
    for row in rows.values():
        assert row["elements"] == 16
        assert len(row["round_calls_per_s"]) == REPEATS
        assert row["calls_per_s"] > 0
        assert row["server_cpu_us_per_call"] > 0
        assert all(isinstance(count, int) for count in row["errors"].values())


def test_memory_is_measured_or_needs_streaming(results: dict[str, Any]) -> None:
    by_size = {(r["subject"], r["elements"]): r for r in results["memory"]}
    assert set(by_size) == {(s, n) for s in ("actgrad", "echo") for n in (1024, 1 << 20)}
    for subject in ("actgrad", "echo"):
        small = by_size[subject, 1024]
        assert small["status"] == "measured"
        assert 0 < small["idle_rss_bytes"] <= small["peak_rss_bytes"]
        big = by_size[subject, 1 << 20]
        assert big["status"] == "needs streaming"
        assert "peak_rss_bytes" not in big
    per_size = {(r["subject"], r["elements"]) for r in results["server_memory"]}
    assert per_size == {(s, n) for s in ("actgrad", "echo") for n in SIZES}


def test_markdown_report(out: Path, results: dict[str, Any]) -> None:
    text = (out / "bench.md").read_text()
    for heading in ("## Latency", "## Throughput", "## Peak server memory serving one tensor"):
        assert heading in text
    assert "| actgrad/echo p50 |" in text
    assert "| actgrad/onnxruntime p50 |" in text
    assert "needs streaming [1]" in text
    assert results["machine"]["cpu_model"] in text


def test_png_chart(out: Path) -> None:
    data = (out / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width > 100 and height > 100


def test_bad_flags_exit_with_usage() -> None:
    proc = _bench("--sizes=16,0")
    assert proc.returncode == 2
    assert "must be > 0" in proc.stderr
