"""The transport floor: a bare grpcio echo server, run in its own process.

Two generic methods: ``Echo`` (unary) returns the request bytes as they came, and
``EchoStream`` (bidirectional streaming) answers each message of a stream with that
message, as it arrives, the way actgrad's ``*Stream`` RPCs answer each chunk. No
(de)serializers (grpcio hands the handler raw bytes and sends the returned bytes as
they are), no protobuf parsing, no compute. It is built like ``actgrad serve``'s
server (a thread pool of the same size, the same message limits and concurrency
cap) so that the only difference left is actgrad's own work.

    python -m bench.echo_server --port 0
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from types import FrameType

import grpc

__all__ = ["ECHO_METHOD", "ECHO_STREAM_METHOD", "build_server", "echo", "echo_stream", "main"]

_LOGGER = logging.getLogger("bench.echo_server")

_SERVICE = "bench.v1.Echo"
ECHO_METHOD = f"/{_SERVICE}/Echo"
ECHO_STREAM_METHOD = f"/{_SERVICE}/EchoStream"


def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def echo_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    # One answer per message as soon as it is read, like actgrad's chunk handlers.
    yield from requests


def build_server(
    *, threads: int, max_message_bytes: int, max_concurrent_rpcs: int
) -> tuple[grpc.Server, futures.ThreadPoolExecutor]:
    """The echo server with actgrad's server options (see actgrad_server.app)."""
    executor = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="echo-rpc")
    server = grpc.server(
        executor,
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        # actgrad's rule (Settings.call_cap): a call per thread above the limit, so
        # that a caller keeping `max_concurrent_rpcs` calls unanswered is not refused.
        maximum_concurrent_rpcs=max_concurrent_rpcs + threads,
    )
    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "EchoStream": grpc.stream_stream_rpc_method_handler(echo_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    return server, executor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--max-concurrent-rpcs", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    server, executor = build_server(
        threads=args.threads,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
    )
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        _LOGGER.error("cannot bind %s:%d", args.host, args.port)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, args=(0,), name="echo-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    # The harness reads the port from this line (bench._proc).
    _LOGGER.info("serving %s on %s:%d", _SERVICE, args.host, port)
    server.wait_for_termination()
    executor.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
