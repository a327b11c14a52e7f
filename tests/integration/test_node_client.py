"""A client in another language: the Node.js test in tests/node against a real server.

`make test` installs its npm packages (`npm ci` in tests/node); the Node test loads
proto/actgrad/v1/*.proto with @grpc/proto-loader and calls Activate and Gradient over
loopback with @grpc/grpc-js.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from actgrad_server.app import ActgradServer

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_node_client_calls_activate_and_gradient(server: ActgradServer) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"npm packages missing: run `make node-deps` (npm ci in {NODE_DIR})")
    env = dict(os.environ, ACTGRAD_TARGET=f"127.0.0.1:{server.port}")
    proc = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(NODE_DIR / "activation.test.mjs")],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # node:test prints the counts; every test ran and none was skipped.
    assert "# fail 0" in proc.stdout and "# pass 5" in proc.stdout, proc.stdout
