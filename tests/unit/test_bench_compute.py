"""`python -m bench.compute` at a tiny size: it runs and reports every graph.

A benchmark is not a test: nothing here looks at a time, only at what the report holds
(every catalog function, each structural choice, both directions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actgrad_server import catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from bench import compute  # noqa: E402  (the repository root is not a package path)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("compute")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.compute",
            "--elements=2Ki",
            "--repeats=2",
            f"--out={out}",
            "--name=small",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "small.json").read_text(encoding="utf-8"))
    return data, (out / "small.md").read_text(encoding="utf-8")


def test_every_function_and_direction_is_reported(results: tuple[dict[str, Any], str]) -> None:
    data, table = results
    assert data["config"]["elements"] == 2048 and data["config"]["dtype"] == "float32"
    rows = data["rows"]
    expected = {(case.label, d) for case in compute.cases() for d in compute.DIRECTIONS}
    assert {(row["graph"], row["direction"]) for row in rows} == expected
    assert len(rows) == len(expected)
    assert {row["function"] for row in rows} == {f.name for f in catalog.CATALOG}
    assert {"gelu (approximate=tanh)", "softmax (log=True)"} <= {row["graph"] for row in rows}
    for row in rows:
        assert f"| {row['graph']} | {row['direction']} |" in table
        assert row["ours_ms"] > 0 and row["exp_ms"] > 0 and row["nodes"] >= 1
        if row["builtin"] is not None:
            assert row["builtin_ms"] > 0 and row["ratio_builtin"] > 0
        if row["direction"] == "forward":
            assert row["ours_max_rel_error"] >= 0
            assert (row["builtin_max_rel_error"] is None) == (row["builtin"] is None)
            assert (row["target_met"] is None) == (row["builtin"] is None)


def test_builtins_and_kernels(results: tuple[dict[str, Any], str]) -> None:
    data, table = results
    builtins = {row["graph"]: row["builtin"] for row in data["rows"]}
    assert builtins["sigmoid"] == "Sigmoid" and builtins["softmax (log=True)"] == "LogSoftmax"
    assert builtins["gelu (approximate=tanh)"] == "Gelu" and builtins["xsin"] is None
    kernels = [k["kernel"] for k in data["kernels"]]
    assert kernels[:3] == ["Where(mask, x, y)", "Neg(x)", "Exp(x)"]
    assert "load_average_at_end" in data["machine"]
    assert "onnxruntime" in data["machine"]["versions"]
    assert table.startswith("# Compute: our graphs against onnxruntime's operators")
