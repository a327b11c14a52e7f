"""The ``http`` phase of ``python -m bench``: actgrad's HTTP front end against a bare
HTTP echo on the same stack, and against MLServer (issue 21, section 3).

Cases (``--http-cases``, default ``json:16,json:64Ki,binary:64Ki,binary:1Mi``) are one
Open Inference Protocol infer of the ``sigmoid`` model (Activate(sigmoid), the graph
the gRPC phases call) on the harness's float32 input of that many elements, shape
(elements / 1024, 1024):

- ``json``: ``POST /v2/models/sigmoid/infer`` with the tensor as JSON numbers (float32's
  shortest text, orjson), the answer as JSON numbers;
- ``binary``: the same route with Triton's binary tensor extension
  (``Inference-Header-Content-Length``, the input's raw bytes after the JSON header,
  ``binary_data`` asked for the output).

Servers: ``actgrad`` (the gRPC phases' one-process server, on its HTTP port),
``http-echo`` (`bench.http_echo`: the same request bytes answered as they came, on
actgrad's own HTTP stack) and, when ``.venv-mlserver`` exists, ``mlserver`` (MLServer 1.7
serving the same ONNX graph through `bench.mlserver_runtime`). MLServer's REST has no
binary extension (SeldonIO/MLServer#324), so its binary rows are its best equivalent,
gRPC ``ModelInfer`` with ``raw_input_contents``: called with grpcio (latency) and h2load
(throughput), like actgrad's own gRPC.

Latency: one call at a time from a Python keep-alive client (http.client, one
connection per server), the request sent and the whole answer read (its check, done
on the first answer of each cell, is not timed); rounds interleaved, subject order
rotated. Throughput: h2load over HTTP/1.1 (``--h1``) with ``--http-concurrency``
connections, one call in flight each; every cell verified as `bench.h2load` says.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson

from actgrad_server import catalog, graphs
from actgrad_server.oip import grpc_predict_v2_pb2 as oip_pb2
from bench import h2load
from bench._common import median, rotated, sample, to_us
from bench._proc import REPO_ROOT, ServerProcess
from bench.workloads import OPS, Reference, SessionSetup, make_input

__all__ = [
    "DEFAULT_CASES",
    "MLSERVER_PYTHON",
    "HttpCase",
    "mlserver_available",
    "parse_case",
    "run_phase",
]

_LOGGER = logging.getLogger("bench.http")

MODEL = "sigmoid"
INFER_PATH = f"/v2/models/{MODEL}/infer"
OIP_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
HTTP_INFER_RPC = " /v2/models/{model_name}/infer"  # the end of its rpc label
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
HEADER_LENGTH = "Inference-Header-Content-Length"
ENCODINGS = ("json", "binary")
# MLServer's own venv (make bench-mlserver-venv); BENCH_MLSERVER_VENV names another.
MLSERVER_VENV = Path(os.environ.get("BENCH_MLSERVER_VENV") or REPO_ROOT / ".venv-mlserver")
MLSERVER_PYTHON = MLSERVER_VENV / "bin" / "python"
# Same-graph results may differ only by how onnxruntime splits work across threads.
_RTOL, _ATOL = 1e-5, 1e-6
_SUFFIXES = (("Mi", 1 << 20), ("Ki", 1 << 10))


def mlserver_available() -> bool:
    return MLSERVER_PYTHON.exists()


@dataclass(frozen=True)
class HttpCase:
    encoding: str  # json or binary
    elements: int

    @property
    def name(self) -> str:
        for suffix, value in _SUFFIXES:
            if self.elements >= value and self.elements % value == 0:
                return f"{self.encoding} {self.elements // value} {suffix}"
        return f"{self.encoding} {self.elements}"


def parse_case(text: str) -> HttpCase:
    """``json:16``, ``binary:1Mi`` -> HttpCase; ValueError otherwise."""
    from bench.subjects import parse_count

    encoding, sep, count = text.strip().partition(":")
    if not sep or encoding not in ENCODINGS:
        raise ValueError(f"{text!r}: expected json:COUNT or binary:COUNT")
    return HttpCase(encoding, parse_count(count))


DEFAULT_CASES = (
    HttpCase("json", 16),
    HttpCase("json", 1 << 16),
    HttpCase("binary", 1 << 16),
    HttpCase("binary", 1 << 20),
)


# -- requests and answers ------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


def oip_request(case: HttpCase, x: np.ndarray[Any, Any]) -> HttpRequest:
    """The OIP REST infer of `x` (float32), as JSON numbers or binary."""
    tensor: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    if case.encoding == "json":
        tensor["data"] = x.reshape(-1)
        body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
        return HttpRequest(INFER_PATH, body, (("Content-Type", "application/json"),))
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps(
        {"inputs": [tensor], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    )
    return HttpRequest(
        INFER_PATH,
        header + raw,
        (("Content-Type", "application/octet-stream"), (HEADER_LENGTH, str(len(header)))),
    )


def oip_grpc_request(x: np.ndarray[Any, Any]) -> bytes:
    """OIP gRPC ModelInfer of `x` with its bytes in raw_input_contents."""
    request = oip_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend(x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return request.SerializeToString()


def _output(outputs: Sequence[Any], where: str) -> dict[str, Any]:
    for output in outputs:
        if output.get("name") == "y":
            return dict(output)
    raise h2load_error(f"{where}: no output y in {[o.get('name') for o in outputs]}")


def h2load_error(text: str) -> Exception:
    from bench.subjects import BenchError

    return BenchError(text)


def decode_http_answer(
    case: HttpCase, headers: http.client.HTTPMessage, body: bytes, where: str
) -> np.ndarray[Any, Any]:
    """The output y of an OIP REST answer, JSON or binary."""
    if case.encoding == "json" or HEADER_LENGTH.lower() not in {k.lower() for k in headers}:
        answer = orjson.loads(body)
        output = _output(answer["outputs"], where)
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    length = int(headers[HEADER_LENGTH])
    answer = orjson.loads(body[:length])
    output = _output(answer["outputs"], where)
    size = int(output["parameters"]["binary_data_size"])
    data = body[length : length + size]
    return np.frombuffer(data, dtype="<f4").reshape(output["shape"])


def decode_grpc_answer(raw: bytes) -> np.ndarray[Any, Any]:
    answer = oip_pb2.ModelInferResponse.FromString(raw)
    for index, output in enumerate(answer.outputs):
        if output.name == "y":
            if answer.raw_output_contents:
                data = answer.raw_output_contents[index]
                return np.frombuffer(data, dtype="<f4").reshape(tuple(output.shape))
            values = output.contents.fp32_contents
            return np.asarray(values, dtype=np.float32).reshape(tuple(output.shape))
    raise h2load_error("mlserver gRPC: no output y")


# -- the servers ---------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection (http.client), reopened if the server closed it."""

    def __init__(self, port: int, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        #: The headers of the last answer (what a check of its body needs).
        self.last_headers: http.client.HTTPMessage | None = None

    def post(self, request: HttpRequest) -> tuple[int, http.client.HTTPMessage, bytes]:
        try:
            answer = self._send(request)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # Closed by the server while idle (uvicorn's keep-alive timeout, 5 s, runs
            # out during a long throughput cell): once more on a new connection.
            self._conn.close()
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout)
            answer = self._send(request)
        body = answer.read()
        self.last_headers = answer.headers
        if answer.will_close:
            self._conn.close()
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout)
        return answer.status, answer.headers, body

    def _send(self, request: HttpRequest) -> http.client.HTTPResponse:
        self._conn.request("POST", request.path, request.body, dict(request.headers))
        return self._conn.getresponse()

    def close(self) -> None:
        self._conn.close()


