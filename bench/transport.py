"""``python -m bench.transport``: the bare transport under HTTP/2 settings and server models.

Issue 9, parts 6 and 5. What is measured is a bare grpcio echo, the same two generic
methods as `bench.echo_server` (``Echo`` returns the request bytes, ``EchoStream``
answers each message of a stream with that message; no (de)serializers, no
protobuf, no compute), each server in its own process, listening on TCP
127.0.0.1 and on a Unix-domain socket in a temporary folder, and called over both:

- **part 6, HTTP/2 settings**: the sync server (a ThreadPoolExecutor of ``--threads``,
  16 like ``actgrad serve``) once per setting in `SETTINGS`, the setting's channel
  arguments given to the server and to the client's channel alike. Latency of one
  call at a time at ``--sizes`` (unary) and of one streamed payload (``--stream-bytes``
  in ``--stream-chunk-bytes`` messages, as the SDK streams a large tensor), then
  throughput of ``--throughput-bytes`` calls at ``--concurrency`` for ``default``
  against the setting with the lowest latency (geometric mean of its p50 over
  ``default``'s across every size and transport).
- **part 5, server model**: the sync server as above against a ``grpc.aio`` server
  whose handlers are ``async def`` and return the bytes inline, both with grpcio's
  default HTTP/2 settings: the same latency cells, and the same throughput cells.

Both parts use ``actgrad serve``'s message limit (64 MiB) on both ends and its cap
on concurrent RPCs. Latency follows `bench.harness`: the first answer of every cell
is checked byte for byte (a different answer stops the run, `EchoMismatch`), the
warm-up sets one call count per payload for all subjects from ``--cell-seconds``,
and every round runs every cell with the subject order rotated by one. Throughput,
like the harness's, keeps that many calls in flight from one asyncio event loop
with a ``grpc.aio`` client over min(``--channels``, in flight) connections. Each
server's CPU time (its processes' CPU clocks) is read around every cell. A benchmark is not a test:
nothing here asserts on time. Writes ``<name>.json`` and ``<name>.md`` into ``--out``.

    python -m bench.transport --out bench/results --name transport-2026-11-30

The same module is the servers' entry point (``python -m bench.transport serve``),
so its top-level imports stay light: no onnxruntime, no matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import random
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import grpc.aio

from actgrad_server.config import Settings
from bench._common import (
    keep_in_flight,
    median,
    positive_float,
    positive_int,
    rotated,
    sample,
    to_us,
    write_results,
)
from bench._proc import REPO_ROOT, ServerProcess
from bench.echo_server import ECHO_METHOD, ECHO_STREAM_METHOD, echo, echo_stream
from bench.machine import load_average, machine_info

__all__ = [
    "CHANNEL_ARGS",
    "SETTINGS",
    "EchoMismatch",
    "Setting",
    "best_setting",
    "check_echo",
    "main",
    "markdown",
    "run",
]

_LOGGER = logging.getLogger("bench.transport")

# grpc core's channel argument names (include/grpc/impl/channel_arg_names.h), and
# what each does in grpc core's chttp2 transport; docs/performance.md has the sources.
BDP_PROBE = "grpc.http2.bdp_probe"
LOOKAHEAD = "grpc.http2.lookahead_bytes"
MAX_FRAME = "grpc.http2.max_frame_size"
MAX_RECEIVE = "grpc.max_receive_message_length"
MAX_SEND = "grpc.max_send_message_length"
CHANNEL_ARGS = {
    BDP_PROBE: "0/1, default 1: estimate the bandwidth-delay product with PING frames and "
    "raise this end's receive window and the max frame size it announces to match (grpcio "
    "1.85 here: 65,535 -> 4 MiB -> up to 128 MiB window and 16 KiB -> 16 MiB - 1 frames "
    "within the first few 16 MiB calls)",
    LOOKAHEAD: "bytes, default 65,535: this end's initial stream window "
    "(SETTINGS_INITIAL_WINDOW_SIZE) and its flow-control target; overridden by the first "
    "BDP estimate while BDP probing is on",
    MAX_FRAME: "bytes, 16384..16777215, default 16384: the largest frame this end accepts "
    "(SETTINGS_MAX_FRAME_SIZE; the peer's writes are also capped by the windows and an "
    "adaptive write size); overridden by the first BDP estimate while BDP probing is on",
    MAX_RECEIVE: "bytes: the largest message this end accepts (actgrad: 64 MiB)",
    MAX_SEND: "bytes: the largest message this end sends (actgrad: 64 MiB)",
}
_MIB = 1 << 20
_HTTP2_MAX_FRAME = (1 << 24) - 1  # RFC 9113 §6.5.2: frames of at most 2^24 - 1 bytes
# Channels to the same target share one connection unless each has its own pool.
_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
_SERVICE, _ECHO = ECHO_METHOD.strip("/").split("/")
_ECHO_STREAM = ECHO_STREAM_METHOD.strip("/").split("/")[1]
# A Unix-domain socket path must fit sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
_SCHEMA = 1

PART_SETTINGS = "part6"
PART_MODEL = "part5"
PARTS = {"6": PART_SETTINGS, "5": PART_MODEL}
TRANSPORTS = ("tcp", "unix")
MODELS = ("sync", "aio")
BASELINE_SETTING = "default"


@dataclass(frozen=True)
class Setting:
    """HTTP/2 channel arguments given to the server and to the client channel alike."""

    name: str
    description: str
    options: tuple[tuple[str, int], ...]


SETTINGS: tuple[Setting, ...] = (
    Setting(BASELINE_SETTING, "grpcio's defaults (what actgrad serve and the SDK use)", ()),
    Setting("bdp-off", "BDP probing off: HTTP/2's 65,535-byte window", ((BDP_PROBE, 0),)),
    Setting(
        "window-64m",
        "BDP probing off, a fixed 64 MiB stream window",
        ((BDP_PROBE, 0), (LOOKAHEAD, 64 * _MIB)),
    ),
    Setting(
        "frame-16m",
        "max frame size 16 MiB (2^24 - 1), BDP probing on",
        ((MAX_FRAME, _HTTP2_MAX_FRAME),),
    ),
    Setting(
        "frame-16m-bdp-off",
        "max frame size 16 MiB, BDP probing off (65,535-byte window)",
        ((BDP_PROBE, 0), (MAX_FRAME, _HTTP2_MAX_FRAME)),
    ),
    Setting(
        "window-64m-frame-16m",
        "the combination: BDP probing off, 64 MiB window, 16 MiB max frame",
        ((BDP_PROBE, 0), (LOOKAHEAD, 64 * _MIB), (MAX_FRAME, _HTTP2_MAX_FRAME)),
    ),
)


class EchoMismatch(RuntimeError):
    """An echo answered with other bytes than it was sent: the run stops, no numbers."""


def check_echo(where: str, sent: Sequence[bytes], got: Sequence[bytes]) -> None:
    """Raises `EchoMismatch` unless `got` holds exactly the messages of `sent`."""
    if len(got) == len(sent) and all(a == b for a, b in zip(sent, got, strict=True)):
        return
    raise EchoMismatch(
        f"{where}: sent {len(sent)} messages ({sum(map(len, sent))} bytes), got "
        f"{len(got)} messages ({sum(map(len, got))} bytes) back that are not the same bytes"
    )


# -- the servers (python -m bench.transport serve) ----------------------------------
async def _echo_async(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _echo_stream_async(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


def _handler(
    unary: Callable[..., Any], stream: Callable[..., Any]
) -> grpc.GenericRpcHandler[bytes, bytes]:
    # bench.echo_server's service and method names, so the wire paths are the same.
    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            _ECHO: grpc.unary_unary_rpc_method_handler(unary),
            _ECHO_STREAM: grpc.stream_stream_rpc_method_handler(stream),
        },
    )


def _option(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("grpc."):
        raise argparse.ArgumentTypeError(f"expected grpc.NAME=INTEGER, got {text!r}")
    return key, int(value)


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transport serve",
        description="One echo server (sync or grpc.aio) on TCP and a Unix-domain socket.",
    )
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uds", required=True, help="path of the Unix-domain socket")
    parser.add_argument("--threads", type=int, required=True, help="sync: thread pool size")
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--max-concurrent-rpcs", type=int, required=True)
    parser.add_argument(
        "--option", type=_option, action="append", default=[], help="grpc.NAME=INT, repeatable"
    )
    return parser


def _server_options(args: argparse.Namespace) -> list[tuple[str, Any]]:
    # bench.echo_server.build_server's options (actgrad serve's), then the setting's.
    return [
        (MAX_SEND, args.max_message_bytes),
        (MAX_RECEIVE, args.max_message_bytes),
        ("grpc.so_reuseport", 0),
        *args.option,
    ]


def _bind(server: grpc.Server | grpc.aio.Server, args: argparse.Namespace) -> int:
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0 or server.add_insecure_port(f"unix:{args.uds}") == 0:
        raise RuntimeError(f"cannot bind {args.host}:{args.port} and unix:{args.uds}")
    return port


def _serving(args: argparse.Namespace, port: int) -> None:
    # bench._proc.ServerProcess reads the port from this line.
    _LOGGER.info(
        "serving %s on %s:%d and unix:%s (%s server, options %s)",
        _SERVICE,
        args.host,
        port,
        args.uds,
        args.model,
        args.option,
    )


def _serve_sync(args: argparse.Namespace) -> int:
    executor = futures.ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="echo-rpc")
    server = grpc.server(
        executor,
        options=_server_options(args),
        maximum_concurrent_rpcs=args.max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((_handler(echo, echo_stream),))
    port = _bind(server, args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, args=(0,), name="echo-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    _serving(args, port)
    server.wait_for_termination()
    executor.shutdown(wait=True)
    return 0


async def _serve_aio(args: argparse.Namespace) -> int:
    server = grpc.aio.server(
        options=_server_options(args), maximum_concurrent_rpcs=args.max_concurrent_rpcs
    )
    server.add_generic_rpc_handlers((_handler(_echo_async, _echo_stream_async),))
    port = _bind(server, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    _serving(args, port)
    await stop.wait()
    await server.stop(0)
    return 0


def serve(argv: Sequence[str]) -> int:
    """``python -m bench.transport serve ...``: one echo server until SIGTERM."""
    args = _serve_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.model == "sync":
        return _serve_sync(args)
    return asyncio.run(_serve_aio(args))


# -- what is measured ----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    out: Path
    name: str
    parts: tuple[str, ...]
    settings: tuple[str, ...]
    transports: tuple[str, ...]
    sizes: tuple[int, ...]
    stream_bytes: int
    stream_chunk_bytes: int
    repeats: int
    warmup: int
    cell_seconds: float
    min_calls: int
    max_calls: int
    concurrency: tuple[int, ...]
    channels: int
    throughput_bytes: int
    throughput_seconds: float
    throughput_warmup: float
    throughput_repeats: int
    throughput_setting: str | None
    threads: int
    max_message_bytes: int
    max_concurrent_rpcs: int
    timeout: float
    seed: int
    note: str

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["out"] = str(self.out)
        return values


@dataclass(frozen=True)
class Payload:
    """What one call sends: one unary message, or a stream of chunk messages."""

    label: str
    messages: tuple[bytes, ...]
    streamed: bool

    @property
    def total_bytes(self) -> int:
        return sum(len(m) for m in self.messages)

    def describe(self) -> dict[str, Any]:
        return {
            "payload": self.label,
            "payload_bytes": self.total_bytes,
            "mode": "streamed" if self.streamed else "unary",
            "messages": len(self.messages),
            "largest_message_bytes": max(len(m) for m in self.messages),
        }


@dataclass(frozen=True)
class Endpoint:
    """One server (a setting's or a model's) reached over one transport."""

    part: str
    group: str  # the setting or the server model
    transport: str
    target: str
    channel_options: tuple[tuple[str, Any], ...]
    server: ServerProcess

    @property
    def name(self) -> str:
        return f"{self.group}/{self.transport}"


def _size_label(n: int) -> str:
    for suffix, value in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= value and n % value == 0:
            return f"{n // value} {suffix}"
    return f"{n} B"


def _payloads(config: Config) -> list[Payload]:
    rng = random.Random(config.seed)  # random bytes: nothing on the way can shrink them
    payloads = [Payload(_size_label(n), (rng.randbytes(n),), False) for n in config.sizes]
    if config.stream_bytes:
        data = rng.randbytes(config.stream_bytes)
        step = config.stream_chunk_bytes
        chunks = tuple(data[i : i + step] for i in range(0, len(data), step))
        label = (
            f"{_size_label(config.stream_bytes)} streamed, "
            f"{len(chunks)} x {_size_label(len(chunks[0]))}"
        )
        payloads.append(Payload(label, chunks, True))
    return payloads


def _start_server(
    part: str,
    group: str,
    *,
    model: str,
    options: Sequence[tuple[str, int]],
    socket_dir: Path,
    config: Config,
) -> tuple[ServerProcess, Path]:
    socket_path = socket_dir / f"{part}-{group}.sock"
    args = [
        "serve",
        f"--model={model}",
        "--host=127.0.0.1",
        "--port=0",
        f"--uds={socket_path}",
        f"--threads={config.threads}",
        f"--max-message-bytes={config.max_message_bytes}",
        f"--max-concurrent-rpcs={config.max_concurrent_rpcs}",
        *(f"--option={key}={value}" for key, value in options),
    ]
    server = ServerProcess(f"{part}-{group}", "bench.transport", args, start_timeout=60.0)
    return server, socket_path


def _endpoints(
    part: str,
    group: str,
    server: ServerProcess,
    socket_path: Path,
    options: Sequence[tuple[str, int]],
    config: Config,
) -> list[Endpoint]:
    """The server over each transport; the client channel gets the setting's options
    too, after the two the SDK sets (actgrad._channel.channel_options)."""
    channel_options = (
        (MAX_SEND, config.max_message_bytes),
        (MAX_RECEIVE, config.max_message_bytes),
        *options,
        _OWN_CONNECTION,
    )
    targets = {"tcp": server.target, "unix": f"unix:{socket_path}"}
    return [
        Endpoint(part, group, transport, targets[transport], channel_options, server)
        for transport in config.transports
    ]


def _percentile(ordered: Sequence[int], q: float) -> float:
    """numpy.percentile's default (linear) on sorted values."""
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- latency -------------------------------------------------------------------------

