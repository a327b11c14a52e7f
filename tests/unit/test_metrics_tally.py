"""A worker's finished calls, tallied per thread and written to the multiprocess files.

prometheus-client picks its multiprocess values when it is imported, so each check
runs in a fresh interpreter with PROMETHEUS_MULTIPROC_DIR set, and reads the files
as the supervisor's /metrics does (`MultiProcessCollector`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = """
import json, threading
from prometheus_client import CollectorRegistry, multiprocess
from actgrad_server.engine import CacheInfo
from actgrad_server.metrics import ServerMetrics

metrics = ServerMetrics(lambda: CacheInfo(0, 0, 0), shared=True)
RPC = "actgrad.v1.ActivationService/Activate"

def read():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    values = {}
    for family in registry.collect():
        for s in family.samples:
            if s.labels.get("rpc") == RPC and s.labels.get("le") in (None, "0.001"):
                code = s.labels.get("code")
                values[s.name if code is None else s.name + ":" + code] = s.value
    return values

def calls(thread):
    for k in range(250):
        code = "OK" if k % 5 else "INVALID_ARGUMENT"
        metrics.record_finished(RPC, "relu", "float32", code, 0.0004 if k % 2 else 0.002, 10, 7)

threads = [threading.Thread(target=calls, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
seen = {"before": read()}
metrics.flush_calls()
seen["after"] = read()
metrics.record_finished(RPC, "relu", "float32", "OK", 0.001, 1, 1)
metrics.stop_http()  # flushes what is left
seen["stopped"] = read()
print(json.dumps(seen))
"""


def test_tallies_reach_the_files_when_flushed_and_when_stopped(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    ok, bad = "actgrad_requests_total:OK", "actgrad_requests_total:INVALID_ARGUMENT"
    count = "actgrad_request_duration_seconds_count"
    # Nothing is written while the calls are only tallied...
    assert seen["before"].get(ok, 0.0) == 0.0 and seen["before"].get(count, 0.0) == 0.0
    # ...and every call of the four threads once flushed.
    after = seen["after"]
    assert after[ok] == 800 and after[bad] == 200
    assert after[count] == 1000
    assert after["actgrad_request_duration_seconds_bucket"] == 500  # 0.0004 s <= 0.001
    # 4 threads x (125 x 0.4 ms + 125 x 2 ms)
    assert after["actgrad_request_duration_seconds_sum"] == pytest.approx(1.2, rel=1e-12)
    assert after["actgrad_request_bytes_total"] == 10_000
    assert after["actgrad_response_bytes_total"] == 7_000
    stopped = seen["stopped"]
    assert stopped[ok] == 801 and stopped[count] == 1001
    assert stopped["actgrad_request_bytes_total"] == 10_001
