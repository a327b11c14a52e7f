"""The things the harness measures, each behind one small interface.

A subject prepares, for an operation and an input array, a zero-argument call the
harness times (and a check of its answer), and for throughput the unary call that
h2load sends (`grpc_load`).
Three exist: ``actgrad`` (the SDK against ``actgrad serve`` in its own process),
``echo`` (the transport floor: a bare grpcio echo of the same request bytes in its
own process) and ``onnxruntime`` (the compute floor, in-process). Tensors larger
than the SDK's stream threshold travel as a stream of chunk requests, and the echo
then streams exactly those chunk requests back.

A serving variant (worker processes, shared memory, other engine settings) is one
more `ActgradSubject` with its own server flags and client options: registered in
`SUBJECTS`, or given on the command line as ``--variant NAME:BASE:TOKENS`` (see
`parse_variant`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from actgrad import Client
from actgrad.v1 import activation_pb2
from actgrad.wire.tensors import decode as decode_tensor
from actgrad_server.config import Settings
from bench import h2load
from bench._proc import ServerProcess
from bench.echo_server import ECHO_METHOD, ECHO_STREAM_METHOD
from bench.workloads import (
    Array,
    Chunking,
    Op,
    Reference,
    SessionSetup,
    Wire,
    compute_floor,
    wire,
)

__all__ = [
    "COMPUTE_FLOOR",
    "DEFAULT_SUBJECTS",
    "SERVICE",
    "SUBJECTS",
    "THROUGHPUT_DEFAULTS",
    "TRANSPORT_FLOOR",
    "BenchError",
    "GrpcLoad",
    "Prepared",
    "Setup",
    "Subject",
    "SubjectSpec",
    "VariantError",
    "parse_count",
    "parse_variant",
]

_LOGGER = logging.getLogger(__name__)

SERVICE = "service"
TRANSPORT_FLOOR = "transport floor"
COMPUTE_FLOOR = "compute floor"

# The base subject is one server process, like the echo it is compared with; a
# several-process server (`actgrad serve --workers N`, once the flag exists) is the
# `actgrad-workers` subject. Flags given later (a variant's) override this one.
_SINGLE_PROCESS = (
    ("--workers=1",) if "workers" in {f.name for f in dataclasses.fields(Settings)} else ()
)

# Same-graph results may differ only by how onnxruntime splits work across threads.
_RTOL, _ATOL = 1e-5, 1e-6


class BenchError(RuntimeError):
    """A subject gave a wrong answer or could not run: no numbers are reported for it."""


@dataclass(frozen=True)
class Setup:
    """What every subject is built with: one set of server options for all."""

    device: str
    max_message_bytes: int
    stream_threshold_bytes: int  # the SDK's, for actgrad's client and the echo alike
    chunk_bytes: int
    threads: int
    max_concurrent_rpcs: int
    intra_op_threads: int
    actgrad_flags: tuple[str, ...]  # extra `actgrad serve` flags, e.g. --no-access-log
    timeout: float
    start_timeout: float
    sessions: SessionSetup

    def chunking(self, overrides: Mapping[str, Any] | None = None) -> Chunking:
        """The SDK's chunking options, with a variant's client options on top."""
        values: dict[str, Any] = {
            "max_message_bytes": self.max_message_bytes,
            "stream_threshold_bytes": self.stream_threshold_bytes,
            "chunk_bytes": self.chunk_bytes,
        }
        values.update({k: v for k, v in (overrides or {}).items() if k in values})
        return Chunking(**values)


@dataclass(frozen=True)
class Prepared:
    call: Callable[[], object]
    check: Callable[[object], None]  # raises BenchError on a wrong answer


# The RPC of each operation, and the answer's message and tensor field.
_METHODS = {
    "activate": (
        "/actgrad.v1.ActivationService/Activate",
        activation_pb2.ActivateResponse,
        "output",
    ),
    "gradient": (
        "/actgrad.v1.ActivationService/Gradient",
        activation_pb2.GradientResponse,
        "grad_input",
    ),
    "softmax": ("/actgrad.v1.ActivationService/Softmax", activation_pb2.SoftmaxResponse, "output"),
}


@dataclass(frozen=True)
class GrpcLoad:
    """One unary call as h2load sends it (`bench.h2load`): the server's address, the
    method's path, the serialized request, a checked call by a real client (`sample`:
    its answer framed as gRPC sends it) and, where the server counts its calls by
    status, that count (`ok_calls`: finished OK, finished otherwise)."""

    target: str
    method: str
    message: bytes
    sample: Callable[[], bytes]
    ok_calls: Callable[[], tuple[int, int]] | None = None


class Subject(abc.ABC):
    """One measured thing. `process` is its server, where it has one."""

    name: str
    role: str
    process: ServerProcess | None = None
    supports_throughput = True

    @abc.abstractmethod
    def prepare(self, op: Op, x: Array, reference: Reference) -> Prepared:
        """A timed call of `op` on `x`; its check compares with `reference`."""

    def transport(self, op: Op, x: Array) -> Wire | None:
        """How the call travels (None: in-process)."""
        return None

    def grpc_load(self, op: Op, x: Array, reference: Reference) -> GrpcLoad:
        """`op` on `x` as one unary call for h2load (the throughput phase)."""
        raise NotImplementedError(f"{self.name} has no throughput mode")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "role": self.role}
        if self.process is not None:
            info["argv"] = self.process.argv[1:]
        return info

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()


def _message_options(setup: Setup) -> list[tuple[str, int]]:
    # The two options the SDK sets on its channel (actgrad._client._BaseClient).
    return [
        ("grpc.max_send_message_length", setup.max_message_bytes),
        ("grpc.max_receive_message_length", setup.max_message_bytes),
    ]


def _check_array(name: str, reference: Reference) -> Callable[[object], None]:
    def check(result: object) -> None:
        try:
            reference.check(name, result, rtol=_RTOL, atol=_ATOL)
        except ValueError as exc:
            raise BenchError(str(exc)) from None

    return check


class ActgradSubject(Subject):
    """The SDK's `Client` against ``actgrad serve`` in a child process."""

    role = SERVICE

    def __init__(
        self,
        setup: Setup,
        *,
        name: str = "actgrad",
        server_flags: Sequence[str] = (),
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._setup = setup
        self._client_options = dict(client_options or {})
        self._chunking = setup.chunking(self._client_options)
        self._wires: dict[tuple[str, tuple[int, ...]], Wire] = {}
        args = [
            "serve",
            "--host=127.0.0.1",
            "--port=0",
            "--http-port=0",
            # actgrad's own count of calls by status: the throughput cells' check.
            "--metrics-port=0",
            f"--device={setup.device}",
            f"--max-message-bytes={setup.max_message_bytes}",
            f"--threads={setup.threads}",
            f"--max-concurrent-rpcs={setup.max_concurrent_rpcs}",
            f"--intra-op-threads={setup.intra_op_threads}",
            "--grace=1",
            *_SINGLE_PROCESS,
            *setup.actgrad_flags,
            *server_flags,
        ]
        self.process = ServerProcess(name, "actgrad", args, start_timeout=setup.start_timeout)
        self._client = Client(self.process.target, **self._client_kwargs())
        # The SDK's shared memory carries no tensor bytes in the request: h2load
        # would send a request naming a region it never made.
        self.supports_throughput = not self._client_options.get("shared_memory")
        self._raw: grpc.Channel | None = None

    def grpc_load(self, op: Op, x: Array, reference: Reference) -> GrpcLoad:
        from bench.http_phase import actgrad_metrics

        assert self.process is not None
        sent = wire(op, x, self._chunking, serialize=True)
        if sent.streamed:
            raise BenchError(f"{self.name}: throughput takes a unary call, not a stream")
        method, response, field = _METHODS[op.name]
        if self._raw is None:
            self._raw = grpc.insecure_channel(
                self.process.target, options=_message_options(self._setup)
            )
        call = self._raw.unary_unary(method, None, None)
        message, timeout, check = sent.messages[0], self._setup.timeout, self._check(reference)

        def sample() -> bytes:
            answer: bytes = call(message, timeout=timeout)
            check(decode_tensor(getattr(response.FromString(answer), field), field=field))
            return h2load.grpc_frame(answer)

        metrics = self.process.log_port(r"metrics on http://\S+:(\d+)/metrics")
        if metrics is None:
            _LOGGER.warning(
                "%s logged no metrics port: its throughput is checked without its own "
                "count of OK calls (the answers' bytes still are)",
                self.name,
            )
        return GrpcLoad(
            self.process.target,
            method,
            message,
            sample,
            None if metrics is None else actgrad_metrics(metrics, method.lstrip("/"), "OK"),
        )

    def _check(self, reference: Reference) -> Callable[[object], None]:
        return _check_array(self.name, reference)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self._setup.timeout,
            **self._chunking.client_options(),
            **self._client_options,
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "client_options": self._client_kwargs()}

    def transport(self, op: Op, x: Array) -> Wire:
        # Sizes only: the SDK builds its own requests when called.
        key = (op.name, x.shape)
        if key not in self._wires:
            self._wires[key] = wire(op, x, self._chunking)
        return self._wires[key]

    def prepare(self, op: Op, x: Array, reference: Reference) -> Prepared:
        return Prepared(op.sdk_call(self._client, x), _check_array(self.name, reference))

    def close(self) -> None:
        self._client.close()
        if self._raw is not None:
            self._raw.close()
        super().close()


