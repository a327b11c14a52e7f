"""The benchmark harness end to end at tiny sizes: it runs and writes its reports.

A benchmark is not a test, so nothing here looks at how fast anything was; this keeps
`python -m bench` working (real `actgrad serve` and echo processes, both clients, the
reports) and checks the shape of what it writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from bench.harness import cpu_split  # noqa: E402  (the repository root is not a package path)

SIZES = (16, 1024, 64 * 1024)
STREAMED = 64 * 1024
OPS = ("activate", "gradient", "softmax")
CONCURRENCY = (1, 64)
REPEATS = 2
# A 256 KiB message limit: the SDK then streams inputs above 128 KiB (half the limit)
# in chunks of 64 KiB (a quarter), so the 64Ki-element tensor (256 KiB) travels as 4
# chunk requests without a large tensor; the echo streams the same 4 requests.
LIMIT = 256 * 1024
CHUNK = LIMIT // 4
MEMORY_SIZES = (1024, STREAMED)
ROUNDTRIP = 256 * 1024
# A variant (the hook for --workers and shared memory): another actgrad server, here
# one with a small --chunk-elements, and a client option.
VARIANT = "small-chunks:actgrad:--chunk-elements=4096 client.chunk_bytes=32Ki"
SUBJECTS = ("actgrad", "echo", "onnxruntime", "small-chunks")
# Without --subjects the throughput phase also measures the default server.
THROUGHPUT_ONLY = ("actgrad-workers",)
# The http phase at its smallest: one JSON and one binary call, 4 in flight.
HTTP_CASES = ("json 16", "binary 1 Ki")
HTTP_CONCURRENCY = 4
# Throughput (gRPC and HTTP) is sent by h2load (Debian's nghttp2-client).
H2LOAD = shutil.which("h2load")
needs_h2load = pytest.mark.skipif(
    H2LOAD is None,
    reason="h2load is missing (apt-get install nghttp2-client): the throughput and http "
    "phases need it",
)
PHASES = "latency,throughput,http,memory" if H2LOAD else "latency,memory"


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
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
        "--memory-sizes=" + ",".join(map(str, MEMORY_SIZES)),
        f"--roundtrip-sizes={ROUNDTRIP}",
        f"--max-message-bytes={LIMIT}",
        f"--variant={VARIANT}",
        f"--phases={PHASES}",
        "--http-cases=json:16,binary:1Ki",
        f"--http-concurrency={HTTP_CONCURRENCY}",
        "--http-throughput-repeats=1",
        "--note=smoke test",
        # No MLServer here (its own test is below): the run must say it skipped it.
        env={**os.environ, "BENCH_MLSERVER_VENV": str(folder / "no-mlserver-venv")},
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
    assert [s["name"] for s in results["subjects"]] == [*SUBJECTS, *THROUGHPUT_ONLY]
    assert results["config"]["throughput_only"] == list(THROUGHPUT_ONLY)
    workers = next(s for s in results["subjects"] if s["name"] == "actgrad-workers")
    assert "--workers=0" in workers["argv"]
    variant = next(s for s in results["subjects"] if s["name"] == "small-chunks")
    assert "--chunk-elements=4096" in variant["argv"]
    assert variant["client_options"]["chunk_bytes"] == 32 * 1024


def test_every_latency_cell_is_measured_unary_or_streamed(results: dict[str, Any]) -> None:
    rows = {(r["subject"], r["op"], r["elements"]): r for r in results["latency"]}
    assert len(rows) == len(SUBJECTS) * len(OPS) * len(SIZES)
    for (subject, _op, n), row in rows.items():
        assert "skipped" not in row
        assert row["samples"] == REPEATS * row["calls_per_round"]
        assert len(row["round_p50_us"]) == REPEATS
        assert 0 < row["min_us"] <= row["p50_us"] <= row["p99_us"] <= row["max_us"]
        assert row["tensor_bytes"] == 4 * n
        assert math.prod(row["shape"]) == n
        transport = row["transport"]
        if subject == "onnxruntime":
            assert transport == {"mode": "in-process"}
            continue
        assert transport["largest_message_bytes"] <= LIMIT
        if n != STREAMED:
            assert transport["mode"] == "unary" and transport["messages"] == 1
            continue
        assert transport["mode"] == "streamed"
        chunk = 32 * 1024 if subject == "small-chunks" else CHUNK
        # The SDK's plan: chunks of whole rows of at most `chunk` bytes (softmax) or
        # of exactly `chunk` bytes of the flattened tensor (elementwise).
        assert transport["messages"] == 4 * n // chunk
        assert transport["wire_bytes"] > 4 * n


def test_echo_streams_the_sdks_chunks(results: dict[str, Any]) -> None:
    rows = {(r["subject"], r["op"], r["elements"]): r for r in results["latency"]}
    for op in OPS:
        for n in SIZES:
            # Same chunking options, same requests: the same bytes on the wire.
            assert rows["echo", op, n]["transport"] == rows["actgrad", op, n]["transport"]


def test_ratios_cover_both_floors(results: dict[str, Any]) -> None:
    ratios = {
        (r["subject"], r["floor"], r["op"], r["elements"]): r for r in results["ratios"]["latency"]
    }
    services = ("actgrad", "small-chunks")
    floors = ("echo", "onnxruntime")
    assert set(ratios) == {
        (s, f, op, n) for s in services for f in floors for op in OPS for n in SIZES
    }
    for r in ratios.values():
        assert math.isfinite(r["p50_ratio"]) and r["p50_ratio"] > 0
        assert math.isfinite(r["p99_ratio"]) and r["p99_ratio"] > 0


@needs_h2load
def test_throughput_ratios_cover_calls_and_cpu(results: dict[str, Any]) -> None:
    throughput = {
        (r["subject"], r["floor"], r["concurrency"]): r for r in results["ratios"]["throughput"]
    }
    loaders = ("actgrad", "small-chunks", *THROUGHPUT_ONLY)
    assert set(throughput) == {(s, "echo", c) for s in loaders for c in CONCURRENCY}
    for r in throughput.values():
        assert r["calls_per_s_ratio"] > 0
        assert r["server_cpu_ratio"] > 0  # server CPU per call over the echo's


@needs_h2load
def test_throughput_rows(results: dict[str, Any]) -> None:
    rows = {(r["subject"], r["concurrency"]): r for r in results["throughput"]}
    servers = ("actgrad", "echo", "small-chunks", *THROUGHPUT_ONLY)
    assert set(rows) == {(s, c) for s in servers for c in CONCURRENCY}
    # Measured for throughput only: no latency cells, no latency ratios.
    assert not [r for r in results["latency"] if r["subject"] in THROUGHPUT_ONLY]
    assert not [r for r in results["ratios"]["latency"] if r["subject"] in THROUGHPUT_ONLY]
    for (subject, concurrency), row in rows.items():
        assert row["elements"] == 16
        # actgrad's own count of OK calls was checked; the echo has none.
        assert row["server_counted"] is (subject != "echo")
        assert len(row["round_calls_per_s"]) == REPEATS
        # h2load's load, every call verified (2xx, the checked answer's bytes, and
        # actgrad's own count of OK calls): only then is there a figure.
        assert row["verified"] is True and row["problems"] == [], row["problems"]
        assert row["calls_per_s"] > 0
        assert row["server_cpu_us_per_call"] > 0
        assert row["errors"] == {}
        load = row["load"]
        assert load["protocol"] == "h2c"
        assert load["connections"] == min(8, concurrency)
        assert load["connections"] * load["streams_per_connection"] == concurrency
        assert load["request_body_bytes"] > 5  # the gRPC prefix and the request
        assert all(calls >= 2 * concurrency for calls in row["calls"])
        # Each round's split of the server's CPU between its processes, largest first.
        assert len(row["round_cpu_split"]) == REPEATS
        for split in row["round_cpu_split"]:
            assert split == sorted(split, reverse=True)
            assert sum(split) <= 1.0 + 1e-9 and all(0.02 <= share <= 1 for share in split)
            if row["subject"] != "actgrad-workers":
                assert split == [1.0]  # one process


def test_cpu_split_shares_the_cpu_used_between_snapshots() -> None:
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 13.0, 2: 6.0, 3: 1.01, 4: 0.5}  # 4 started in between
    assert cpu_split(before, after) == [0.665, 0.222, 0.111]  # pid 3's 0.2% left out
    assert cpu_split(before, before) == []


def test_memory_is_measured_streamed_or_not(results: dict[str, Any]) -> None:
    servers = ("actgrad", "echo", "small-chunks")
    rows = {(r["subject"], r["op"], r["elements"]): r for r in results["memory"]}
    assert set(rows) == {(s, op, n) for s in servers for op in OPS for n in MEMORY_SIZES}
    for (_subject, _op, n), row in rows.items():
        assert row["status"] == "measured", row
        assert 0 < row["idle_rss_bytes"] <= row["peak_rss_bytes"]
        assert row["peak_over_tensor"] == pytest.approx(row["peak_rss_bytes"] / (4 * n), rel=1e-3)
        assert row["transport"]["mode"] == ("streamed" if n == STREAMED else "unary")
    per_size = {(r["subject"], r["elements"]) for r in results["server_memory"]}
    assert per_size == {(s, n) for s in servers for n in SIZES}


def test_roundtrip_at_default_limits(results: dict[str, Any]) -> None:
    (row,) = results["roundtrip"]
    assert row["elements"] == ROUNDTRIP
    # The round trip ignores --max-message-bytes: actgrad serve's default limit.
    assert row["max_message_bytes"] == 64 * 1024 * 1024
    assert row["status"] == "correct", row
    assert row["transport"]["mode"] == "unary"  # 1 MiB is below the 8 MiB threshold
    assert row["peak_rss_bytes"] >= row["idle_rss_bytes"] > 0


def test_markdown_report(out: Path, results: dict[str, Any]) -> None:
    text = (out / "bench.md").read_text()
    for heading in (
        "## Latency",
        "## Peak server memory serving one tensor",
        "## Large-tensor round trip",
    ):
        assert heading in text
    assert "| actgrad/echo p50 |" in text
    assert "| actgrad/onnxruntime p50 |" in text
    assert "| small-chunks/echo p50 |" in text
    assert "actgrad-workers p50" not in text  # throughput only
    if H2LOAD:
        assert "## Throughput" in text and "## HTTP (issue 21)" in text
        assert "| actgrad-workers/echo |" in text
        assert "| actgrad/echo CPU/call |" in text
        assert "| actgrad/http-echo p50 |" in text
        assert "Issue 21's targets, in this run:" in text
        assert "**MLServer skipped" in text
    assert "| transport |" in text
    # The variant chunks differently, so the cell names each subject's transport.
    assert "| Softmax | 64 Ki | actgrad: streamed, 4 x " in text
    assert "small-chunks: streamed, 8 x " in text
    assert "| Activate(sigmoid) | 16 | unary |" in text
    assert results["machine"]["cpu_model"] in text


def test_png_chart(out: Path) -> None:
    data = (out / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width > 100 and height > 100


@needs_h2load
def test_http_phase_rows(results: dict[str, Any]) -> None:
    http = results["http"]
    assert [s["name"] for s in http["servers"]] == ["actgrad", "http-echo"]
    # Said loudly, with how to install it (the log and the report say it too).
    assert "MLServer skipped" in http["mlserver_skipped"]
    assert "make bench-mlserver-venv" in http["mlserver_skipped"]
    latency = {(r["case"], r["subject"]): r for r in http["latency"]}
    assert set(latency) == {(c, s) for c in HTTP_CASES for s in ("actgrad", "http-echo")}
    for (case, _subject), row in latency.items():
        assert 0 < row["p50_us"] <= row["p99_us"]
        assert row["samples"] % REPEATS == 0 and 3 * REPEATS <= row["samples"] <= 10 * REPEATS
        kind = "JSON" if case.startswith("json") else "binary extension"
        assert row["transport"] == f"HTTP/1.1 OIP REST {kind}"
        # The echo is sent the same bytes as actgrad.
        assert row["request_bytes"] == latency[case, "actgrad"]["request_bytes"]
    throughput = {(r["case"], r["subject"]): r for r in http["throughput"]}
    assert set(throughput) == set(latency)
    for (_case, subject), row in throughput.items():
        assert row["verified"] is True and row["problems"] == [], row["problems"]
        assert row["server_counted"] is (subject == "actgrad")
        assert row["calls_per_s"] > 0 and row["server_cpu_us_per_call"] > 0
        assert row["load"]["protocol"] == "http/1.1"
        assert row["load"]["connections"] == HTTP_CONCURRENCY
    ratios = results["ratios"]["http"]
    assert {(r["case"], r["subject"], r["floor"]) for r in ratios["rows"]} == {
        (c, "actgrad", "http-echo") for c in HTTP_CASES
    }
    targets = {t["target"]: t for t in ratios["targets"]}
    assert "json 16: p50 over the echo" in targets
    assert f"binary 1 Ki: calls/s at {HTTP_CONCURRENCY} in flight over the echo" in targets
    over_grpc = targets.pop(
        f"json 16: HTTP calls/s over actgrad's own gRPC (Activate, 16 elements) at "
        f"{HTTP_CONCURRENCY} in flight"
    )
    assert over_grpc["met"] is None  # no gRPC cell at that many in flight in this run
    for target in targets.values():
        assert target["met"] in (True, False)  # measured, whichever way it went


MLSERVER_VENV = REPO_ROOT / ".venv-mlserver"


@needs_h2load
@pytest.mark.skipif(
    not (MLSERVER_VENV / "bin" / "python").exists(),
    reason="MLServer is not installed (make bench-mlserver-venv): its bench part is not run",
)
def test_mlserver_serves_the_same_graph_json_and_grpc_raw(tmp_path: Path) -> None:
    proc = _bench(
        f"--out={tmp_path}",
        "--phases=http",
        "--subjects=actgrad",
        "--http-cases=json:16,binary:1Ki",
        "--http-concurrency=2",
        "--http-throughput-repeats=1",
        "--repeats=1",
        "--warmup=2",
        "--cell-seconds=0.01",
        "--min-calls=2",
        "--max-calls=4",
        "--throughput-seconds=0.2",
        "--throughput-warmup=0.1",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    http = json.loads((tmp_path / "bench.json").read_text())["http"]
    assert http["mlserver_skipped"] is None
    assert [s["name"] for s in http["servers"]] == ["actgrad", "http-echo", "mlserver"]
    rows = {(r["case"], r["subject"]): r for r in http["latency"]}
    # Every answer was checked against onnxruntime before anything was timed.
    assert rows["json 16", "mlserver"]["transport"] == "HTTP/1.1 OIP REST JSON"
    assert (
        rows["json 16", "mlserver"]["request_bytes"] == rows["json 16", "actgrad"]["request_bytes"]
    )
    # No binary extension in MLServer's REST: its gRPC with raw_input_contents instead.
    assert rows["binary 1 Ki", "mlserver"]["transport"].startswith("gRPC ModelInfer")
    for row in http["throughput"]:
        assert row["verified"] is True, row["problems"]
    text = (tmp_path / "bench.md").read_text()
    assert "| mlserver/actgrad p50 |" in text and "| actgrad/mlserver |" in text


def test_missing_h2load_stops_the_run_and_says_how_to_install_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no h2load on it
    proc = _bench(f"--out={tmp_path}", "--phases=throughput", env=env)
    assert proc.returncode == 2
    assert "nghttp2-client" in proc.stderr
    assert not list(tmp_path.glob("*.json"))


def test_bad_flags_exit_with_usage() -> None:
    proc = _bench("--sizes=16,0")
    assert proc.returncode == 2
    assert "must be > 0" in proc.stderr


def test_bad_variant_exits_with_usage() -> None:
    proc = _bench("--variant=x:echo:--chunk-elements=4")
    assert proc.returncode == 2
    assert "takes no actgrad flags" in proc.stderr
