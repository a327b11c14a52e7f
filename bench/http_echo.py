"""The HTTP transport floor: a bare echo on actgrad's own HTTP stack, in its own process.

Every POST is answered with its body, as it came, and its content type (and
`Inference-Header-Content-Length`, so that an echoed binary-extension request reads
like an answer). It is a plain Starlette route served by actgrad's own `HttpServer`
(uvicorn with httptools and uvloop on a thread and event loop of its own, the same
uvicorn options, the same listening socket), so that what separates actgrad from it
is actgrad's work: the pipeline around every route (request id, tokens, limits,
metrics, access log), the JSON or binary decoding, the thread pool, onnxruntime and
the encoding of the answer.

    python -m bench.http_echo --port 0
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actgrad_server.http.app import HttpApp
from actgrad_server.http.server import HttpServer

__all__ = ["build_app", "main"]

_LOGGER = logging.getLogger("bench.http_echo")
_HEADER_LENGTH = "inference-header-content-length"


async def echo(request: Request) -> Response:
    body = await request.body()
    headers = {}
    if _HEADER_LENGTH in request.headers:
        headers["Inference-Header-Content-Length"] = request.headers[_HEADER_LENGTH]
    return Response(body, media_type=request.headers.get("content-type"), headers=headers)


def build_app() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", echo, methods=["POST"])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_echo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    routes = build_app()
    # actgrad's HttpServer serves `app.pipeline`; here the bare routes stand in for
    # actgrad's pipeline (nothing runs on the pool: it is only shut down at the end).
    stand_in: Any = HttpApp(cast(Any, routes), ThreadPoolExecutor(max_workers=1), routes)
    server = HttpServer(stand_in, args.host, args.port, reuse_port=False)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    # The harness reads the port from this line (bench._proc).
    _LOGGER.info("serving bench.http.Echo on %s:%d", args.host, server.port)
    stopped.wait()
    server.stop(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