@dataclass
class Target:
    """One server's way of serving a case: HTTP (body checked) or gRPC raw bytes."""

    name: str
    role: str  # service, transport floor, peer
    process: ServerProcess
    http_port: int
    grpc_target: str | None = None  # for a peer's binary equivalent over gRPC
    ok_calls: Callable[[], tuple[int, int]] | None = None
    binary_over_grpc: bool = False


def _free_port() -> int:
    # MLServer takes its three ports from settings.json and logs none it bound, so they
    # are named up front; one taken in between fails its start, which stops the run.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_http_echo(start_timeout: float) -> Target:
    process = ServerProcess(
        "http-echo", "bench.http_echo", ["--port=0"], start_timeout=start_timeout
    )
    return Target("http-echo", "transport floor", process, process.port)


def start_mlserver(folder: Path, sessions: SessionSetup, start_timeout: float) -> Target:
    """MLServer 1.7 with its defaults but the ports and the gRPC message limit, serving
    actgrad's sigmoid graph."""
    function = catalog.lookup(MODEL)
    model = graphs.build_forward(function, "float32", x_rank=2)
    model_dir = folder / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.onnx").write_bytes(model.SerializeToString())
    ports = {"http_port": _free_port(), "grpc_port": _free_port(), "metrics_port": _free_port()}
    threads = sessions.options.intra_op_num_threads
    settings = {
        "host": "127.0.0.1",
        **ports,
        "model_repository_root": str(folder),
        # gRPC's 4 MiB default refuses a 1 Mi-element float32 tensor; actgrad's limit.
        "grpc_max_message_length": 64 << 20,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "bench.mlserver_runtime.OnnxRuntime",
                "parameters": {
                    "uri": "./model.onnx",
                    "extra": {"intra_op_num_threads": threads},
                },
            },
            indent=2,
        )
    )
    process = ServerProcess(
        "mlserver",
        "bench.mlserver_serve",
        [str(folder), str(ports["http_port"]), MODEL],
        start_timeout=start_timeout,
        python=str(MLSERVER_PYTHON),
        env={"PYTHONPATH": str(REPO_ROOT), "MLSERVER_METRICS_DIR": str(folder / ".metrics")},
    )
    return Target(
        "mlserver",
        "peer",
        process,
        ports["http_port"],
        grpc_target=f"127.0.0.1:{ports['grpc_port']}",
        binary_over_grpc=True,
    )