class EchoSubject(Subject):
    """The transport floor: the request bytes `Client` would send, echoed back.

    A tensor the SDK sends in one request is one unary echo of that request; one
    it streams is one streaming echo of the same chunk requests (serialized once,
    up front), each answered as it arrives, in the same number of messages.
    """

    role = TRANSPORT_FLOOR
    # The SDK options that shape the bytes; an echo variant may set these only.
    CLIENT_OPTIONS = frozenset({"stream_threshold_bytes", "chunk_bytes"})

    def __init__(
        self,
        setup: Setup,
        *,
        name: str = "echo",
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = set(client_options or {}) - self.CLIENT_OPTIONS
        if unknown:
            raise VariantError(
                f"{name}: the echo takes only {', '.join(sorted(self.CLIENT_OPTIONS))}, "
                f"not {', '.join(sorted(unknown))}"
            )
        self.name = name
        self._setup = setup
        self._chunking = setup.chunking(client_options)
        args = [
            "--host=127.0.0.1",
            "--port=0",
            f"--threads={setup.threads}",
            f"--max-message-bytes={setup.max_message_bytes}",
            f"--max-concurrent-rpcs={setup.max_concurrent_rpcs}",
        ]
        self.process = ServerProcess(
            name, "bench.echo_server", args, start_timeout=setup.start_timeout
        )
        # The two options the SDK sets on its channel (actgrad._client._BaseClient).
        self._options = [
            ("grpc.max_send_message_length", setup.max_message_bytes),
            ("grpc.max_receive_message_length", setup.max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(self.process.target, options=self._options)
        # No serializers: bytes go out and come back as they are.
        self._echo = self._channel.unary_unary(ECHO_METHOD, None, None)
        self._echo_stream = self._channel.stream_stream(ECHO_STREAM_METHOD, None, None)
        self._wires: dict[tuple[str, tuple[int, ...]], Wire] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "client_options": self._chunking.client_options()}

    def transport(self, op: Op, x: Array) -> Wire:
        key = (op.name, x.shape)
        if key not in self._wires:
            self._wires[key] = wire(op, x, self._chunking, serialize=True)
        return self._wires[key]

    def prepare(self, op: Op, x: Array, reference: Reference) -> Prepared:
        sent = self.transport(op, x)
        messages = sent.messages
        timeout = self._setup.timeout

        def check(result: object) -> None:
            got = list(result) if isinstance(result, list) else [result]
            if got != list(messages):
                raise BenchError(f"{self.name} {op.label}: the echo changed the bytes")

        if not sent.streamed:
            payload = messages[0]
            return Prepared(lambda: self._echo(payload, timeout=timeout), check)
        stream = self._echo_stream

        def call() -> list[bytes]:
            # Every answer is read, as the SDK reads every chunk's response.
            return list(stream(iter(messages), timeout=timeout))

        return Prepared(call, check)

    def grpc_load(self, op: Op, x: Array, reference: Reference) -> GrpcLoad:
        assert self.process is not None
        sent = self.transport(op, x)
        if sent.streamed:
            raise BenchError(f"{self.name}: throughput takes a unary call, not a stream")
        message, timeout = sent.messages[0], self._setup.timeout

        def sample() -> bytes:
            answer: bytes = self._echo(message, timeout=timeout)
            if answer != message:
                raise BenchError(f"{self.name} {op.label}: the echo changed the bytes")
            return h2load.grpc_frame(answer)

        return GrpcLoad(self.process.target, ECHO_METHOD, message, sample)

    def close(self) -> None:
        self._channel.close()
        super().close()


class OnnxruntimeSubject(Subject):
    """The compute floor: the server's graph on onnxruntime, in this process."""

    role = COMPUTE_FLOOR
    supports_throughput = False

    def __init__(self, setup: Setup, *, name: str = "onnxruntime") -> None:
        self.name = name
        self._sessions = setup.sessions

    def prepare(self, op: Op, x: Array, reference: Reference) -> Prepared:
        return Prepared(compute_floor(op, x, self._sessions), _check_array(self.name, reference))

    def describe(self) -> dict[str, Any]:
        options = self._sessions.options
        return {
            **super().describe(),
            "providers": self._sessions.providers,
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "graph_optimization_level": str(options.graph_optimization_level),
        }


@dataclass(frozen=True)
class SubjectSpec:
    """A registered subject: its role (known before starting it) and how to start it."""

    role: str
    start: Callable[[Setup], Subject]


# A serving variant is one more entry: its own server flags and client options, e.g.
# ``functools.partial(ActgradSubject, name="actgrad-4w", server_flags=("--workers=4",))``
# (`actgrad-shm` below is one); the same from the command line:
# ``--variant 'actgrad-4w:actgrad:--workers=4'``.
SUBJECTS: Mapping[str, SubjectSpec] = {
    "actgrad": SubjectSpec(SERVICE, ActgradSubject),
    "echo": SubjectSpec(TRANSPORT_FLOOR, EchoSubject),
    "onnxruntime": SubjectSpec(COMPUTE_FLOOR, OnnxruntimeSubject),
    # What the default per-call access log costs (the server's other defaults kept).
    "actgrad-no-access-log": SubjectSpec(
        SERVICE,
        functools.partial(
            ActgradSubject, name="actgrad-no-access-log", server_flags=("--no-access-log",)
        ),
    ),
    # The same-host fast path: tensors in POSIX shared memory, not in messages.
    "actgrad-shm": SubjectSpec(
        SERVICE,
        functools.partial(
            ActgradSubject,
            name="actgrad-shm",
            server_flags=("--allow-shared-memory",),
            client_options={"shared_memory": True},
        ),
    ),
    # `actgrad serve`'s default worker count (one process per usable CPU).
    **(
        {
            "actgrad-workers": SubjectSpec(
                SERVICE,
                functools.partial(
                    ActgradSubject, name="actgrad-workers", server_flags=("--workers=0",)
                ),
            )
        }
        if _SINGLE_PROCESS
        else {}
    ),
}
DEFAULT_SUBJECTS = ("actgrad", "echo", "onnxruntime")
# Measured in the throughput phase too when no --subjects are given: the server as
# `actgrad serve` runs by default (issue 9's throughput target is stated for it).
THROUGHPUT_DEFAULTS = ("actgrad-workers",)


class VariantError(ValueError):
    """A ``--variant`` that cannot be built."""


_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def parse_count(text: str) -> int:
    """``"16"``, ``"64Ki"``, ``"16Mi"``, ``"1Gi"`` (binary multiples) -> a positive int."""
    text = text.strip()
    scale = 1
    for suffix, value in _SUFFIXES.items():
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], value
            break
    try:
        count = int(text) * scale
    except ValueError:
        raise ValueError(f"not a count: {text!r} (e.g. 16, 64Ki, 16Mi)") from None
    if count <= 0:
        raise ValueError(f"must be > 0, got {count}")
    return count


def _option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return parse_count(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_variant(text: str) -> tuple[str, SubjectSpec]:
    """``NAME:BASE:TOKENS`` -> a named subject built on `BASE` (actgrad or echo).

    TOKENS are shell words: ``--flag`` or ``--flag=value`` is an ``actgrad serve``
    flag (actgrad only), ``client.KEY=VALUE`` a client option (a count with a
    Ki/Mi/Gi suffix, true/false, a number or text). The echo takes only the
    options that shape the bytes (``chunk_bytes``, ``stream_threshold_bytes``).
    Examples::

        ce64k:actgrad:--chunk-elements=65536
        cb256k:actgrad:client.chunk_bytes=256Ki
        echo-cb256k:echo:client.chunk_bytes=256Ki
        w2:actgrad:--workers=2
    """
    name, sep, rest = text.partition(":")
    base, sep2, tokens = rest.partition(":")
    if not sep or not sep2 or not name or base not in ("actgrad", "echo"):
        raise VariantError(f"{text!r}: expected NAME:BASE:TOKENS with BASE actgrad or echo")
    if name in SUBJECTS:
        raise VariantError(f"{text!r}: {name!r} is a built-in subject")
    flags: list[str] = []
    options: dict[str, Any] = {}
    for token in shlex.split(tokens):
        if token.startswith("--"):
            flags.append(token)
        elif token.startswith("client.") and "=" in token:
            key, value = token[len("client.") :].split("=", 1)
            options[key] = _option_value(value)
        else:
            raise VariantError(f"{text!r}: {token!r} is neither --flag nor client.KEY=VALUE")
    if base == "echo":
        if flags:
            raise VariantError(f"{text!r}: the echo server takes no actgrad flags")
        unknown = set(options) - EchoSubject.CLIENT_OPTIONS
        if unknown:
            raise VariantError(f"{text!r}: the echo takes no {', '.join(sorted(unknown))}")
        start: Callable[[Setup], Subject] = functools.partial(
            EchoSubject, name=name, client_options=options
        )
        return name, SubjectSpec(TRANSPORT_FLOOR, start)
    start = functools.partial(
        ActgradSubject, name=name, server_flags=tuple(flags), client_options=options
    )
    return name, SubjectSpec(SERVICE, start)