Call = Callable[[], list[bytes]]


def _sync_call(channel: grpc.Channel, payload: Payload, timeout: float) -> Call:
    """One call of `payload` that returns every message it got back."""
    if payload.streamed:
        stream = channel.stream_stream(ECHO_STREAM_METHOD, None, None)
        messages = payload.messages
        # Every answer is read, as the SDK reads every chunk's response.
        return lambda: list(stream(iter(messages), timeout=timeout))
    echo = channel.unary_unary(ECHO_METHOD, None, None)
    message = payload.messages[0]
    return lambda: [echo(message, timeout=timeout)]


def _warm_up(where: str, call: Call, payload: Payload, config: Config) -> list[int]:
    """Checks the first answer byte for byte, then runs untimed calls; their durations."""
    check_echo(where, payload.messages, call())
    durations: list[int] = []
    deadline = time.perf_counter() + config.cell_seconds
    for _ in range(max(config.warmup - 1, 2)):
        start = time.perf_counter_ns()
        call()
        durations.append(time.perf_counter_ns() - start)
        if time.perf_counter() > deadline and len(durations) >= 2:
            break
    return durations


def _latency_phase(
    endpoints: Sequence[Endpoint], payloads: Sequence[Payload], config: Config
) -> list[dict[str, Any]]:
    """p50/p99 of one call at a time per (endpoint, payload), interleaved rounds."""
    with contextlib.ExitStack() as stack:
        calls: dict[tuple[str, str], Call] = {}
        for endpoint in endpoints:
            channel = grpc.insecure_channel(endpoint.target, options=endpoint.channel_options)
            stack.callback(channel.close)
            for payload in payloads:
                calls[endpoint.name, payload.label] = _sync_call(channel, payload, config.timeout)

        counts: dict[str, int] = {}
        for payload in payloads:
            slowest = 1.0
            for endpoint in endpoints:
                where = f"{endpoint.part} {endpoint.name} {payload.label}"
                durations = _warm_up(where, calls[endpoint.name, payload.label], payload, config)
                slowest = max(slowest, statistics.median(durations))
            # One call count per payload for all endpoints: equal sample sizes.
            wanted = int(config.cell_seconds * 1e9 / slowest)
            counts[payload.label] = min(max(wanted, config.min_calls), config.max_calls)
        _LOGGER.info("latency: warm-up done, every echo checked; calls per cell %s", counts)

        samples: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
        server_cpu: dict[tuple[str, str], float] = defaultdict(float)
        for round_index in range(config.repeats):
            order = rotated(endpoints, round_index)
            for payload in payloads:
                for endpoint in order:
                    key = (endpoint.name, payload.label)
                    cpu0 = endpoint.server.cpu_seconds()
                    samples[key].append(sample(calls[key], counts[payload.label]))
                    server_cpu[key] += endpoint.server.cpu_seconds() - cpu0
            _LOGGER.info("latency: round %d/%d done", round_index + 1, config.repeats)

    rows = []
    for payload in payloads:
        for endpoint in endpoints:
            key = (endpoint.name, payload.label)
            rounds = samples[key]
            flat = sorted(s for r in rounds for s in r)
            rows.append(
                {
                    "part": endpoint.part,
                    "group": endpoint.group,
                    "transport": endpoint.transport,
                    **payload.describe(),
                    "echo_checked": True,
                    "samples": len(flat),
                    "calls_per_round": counts[payload.label],
                    "p50_us": to_us(_percentile(flat, 50)),
                    "p99_us": to_us(_percentile(flat, 99)),
                    "mean_us": to_us(statistics.fmean(flat)),
                    "min_us": to_us(flat[0]),
                    "max_us": to_us(flat[-1]),
                    "round_p50_us": [to_us(statistics.median(r)) for r in rounds],
                    "server_cpu_us_per_call": round(server_cpu[key] / len(flat) * 1e6, 1),
                }
            )
    return rows


