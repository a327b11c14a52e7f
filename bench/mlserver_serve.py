"""``python -m bench.mlserver_serve FOLDER PORT``, run with MLServer's venv's Python:
``mlserver start FOLDER``, and one line on stderr once the model answers ready.

The harness writes FOLDER (settings.json with the ports, model-settings.json naming
`bench.mlserver_runtime.OnnxRuntime`, the ONNX file) and reads the HTTP port from
the ``serving ... on HOST:PORT`` line, as it does for every server (bench._proc).
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
import urllib.request


def _announce_when_ready(port: int, model: str, deadline: float) -> None:
    url = f"http://127.0.0.1:{port}/v2/models/{model}/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    # A plain line on stderr: MLServer sets up logging its own way.
                    print(f"serving mlserver on 127.0.0.1:{port}", file=sys.stderr, flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)


def main() -> None:
    folder, port, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    threading.Thread(
        target=_announce_when_ready,
        args=(port, model, time.monotonic() + 300),
        daemon=True,
    ).start()
    from mlserver.cli.main import root

    root(["start", folder])


if __name__ == "__main__":
    main()