def _server_metadata(target: Target) -> dict[str, Any] | None:
    """OIP's server metadata (``GET /v2``: name, version, extensions), as it answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{target.http_port}/v2", timeout=10) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except (OSError, ValueError):
        return None


def actgrad_metrics(metrics_port: int, rpc: str, ok_code: str) -> Callable[[], tuple[int, int]]:
    """actgrad's own count of finished `rpc` calls: (with `ok_code`, with any other)."""

    def read() -> tuple[int, int]:
        # A worker process writes its finished calls every 0.1 s (metrics.CALL_FLUSH_SECONDS).
        time.sleep(0.3)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        ok = bad = 0
        for line in text.splitlines():
            if not line.startswith("actgrad_requests_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            found = dict(_LABEL.findall(labels))
            # The rpc label's end: HTTP's may carry a method or protocol prefix.
            if not found.get("rpc", "").endswith(rpc):
                continue
            if found.get("code") == ok_code:
                ok += int(float(value))
            else:
                bad += int(float(value))
        return ok, bad

    return read


# -- measuring -----------------------------------------------------------------------


@dataclass
class Cell:
    """A (case, target): the timed call, the checked sample, and the h2load load."""

    case: HttpCase
    target: Target
    call: Callable[[], bytes]  # returns the answer body as h2load counts it
    check: Callable[[bytes], None]
    load: Callable[[int], h2load.Load]  # by calls in flight
    transport: str
    request_bytes: int


def _cells(
    case: HttpCase,
    x: np.ndarray[Any, Any],
    targets: Sequence[Target],
    reference: Reference,
    connections: dict[str, HttpConnection],
    channels: dict[str, grpc.Channel],
    timeout: float,
) -> list[Cell]:
    request = oip_request(case, x)
    cells = []
    for target in targets:
        if target.binary_over_grpc and case.encoding == "binary":
            assert target.grpc_target is not None
            message = oip_grpc_request(x)
            channel = channels[target.name]
            stub = channel.unary_unary(OIP_INFER_METHOD, None, None)

            def grpc_call(stub: Any = stub, message: bytes = message) -> bytes:
                return h2load.grpc_frame(stub(message, timeout=timeout))

            def grpc_check(body: bytes, name: str = target.name) -> None:
                got = decode_grpc_answer(body[5:])
                _check(reference, f"{name} {case.name}", got)

            def grpc_load(
                in_flight: int, target: Target = target, message: bytes = message
            ) -> h2load.Load:
                assert target.grpc_target is not None
                connections_n = min(8, in_flight)
                return h2load.grpc_load(
                    target.grpc_target,
                    OIP_INFER_METHOD,
                    message,
                    connections=connections_n,
                    streams=max(1, in_flight // connections_n),
                )

            cells.append(
                Cell(
                    case,
                    target,
                    grpc_call,
                    grpc_check,
                    grpc_load,
                    "gRPC ModelInfer, raw_input_contents (no REST binary extension)",
                    len(message),
                )
            )
            continue
        conn = connections[target.name]

        def http_call(conn: HttpConnection = conn, name: str = target.name) -> bytes:
            status, _, body = conn.post(request)
            if status != 200:
                raise h2load_error(f"{name} {case.name}: HTTP {status}: {body[:300]!r}")
            return body

        if target.role == "transport floor":

            def echo_check(body: bytes, name: str = target.name) -> None:
                if body != request.body:
                    raise h2load_error(f"{name} {case.name}: the echo changed the bytes")

            check: Callable[[bytes], None] = echo_check
        else:

            def answer_check(
                body: bytes, conn: HttpConnection = conn, name: str = target.name
            ) -> None:
                # The answer just read on this connection (the call before the check).
                assert conn.last_headers is not None
                got = decode_http_answer(case, conn.last_headers, body, name)
                _check(reference, f"{name} {case.name}", got)

            check = answer_check

        def http_load(in_flight: int, target: Target = target) -> h2load.Load:
            return h2load.http_load(
                f"127.0.0.1:{target.http_port}",
                request.path,
                request.body,
                request.headers,
                in_flight=in_flight,
            )

        cells.append(
            Cell(
                case,
                target,
                http_call,
                check,
                http_load,
                "HTTP/1.1 OIP REST " + ("JSON" if case.encoding == "json" else "binary extension"),
                len(request.body),
            )
        )
    return cells


def _check(reference: Reference, where: str, got: np.ndarray[Any, Any]) -> None:
    from bench.subjects import BenchError

    try:
        reference.check(where, got, rtol=_RTOL, atol=_ATOL)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


@dataclass(frozen=True)
class PhaseConfig:
    cases: tuple[HttpCase, ...]
    repeats: int
    warmup: int
    cell_seconds: float
    min_calls: int
    max_calls: int
    concurrency: int
    throughput_repeats: int
    throughput_seconds: float
    throughput_warmup: float
    seed: int
    timeout: float
    start_timeout: float
    mlserver: bool


def run_phase(
    config: PhaseConfig,
    actgrad: ServerProcess,
    sessions: SessionSetup,
) -> dict[str, Any]:
    """Latency and throughput of every case on every server; the servers' descriptions."""
    http_port = actgrad.log_port(r"HTTP on http://\S+:(\d+)")
    metrics_port = actgrad.log_port(r"metrics on http://\S+:(\d+)/metrics")
    if http_port is None:
        raise RuntimeError("the actgrad server logged no HTTP port (--http-port)")
    actgrad_target = Target(
        "actgrad",
        "service",
        actgrad,
        http_port,
        ok_calls=(actgrad_metrics(metrics_port, HTTP_INFER_RPC, "200") if metrics_port else None),
    )
    targets: list[Target] = [actgrad_target]
    folder = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
    skipped: str | None = None
    try:
        targets.append(start_http_echo(config.start_timeout))
        if config.mlserver:
            if mlserver_available():
                targets.append(start_mlserver(folder, sessions, config.start_timeout))
            else:
                skipped = (
                    f"MLServer skipped: {MLSERVER_PYTHON} does not exist "
                    "(make bench-mlserver-venv installs it from requirements/mlserver.txt)"
                )
                _LOGGER.warning("%s", skipped.upper())
        results = _measure(config, targets, sessions)
        results["servers"] = [
            {
                "name": t.name,
                "role": t.role,
                "argv": t.process.argv[1:],
                "http_port": t.http_port,
                "server_metadata": _server_metadata(t) if t.role == "peer" else None,
            }
            for t in targets
        ]
        results["mlserver_skipped"] = skipped
        return results
    finally:
        for target in targets[1:]:
            target.process.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _measure(
    config: PhaseConfig, targets: Sequence[Target], sessions: SessionSetup
) -> dict[str, Any]:
    op = OPS["activate"]
    connections = {t.name: HttpConnection(t.http_port, config.timeout) for t in targets}
    channels = {
        t.name: grpc.insecure_channel(
            t.grpc_target,
            options=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        for t in targets
        if t.grpc_target
    }
    try:
        cells: list[Cell] = []
        for case in config.cases:
            x = make_input(case.elements, config.seed)
            reference = Reference(op, x, sessions)
            cells += _cells(case, x, targets, reference, connections, channels, config.timeout)
        # Warm-up, and every cell's first answer checked.
        calls: dict[HttpCase, int] = {}
        for case in config.cases:
            slowest = 1.0
            for cell in (c for c in cells if c.case == case):
                cell.check(cell.call())
                durations = []
                for _ in range(max(config.warmup, 2)):
                    start = time.perf_counter_ns()
                    cell.call()
                    durations.append(time.perf_counter_ns() - start)
                slowest = max(slowest, float(np.median(durations)))
            wanted = int(config.cell_seconds * 1e9 / slowest)
            calls[case] = min(max(wanted, config.min_calls), config.max_calls)
        _LOGGER.info("http: warm-up done, every answer checked")
        samples: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
        for round_index in range(config.repeats):
            for case in config.cases:
                for cell in rotated([c for c in cells if c.case == case], round_index):
                    samples[case.name, cell.target.name].append(sample(cell.call, calls[case]))
            _LOGGER.info("http latency: round %d/%d done", round_index + 1, config.repeats)
        latency = []
        for cell in cells:
            rounds = samples[cell.case.name, cell.target.name]
            flat = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds])
            p50, p99 = np.percentile(flat, [50, 99])
            latency.append(
                {
                    "case": cell.case.name,
                    "encoding": cell.case.encoding,
                    "elements": cell.case.elements,
                    "subject": cell.target.name,
                    "role": cell.target.role,
                    "transport": cell.transport,
                    "request_bytes": cell.request_bytes,
                    "samples": int(flat.size),
                    "p50_us": to_us(p50),
                    "p99_us": to_us(p99),
                    "round_p50_us": [to_us(float(np.median(r))) for r in rounds],
                }
            )
        throughput = _throughput(config, cells)
    finally:
        for conn in connections.values():
            conn.close()
        for channel in channels.values():
            channel.close()
    return {"latency": latency, "throughput": throughput}


def _throughput(config: PhaseConfig, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for round_index in range(config.throughput_repeats):
        for case in config.cases:
            for cell in rotated([c for c in cells if c.case == case], round_index):
                load = cell.load(config.concurrency)
                process = cell.target.process

                def checked(cell: Cell = cell) -> bytes:
                    body = cell.call()
                    cell.check(body)
                    return body

                measured = h2load.measure(
                    load,
                    sample=h2load.Sample(checked),
                    warmup_s=config.throughput_warmup,
                    seconds=config.throughput_seconds,
                    server_cpu=process.cpu_seconds,
                    ok_calls=cell.target.ok_calls
                    if not cell.transport.startswith("gRPC")
                    else None,
                )
                if not measured["verified"]:
                    _LOGGER.error(
                        "http throughput %s on %s NOT VERIFIED, no figure: %s",
                        case.name,
                        cell.target.name,
                        "; ".join(measured["problems"]),
                    )
                measured["load"] = load.describe()
                rounds[case.name, cell.target.name].append(measured)
        _LOGGER.info(
            "http throughput: round %d/%d done", round_index + 1, config.throughput_repeats
        )
    rows = []
    for cell in cells:
        got = rounds[cell.case.name, cell.target.name]
        verified = all(r["verified"] for r in got)
        rows.append(
            {
                "case": cell.case.name,
                "encoding": cell.case.encoding,
                "elements": cell.case.elements,
                "subject": cell.target.name,
                "role": cell.target.role,
                "transport": cell.transport,
                "concurrency": config.concurrency,
                "load": got[0]["load"] if got else None,
                "verified": verified,
                "problems": [p for r in got for p in r["problems"]],
                "server_counted": all(r["server_counted"] for r in got),
                "calls_per_s": median([r["calls_per_s"] for r in got]) if verified else None,
                "round_calls_per_s": [
                    None if r["calls_per_s"] is None else round(r["calls_per_s"], 1) for r in got
                ],
                "server_cpu_us_per_call": (
                    median([r["server_cpu_us_per_call"] for r in got]) if verified else None
                ),
                "client_cpu_cores": median([r["client_cpu_cores"] for r in got]),
                "calls": [r["calls"] for r in got],
            }
        )
    return rows


# -- ratios and targets (issue 21, section 3) ----------------------------------------

ECHO = "http-echo"
TARGET_P50 = 1.3  # actgrad's p50 over the echo's, at most
TARGET_THROUGHPUT = 0.7  # actgrad's calls/s over the echo's, at least
TARGET_OVER_GRPC = 2.0  # actgrad's HTTP calls/s over its own gRPC's, same small call
TARGET_MLSERVER = {"json": 2.0, "binary": 5.0}  # actgrad this many times faster


def _target(
    name: str, value: float | None, threshold: float, *, at_most: bool = False
) -> dict[str, Any]:
    met = None
    if value is not None:
        met = bool(value <= threshold if at_most else value >= threshold)
    return {
        "target": name,
        "value": None if value is None else round(float(value), 3),
        "threshold": threshold,
        "at_most": at_most,
        "met": met,
    }


def ratios(http: dict[str, Any], grpc_throughput: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every HTTP subject over the HTTP echo, actgrad over MLServer, and the targets."""
    latency = {(r["case"], r["subject"]): r for r in http.get("latency", [])}
    throughput = {(r["case"], r["subject"]): r for r in http.get("throughput", [])}
    cases = list(dict.fromkeys(r["case"] for r in http.get("latency", [])))
    subjects = list(dict.fromkeys(r["subject"] for r in http.get("latency", [])))
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(float(a) / float(b), 3) if a and b else None

    for case in cases:
        echo_l, echo_t = latency.get((case, ECHO)), throughput.get((case, ECHO))
        for subject in subjects:
            if subject == ECHO or (case, subject) not in latency:
                continue
            lat, thr = latency[case, subject], throughput.get((case, subject))
            if echo_l is not None and lat["transport"] != echo_l["transport"]:
                continue  # MLServer's binary rows go over gRPC: no HTTP echo of that
            rows.append(
                {
                    "case": case,
                    "subject": subject,
                    "floor": ECHO,
                    "p50_ratio": ratio(lat["p50_us"], echo_l and echo_l["p50_us"]),
                    "p99_ratio": ratio(lat["p99_us"], echo_l and echo_l["p99_us"]),
                    "calls_per_s_ratio": ratio(
                        thr and thr["calls_per_s"], echo_t and echo_t["calls_per_s"]
                    ),
                    "server_cpu_ratio": ratio(
                        thr and thr["server_cpu_us_per_call"],
                        echo_t and echo_t["server_cpu_us_per_call"],
                    ),
                    "same_transport_as_floor": lat["transport"] == (echo_l or {}).get("transport"),
                }
            )
        ours = {r["subject"]: r for r in rows if r["case"] == case}.get("actgrad")
        if ours is not None:
            targets.append(
                _target(f"{case}: p50 over the echo", ours["p50_ratio"], TARGET_P50, at_most=True)
            )
            targets.append(
                _target(
                    f"{case}: calls/s at {http_concurrency(http)} in flight over the echo",
                    ours["calls_per_s_ratio"],
                    TARGET_THROUGHPUT,
                )
            )
        peer_l, peer_t = latency.get((case, "mlserver")), throughput.get((case, "mlserver"))
        mine_l, mine_t = latency.get((case, "actgrad")), throughput.get((case, "actgrad"))
        if peer_l and mine_l:
            encoding = mine_l["encoding"]
            speedup = ratio(peer_l["p50_us"], mine_l["p50_us"])
            faster = ratio(mine_t and mine_t["calls_per_s"], peer_t and peer_t["calls_per_s"])
            rows.append(
                {
                    "case": case,
                    "subject": "actgrad",
                    "floor": "mlserver",
                    "p50_speedup": speedup,
                    "calls_per_s_ratio": faster,
                    "server_cpu_ratio": ratio(
                        mine_t and mine_t["server_cpu_us_per_call"],
                        peer_t and peer_t["server_cpu_us_per_call"],
                    ),
                    "same_transport_as_floor": mine_l["transport"] == peer_l["transport"],
                }
            )
            if case in (HttpCase("json", 1 << 16).name, *binary_names(cases)):
                threshold = TARGET_MLSERVER[encoding]
                targets.append(
                    _target(f"{case}: MLServer's p50 over actgrad's", speedup, threshold)
                )
                targets.append(
                    _target(f"{case}: actgrad's calls/s over MLServer's", faster, threshold)
                )
    small = latency.get((HttpCase("json", 16).name, "actgrad"))
    if small is not None:
        http_small = throughput.get((small["case"], "actgrad"))
        grpc_small = next(
            (
                r
                for r in grpc_throughput
                if r["subject"] == "actgrad"
                and r["elements"] == 16
                and r["concurrency"] == http_concurrency(http)
            ),
            None,
        )
        targets.append(
            _target(
                f"json 16: HTTP calls/s over actgrad's own gRPC (Activate, 16 elements) at "
                f"{http_concurrency(http)} in flight",
                ratio(
                    http_small and http_small["calls_per_s"],
                    grpc_small and grpc_small["calls_per_s"],
                ),
                TARGET_OVER_GRPC,
            )
        )
    return {"rows": rows, "targets": targets}


def binary_names(cases: Sequence[str]) -> list[str]:
    return [case for case in cases if case.startswith("binary ")]


def http_concurrency(http: dict[str, Any]) -> int:
    rows = http.get("throughput") or [{}]
    return int(rows[0].get("concurrency") or 64)