# -- throughput ----------------------------------------------------------------------


async def _throughput_cell(
    endpoint: Endpoint, message: bytes, concurrency: int, config: Config
) -> dict[str, Any]:
    """`concurrency` unary calls kept in flight from one event loop (bench.harness's
    way: one asyncio loop rather than a thread per call, so that the client costs
    little and the same for every server), spread over a few connections."""
    async with contextlib.AsyncExitStack() as stack:
        echoes = []
        for _ in range(min(config.channels, concurrency)):
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(endpoint.target, options=endpoint.channel_options)
            )
            echo = channel.unary_unary(ECHO_METHOD, None, None)
            where = f"{endpoint.part} {endpoint.name} throughput"
            check_echo(where, [message], [await echo(message, timeout=config.timeout)])
            echoes.append(functools.partial(echo, message, timeout=config.timeout))
        return await keep_in_flight(
            echoes,
            concurrency,
            warmup=config.throughput_warmup,
            seconds=config.throughput_seconds,
            server_cpu=endpoint.server.cpu_seconds,
            failures=(grpc.aio.AioRpcError,),
            status=lambda exc: exc.code().name,  # type: ignore[attr-defined]
        )


def _throughput_phase(endpoints: Sequence[Endpoint], config: Config) -> list[dict[str, Any]]:
    message = random.Random(config.seed + 1).randbytes(config.throughput_bytes)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for round_index in range(config.throughput_repeats):
        for concurrency in config.concurrency:
            for endpoint in rotated(endpoints, round_index):
                cell = asyncio.run(_throughput_cell(endpoint, message, concurrency, config))
                cells[endpoint.name, concurrency].append(cell)
        _LOGGER.info("throughput: round %d/%d done", round_index + 1, config.throughput_repeats)
    rows = []
    for concurrency in config.concurrency:
        for endpoint in endpoints:
            measured = cells[endpoint.name, concurrency]
            errors: Counter[str] = Counter()
            for cell in measured:
                errors.update(cell["errors"])
            rows.append(
                {
                    "part": endpoint.part,
                    "group": endpoint.group,
                    "transport": endpoint.transport,
                    "payload_bytes": config.throughput_bytes,
                    "concurrency": concurrency,
                    "echo_checked": True,
                    "calls": sum(c["calls"] for c in measured),
                    "calls_per_s": median([c["calls_per_s"] for c in measured]),
                    "round_calls_per_s": [round(c["calls_per_s"], 1) for c in measured],
                    "server_cpu_us_per_call": median(
                        [c["server_cpu_us_per_call"] for c in measured]
                    ),
                    "server_cpu_cores": median([c["server_cpu_cores"] for c in measured]),
                    "client_cpu_cores": median([c["client_cpu_cores"] for c in measured]),
                    "errors": dict(errors),
                }
            )
    return rows


