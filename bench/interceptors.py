"""What the server's interceptors cost per call, in process (issue 9 part 4).

`python -m bench.interceptors` runs one 16-element Activate(sigmoid) through the
servicer's real handler (our codecs, the real engine) many times, bare and behind
the interceptor `actgrad serve` installs (`CallInterceptor`: drain, tokens, the
stream pool, request id, metrics, labels), both through grpc's own interceptor
pipeline code, and prints the per-call time of each and their difference, the
median of several rounds.

The servicer context is a stand-in whose methods return at once, so grpc's own
context calls (trailing metadata, callbacks, deadline checks) are not in the
figure: it is the Python work of our interceptors and of grpc's pipeline, a lower
bound of their server CPU. Everything runs in one thread of this process; nothing
listens on a socket.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc import _interceptor

from actgrad.v1 import activation_pb2 as pb
from actgrad.wire import codec_for, decode, encode
from actgrad_server.api import activation
from actgrad_server.api._interceptors import CallInterceptor, StreamGuard
from actgrad_server.calls.admission import Admission
from actgrad_server.calls.records import CallRecords
from actgrad_server.config import Settings
from actgrad_server.engine import Engine
from actgrad_server.metrics import ServerMetrics

__all__ = ["Result", "main", "measure"]

_METHOD = "/actgrad.v1.ActivationService/Activate"


class _Context:
    """The servicer context calls the interceptors and the handler make, doing nothing."""

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


@dataclass(frozen=True)
class _Details:
    method: str = _METHOD
    invocation_metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Result:
    bare_us: float
    intercepted_us: float
    calls: int
    rounds: int

    @property
    def interceptors_us(self) -> float:
        return self.intercepted_us - self.bare_us


def measure(*, calls: int = 3000, rounds: int = 5, access_log: bool = False) -> Result:
    """Median per-call microseconds, bare and intercepted, over `rounds` rounds."""
    engine = Engine(device="cpu")
    servicer = activation.ActivationServicer(engine, Settings().limits)
    base = grpc.unary_unary_rpc_method_handler(
        servicer.Activate,
        request_deserializer=codec_for(pb.ActivateRequest).parse,
        response_serializer=codec_for(pb.ActivateResponse).serialize,
    )
    streams = StreamGuard(2, 0)
    pipeline = _interceptor.service_pipeline(
        [
            CallInterceptor(
                CallRecords(ServerMetrics(engine.cache_info), access_log=access_log),
                Admission(threading.Event()),
                streams=streams,
            )
        ]
    )
    assert pipeline is not None
    x = np.linspace(-3.0, 3.0, 16, dtype=np.float32)
    request = pb.ActivateRequest(function="sigmoid")
    encode(x, out=request.input)
    wire = request.SerializeToString()
    context = _Context()
    details = _Details()

    def call(handler: Any) -> bytes:
        response = handler.unary_unary(handler.request_deserializer(wire), context)
        return handler.response_serializer(response)  # type: ignore[no-any-return]

    def bare() -> bytes:
        return call(base)

    def intercepted() -> bytes:
        return call(pipeline.execute(lambda _: base, details))  # type: ignore[arg-type]

    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    for run in (bare, intercepted):
        answer = decode(pb.ActivateResponse.FromString(run()).output)
        np.testing.assert_allclose(answer, expected, rtol=1e-6)

    def per_call(run: Callable[[], bytes]) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - start) / calls * 1e6

    samples: dict[str, list[float]] = {"bare": [], "intercepted": []}
    try:
        for _ in range(max(calls // 10, 1)):  # warm-up
            bare()
            intercepted()
        for _ in range(rounds):  # interleaved, so that load changes hit both alike
            samples["bare"].append(per_call(bare))
            samples["intercepted"].append(per_call(intercepted))
    finally:
        streams.close()
    return Result(
        statistics.median(samples["bare"]),
        statistics.median(samples["intercepted"]),
        calls,
        rounds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interceptors", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--access-log", action="store_true", help="with the access log on")
    args = parser.parse_args(argv)
    result = measure(calls=args.calls, rounds=args.rounds, access_log=args.access_log)
    print(
        f"16-element Activate(sigmoid), median of {result.rounds} rounds of "
        f"{result.calls} calls: handler {result.bare_us:.1f} us, behind the interceptors "
        f"{result.intercepted_us:.1f} us: interceptors {result.interceptors_us:.1f} us per call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