# -- the run -------------------------------------------------------------------------


def best_setting(latency: Sequence[dict[str, Any]], baseline: str) -> dict[str, Any] | None:
    """The setting other than `baseline` whose p50 over the baseline's, geometric mean
    over every (transport, payload), is lowest; None when there is no other."""
    p50 = {(r["group"], r["transport"], r["payload"]): r["p50_us"] for r in latency}
    scores: dict[str, float] = {}
    for group in dict.fromkeys(r["group"] for r in latency):
        if group == baseline:
            continue
        ratios = [
            value / p50[baseline, transport, payload]
            for (g, transport, payload), value in p50.items()
            if g == group and (baseline, transport, payload) in p50
        ]
        if ratios:
            scores[group] = round(math.exp(statistics.fmean(math.log(r) for r in ratios)), 4)
    if not scores:
        return None
    best = min(scores, key=scores.__getitem__)
    return {
        "setting": best,
        "geomean_p50_ratio": scores[best],
        "beats_baseline": scores[best] < 1.0,
        "scores": scores,
    }


def _socket_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    if len(str(folder)) + 40 > _MAX_SOCKET_PATH:  # a long $TMPDIR: sockets go to /tmp
        shutil.rmtree(folder, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="bench-transport-", dir="/tmp"))
    return folder


def _settings_part(
    config: Config, payloads: Sequence[Payload], socket_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    chosen = [s for s in SETTINGS if s.name in config.settings]
    servers: list[dict[str, Any]] = []
    endpoints: dict[str, list[Endpoint]] = {}
    with contextlib.ExitStack() as stack:
        for setting in chosen:
            server, socket_path = _start_server(
                PART_SETTINGS,
                setting.name,
                model="sync",
                options=setting.options,
                socket_dir=socket_dir,
                config=config,
            )
            stack.callback(server.stop)
            servers.append(
                {
                    "part": PART_SETTINGS,
                    "group": setting.name,
                    "pid": server.pid,
                    "argv": server.argv[1:],
                }
            )
            endpoints[setting.name] = _endpoints(
                PART_SETTINGS, setting.name, server, socket_path, setting.options, config
            )
        _LOGGER.info("part 6: %d servers, %s", len(chosen), ", ".join(endpoints))
        every = [e for group in endpoints.values() for e in group]
        latency = _latency_phase(every, payloads, config)
        best = best_setting(latency, BASELINE_SETTING)
        compared = config.throughput_setting or (best["setting"] if best else None)
        groups = [g for g in dict.fromkeys([BASELINE_SETTING, compared]) if g in endpoints]
        _LOGGER.info("part 6: throughput of %s", " against ".join(groups))
        throughput = _throughput_phase([e for g in groups for e in endpoints[g]], config)
    part = {
        "baseline": BASELINE_SETTING,
        "groups": [s.name for s in chosen],
        "latency": latency,
        "best_setting": best,
        "throughput_groups": groups,
        "throughput": throughput,
    }
    return part, servers


def _model_part(
    config: Config, payloads: Sequence[Payload], socket_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    servers: list[dict[str, Any]] = []
    every: list[Endpoint] = []
    with contextlib.ExitStack() as stack:
        for model in MODELS:
            server, socket_path = _start_server(
                PART_MODEL, model, model=model, options=(), socket_dir=socket_dir, config=config
            )
            stack.callback(server.stop)
            servers.append(
                {"part": PART_MODEL, "group": model, "pid": server.pid, "argv": server.argv[1:]}
            )
            every.extend(_endpoints(PART_MODEL, model, server, socket_path, (), config))
        _LOGGER.info("part 5: servers %s", ", ".join(MODELS))
        latency = _latency_phase(every, payloads, config)
        throughput = _throughput_phase(every, config)
    part = {
        "baseline": MODELS[0],
        "groups": list(MODELS),
        "latency": latency,
        "throughput_groups": list(MODELS),
        "throughput": throughput,
    }
    return part, servers


def run(config: Config, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the configured parts and returns the results (docs/performance.md)."""
    machine = machine_info()
    results: dict[str, Any] = {
        "kind": "transport",
        "schema": _SCHEMA,
        "name": config.name,
        "note": config.note,
        "command": shlex.join(["python", "-m", "bench.transport", *argv]),
        "machine": machine,
        "config": config.as_json(),
        "channel_args": CHANNEL_ARGS,
        "settings": [asdict(s) for s in SETTINGS if s.name in config.settings],
        "servers": [],
    }
    payloads = _payloads(config)
    socket_dir = _socket_dir()
    results["socket_dir"] = str(socket_dir)  # removed at the end, sockets and all
    try:
        for part in config.parts:
            measure = _settings_part if part == PART_SETTINGS else _model_part
            results[part], servers = measure(config, payloads, socket_dir)
            results["servers"].extend(servers)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    machine["load_average_at_end"] = load_average()
    return results


# -- the report ----------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return f" ({value / base:.2f}x)" if value and base else ""


def _grid(
    rows: Sequence[dict[str, Any]],
    groups: Sequence[str],
    baseline: str,
    row_key: str,
    row_label: Callable[[Any], str],
    value_key: str,
    fmt: Callable[[Any], str],
    *,
    ratios: bool,
) -> list[str]:
    """One line per (transport, row_key value), one column per group."""
    cells = {(r["transport"], r[row_key], r["group"]): r for r in rows}
    keys = list(dict.fromkeys((r["transport"], r[row_key]) for r in rows))
    lines = [
        f"| transport | {row_key.replace('_', ' ')} | " + " | ".join(groups) + " |",
        "|---|---|" + "---|" * len(groups),
    ]
    for transport, key in keys:
        base = cells.get((transport, key, baseline), {}).get(value_key)
        values = []
        for group in groups:
            row = cells.get((transport, key, group))
            value = None if row is None else row.get(value_key)
            text = fmt(value)
            if ratios and group != baseline:
                text += _ratio(value, base)
            values.append(text)
        lines.append(f"| {transport} | {row_label(key)} | " + " | ".join(values) + " |")
    return lines


def _errors(rows: Sequence[dict[str, Any]]) -> list[str]:
    failed = [
        f"{r['group']}/{r['transport']} at {r['concurrency']}: "
        + ", ".join(f"{code} x{n}" for code, n in r["errors"].items())
        for r in rows
        if r["errors"]
    ]
    return ["", "Failed calls (not counted): " + "; ".join(failed) + "."] if failed else []


def _part_lines(part: dict[str, Any]) -> list[str]:
    from bench.report import format_time  # matplotlib: not in the servers' imports

    def calls(value: Any) -> str:
        return "-" if value is None else f"{value:,.0f}/s"

    def cpu(value: Any) -> str:
        return "-" if value is None else f"{value:.0f} µs"

    groups, baseline = part["groups"], part["baseline"]
    latency, throughput = part["latency"], part["throughput"]
    t_groups = part["throughput_groups"]
    samples = sorted({r["samples"] for r in latency})
    return [
        f"Latency p50, one call at a time (ratio to `{baseline}`; {samples[0]}-{samples[-1]} "
        "samples per cell):",
        "",
        *_grid(latency, groups, baseline, "payload", str, "p50_us", format_time, ratios=True),
        "",
        "Latency p99:",
        "",
        *_grid(latency, groups, baseline, "payload", str, "p99_us", format_time, ratios=False),
        "",
        "Server CPU time per call:",
        "",
        *_grid(
            latency, groups, baseline, "payload", str, "server_cpu_us_per_call", cpu, ratios=False
        ),
        "",
        f"Throughput, {throughput[0]['payload_bytes'] if throughput else '-'}-byte unary "
        f"calls kept in flight from one asyncio loop (median of rounds; ratio to `{baseline}`):",
        "",
        *_grid(
            throughput, t_groups, baseline, "concurrency", str, "calls_per_s", calls, ratios=True
        ),
        "",
        "Server CPU time per call at that load:",
        "",
        *_grid(
            throughput,
            t_groups,
            baseline,
            "concurrency",
            str,
            "server_cpu_us_per_call",
            cpu,
            ratios=False,
        ),
        *_errors(throughput),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The report: the machine, then a section per part."""
    from bench.report import format_bytes  # matplotlib: not in the servers' imports

    m, cfg = results["machine"], results["config"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "# Transport: HTTP/2 settings and server models (issue 9, parts 6 and 5)",
        "",
        f"- Date (UTC): {m['date']}; CPU: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, "
        f"{format_bytes(m['memory_bytes'])} memory; {m['platform']}, {m['python']}",
        f"- Versions: {versions}",
        f"- Load average (1/5/15 min) at start {m['load_average_at_start']}, "
        f"at end {m.get('load_average_at_end')}",
        "- A bare echo (bench.echo_server's two methods), each server in its own process "
        "on 127.0.0.1 (tcp) and a Unix-domain socket (unix); message limit "
        f"{format_bytes(cfg['max_message_bytes'])} on both ends, at most "
        f"{cfg['max_concurrent_rpcs']} concurrent RPCs; sync servers run "
        f"{cfg['threads']} threads",
        f"- Latency: {cfg['repeats']} interleaved rounds, {cfg['min_calls']}-{cfg['max_calls']}"
        f" calls per cell per round (~{cfg['cell_seconds']} s), first answer of every cell "
        f"checked byte for byte; throughput: {cfg['throughput_repeats']} rounds of "
        f"{cfg['throughput_seconds']} s after {cfg['throughput_warmup']} s, over "
        f"min({cfg['channels']}, in flight) connections",
        f"- Command: `{results['command']}`",
    ]
    if results.get("note"):
        lines.append(f"- Note: {results['note']}")
    settings = results.get(PART_SETTINGS)
    if settings is not None:
        best = settings["best_setting"]
        lines += [
            "",
            "## Part 6: HTTP/2 settings (sync server; the arguments on server and client)",
            "",
            "| setting | what | channel arguments |",
            "|---|---|---|",
            *(
                f"| {s['name']} | {s['description']} | "
                + (", ".join(f"`{k}={v}`" for k, v in s["options"]) or "-")
                + " |"
                for s in results["settings"]
            ),
            "",
        ]
        if best is not None:
            lines += [
                f"Lowest latency: `{best['setting']}`, p50 {best['geomean_p50_ratio']:.3f}x "
                f"`{settings['baseline']}`'s (geometric mean over every row); all: "
                + ", ".join(f"{k} {v:.3f}x" for k, v in best["scores"].items())
                + ".",
                "",
            ]
        lines += _part_lines(settings)
    model = results.get(PART_MODEL)
    if model is not None:
        lines += [
            "",
            "## Part 5: server model (grpc.server with a thread pool against grpc.aio)",
            "",
            "Both with grpcio's default HTTP/2 settings; `aio`'s handlers are `async def` and "
            "return the bytes inline. Latency is measured with the same sync client for both.",
            "",
            *_part_lines(model),
        ]
    return "\n".join(lines) + "\n"


# -- the command line ----------------------------------------------------------------
def _list(parse: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse_list(text: str) -> tuple[Any, ...]:
        return tuple(dict.fromkeys(parse(item) for item in text.split(",") if item.strip()))

    return parse_list


def _choice(allowed: Sequence[str]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text.strip() not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return text.strip()

    return check


def build_parser() -> argparse.ArgumentParser:
    # bench.harness loads onnxruntime: imported here, for the measuring process only.
    from bench.harness import parse_count

    def count_or_zero(text: str) -> int:
        return 0 if text.strip() == "0" else parse_count(text)

    defaults = Settings()
    names = [s.name for s in SETTINGS]
    parser = argparse.ArgumentParser(
        prog="python -m bench.transport",
        description="A bare grpcio echo under HTTP/2 settings (part 6) and as a sync or "
        "grpc.aio server (part 5), over TCP and a Unix-domain socket. Counts take Ki/Mi "
        "suffixes. `python -m bench.transport serve --help`: one server.",
    )
    add = parser.add_argument
    add("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="output folder")
    add("--name", default="transport", help="file stem of the outputs (default: transport)")
    add("--render", type=Path, metavar="JSON", help="run nothing: rewrite an earlier run's .md")
    add("--parts", type=_list(_choice(tuple(PARTS))), default=("6", "5"), help="default: 6,5")
    add(
        "--settings",
        type=_list(_choice(names)),
        default=tuple(names),
        help=f"part 6's settings (default: all: {','.join(names)})",
    )
    add("--transports", type=_list(_choice(TRANSPORTS)), default=TRANSPORTS)
    add(
        "--sizes",
        type=_list(parse_count),
        default=(64, 4 << 10, 256 << 10, 4 << 20, 16 << 20),
        help="unary payload bytes (default: 64,4Ki,256Ki,4Mi,16Mi)",
    )
    add(
        "--stream-bytes",
        type=count_or_zero,
        default=64 << 20,
        help="bytes of the streamed payload, 0 for none (default: 64Mi)",
    )
    add(
        "--stream-chunk-bytes",
        type=parse_count,
        default=2 << 20,
        help="bytes per stream message (default: 2Mi, the SDK's chunk_bytes)",
    )
    add("--repeats", type=positive_int, default=5, help="latency rounds (default: 5)")
    add("--warmup", type=positive_int, default=5, help="untimed calls per cell (default: 5)")
    add(
        "--cell-seconds",
        type=positive_float,
        default=0.2,
        help="target time of one cell in one round; sets its call count (default: 0.2)",
    )
    add("--min-calls", type=positive_int, default=3, help="calls per cell per round, at least")
    add("--max-calls", type=positive_int, default=200, help="calls per cell per round, at most")
    add("--concurrency", type=_list(positive_int), default=(1, 8, 64), help="default: 1,8,64")
    add("--channels", type=positive_int, default=8, help="throughput connections, at most")
    add("--throughput-bytes", type=parse_count, default=64, help="default: 64 (16 float32)")
    add("--throughput-seconds", type=positive_float, default=2.0, help="measured, per cell")
    add("--throughput-warmup", type=positive_float, default=0.5, help="unmeasured lead-in")
    add("--throughput-repeats", type=positive_int, default=3, help="default: 3")
    add(
        "--throughput-setting",
        type=_choice(names),
        default=None,
        help="part 6: the setting compared with default for throughput (default: the "
        "one of lowest latency)",
    )
    add("--threads", type=positive_int, default=defaults.threads, help="sync server threads")
    add(
        "--max-message-bytes",
        type=parse_count,
        default=defaults.max_message_bytes,
        help="both ends' message limit (default: actgrad serve's)",
    )
    add(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=defaults.max_concurrent_rpcs,
        help="every server's cap (default: actgrad serve's)",
    )
    add("--timeout", type=positive_float, default=60.0, help="deadline of every call, seconds")
    add("--seed", type=int, default=0, help="seed of the payload bytes")
    add("--note", default="", help="free text for the report")
    return parser


def config_from_args(argv: Sequence[str]) -> Config | Path:
    """The run's `Config`, or the JSON file to render."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.render is not None:
        return Path(args.render)
    if args.min_calls > args.max_calls:
        parser.error("--min-calls must not exceed --max-calls")
    if BASELINE_SETTING not in args.settings and "6" in args.parts:
        parser.error(f"--settings must include {BASELINE_SETTING}, the baseline")
    if not args.sizes and not args.stream_bytes:
        parser.error("nothing to send: give --sizes or --stream-bytes")
    if args.throughput_setting not in (None, *args.settings):
        parser.error(f"--throughput-setting {args.throughput_setting} is not in --settings")
    largest = max([*args.sizes, args.stream_chunk_bytes if args.stream_bytes else 0])
    if largest > args.max_message_bytes:
        parser.error(f"a message of {largest} bytes is over --max-message-bytes")
    return Config(
        out=args.out,
        name=args.name,
        parts=tuple(PARTS[p] for p in args.parts),
        settings=args.settings,
        transports=args.transports,
        sizes=tuple(sorted(args.sizes)),
        stream_bytes=args.stream_bytes,
        stream_chunk_bytes=args.stream_chunk_bytes,
        repeats=args.repeats,
        warmup=args.warmup,
        cell_seconds=args.cell_seconds,
        min_calls=args.min_calls,
        max_calls=args.max_calls,
        concurrency=args.concurrency,
        channels=args.channels,
        throughput_bytes=args.throughput_bytes,
        throughput_seconds=args.throughput_seconds,
        throughput_warmup=args.throughput_warmup,
        throughput_repeats=args.throughput_repeats,
        throughput_setting=args.throughput_setting,
        threads=args.threads,
        max_message_bytes=args.max_message_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        timeout=args.timeout,
        seed=args.seed,
        note=args.note,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = config_from_args(argv)
    if isinstance(config, Path):
        results = json.loads(config.read_text(encoding="utf-8"))
        paths = [config.with_suffix(".md")]
        paths[0].write_text(markdown(results), encoding="utf-8")
    else:
        started = time.monotonic()
        results = run(config, argv)
        paths = write_results(results, config.out, config.name, markdown)
        _LOGGER.info("done in %.0f s", time.monotonic() - started)
    for path in paths:
        _LOGGER.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
