"""The things the harness measures, each behind one small interface.

A subject prepares, for an operation and an input array, a zero-argument call the
harness times (and a check of its answer), and for throughput an awaitable call.
Three exist: ``actgrad`` (the SDK against ``actgrad serve`` in its own process),
``echo`` (the transport floor: a bare grpcio echo of the same request bytes in its
own process) and ``onnxruntime`` (the compute floor, in-process). A serving variant
(streaming, worker processes, shared memory) is one more `ActgradSubject` with its
own server flags and client options, registered in `SUBJECTS`.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import numpy as np

from actgrad import AsyncClient, Client
from bench._proc import ServerProcess
from bench.echo_server import ECHO_METHOD
from bench.workloads import Array, Op, SessionSetup, compute_floor, request_bytes

__all__ = [
    "COMPUTE_FLOOR",
    "DEFAULT_SUBJECTS",
    "SERVICE",
    "SUBJECTS",
    "TRANSPORT_FLOOR",
    "BenchError",
    "Prepared",
    "Setup",
    "Subject",
    "SubjectSpec",
]

SERVICE = "service"
TRANSPORT_FLOOR = "transport floor"
COMPUTE_FLOOR = "compute floor"

# Same-graph results may differ only by how onnxruntime splits work across threads.
_RTOL, _ATOL = 1e-5, 1e-6


class BenchError(RuntimeError):
    """A subject gave a wrong answer or could not run: no numbers are reported for it."""


@dataclass(frozen=True)
class Setup:
    """What every subject is built with: one set of server options for all."""

    device: str
    max_message_bytes: int
    threads: int
    max_concurrent_rpcs: int
    intra_op_threads: int
    actgrad_flags: tuple[str, ...]  # extra `actgrad serve` flags, e.g. --no-access-log
    timeout: float
    start_timeout: float
    sessions: SessionSetup


@dataclass(frozen=True)
class Prepared:
    call: Callable[[], object]
    check: Callable[[object], None]  # raises BenchError on a wrong answer


AsyncCall = Callable[[], Awaitable[object]]


class Subject(abc.ABC):
    """One measured thing. `process` is its server, where it has one."""

    name: str
    role: str
    process: ServerProcess | None = None
    supports_throughput = True

    @abc.abstractmethod
    def prepare(self, op: Op, x: Array, reference: Array) -> Prepared:
        """A timed call of `op` on `x`; its check compares with `reference`."""

    def async_calls(self, op: Op, x: Array) -> contextlib.AbstractAsyncContextManager[AsyncCall]:
        """An async context giving an awaitable call of `op` on `x` (for throughput)."""
        raise NotImplementedError(f"{self.name} has no throughput mode")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "role": self.role}
        if self.process is not None:
            info["argv"] = self.process.argv[1:]
        return info

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()


def _check_array(name: str, op: Op, reference: Array) -> Callable[[object], None]:
    def check(result: object) -> None:
        got = np.asarray(result)
        if got.shape != reference.shape or got.dtype != reference.dtype:
            raise BenchError(
                f"{name} {op.label}: got {got.dtype}{list(got.shape)}, "
                f"expected {reference.dtype}{list(reference.shape)}"
            )
        if not np.allclose(got, reference, rtol=_RTOL, atol=_ATOL):
            worst = float(np.max(np.abs(got.astype(np.float64) - reference)))
            raise BenchError(f"{name} {op.label}: differs from onnxruntime by up to {worst:g}")

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
        args = [
            "serve",
            "--host=127.0.0.1",
            "--port=0",
            f"--device={setup.device}",
            f"--max-message-bytes={setup.max_message_bytes}",
            f"--threads={setup.threads}",
            f"--max-concurrent-rpcs={setup.max_concurrent_rpcs}",
            f"--intra-op-threads={setup.intra_op_threads}",
            "--grace=1",
            *setup.actgrad_flags,
            *server_flags,
        ]
        self.process = ServerProcess(name, "actgrad", args, start_timeout=setup.start_timeout)
        self._client = Client(self.process.target, **self._client_kwargs())

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": self._setup.timeout,
            "max_message_bytes": self._setup.max_message_bytes,
            **self._client_options,
        }

    def prepare(self, op: Op, x: Array, reference: Array) -> Prepared:
        return Prepared(op.sdk_call(self._client, x), _check_array(self.name, op, reference))

    @contextlib.asynccontextmanager
    async def _async_calls(self, op: Op, x: Array) -> AsyncIterator[AsyncCall]:
        assert self.process is not None
        async with AsyncClient(self.process.target, **self._client_kwargs()) as client:
            yield lambda: op.async_sdk_call(client, x)

    def async_calls(self, op: Op, x: Array) -> contextlib.AbstractAsyncContextManager[AsyncCall]:
        return self._async_calls(op, x)

    def close(self) -> None:
        self._client.close()
        super().close()


class EchoSubject(Subject):
    """The transport floor: the request bytes `Client` would send, echoed back."""

    role = TRANSPORT_FLOOR

    def __init__(self, setup: Setup, *, name: str = "echo") -> None:
        self.name = name
        self._setup = setup
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
        self._payloads: dict[tuple[str, int], bytes] = {}

    def _payload(self, op: Op, x: Array) -> bytes:
        key = (op.name, x.size)
        if key not in self._payloads:
            self._payloads[key] = request_bytes(op, x)
        return self._payloads[key]

    def prepare(self, op: Op, x: Array, reference: Array) -> Prepared:
        payload = self._payload(op, x)
        timeout = self._setup.timeout

        def check(result: object) -> None:
            if result != payload:
                raise BenchError(f"{self.name} {op.label}: the echo changed the bytes")

        return Prepared(lambda: self._echo(payload, timeout=timeout), check)

    @contextlib.asynccontextmanager
    async def _async_calls(self, op: Op, x: Array) -> AsyncIterator[AsyncCall]:
        assert self.process is not None
        payload = self._payload(op, x)
        timeout = self._setup.timeout
        async with grpc.aio.insecure_channel(self.process.target, options=self._options) as ch:
            echo = ch.unary_unary(ECHO_METHOD, None, None)

            async def call() -> object:
                return await echo(payload, timeout=timeout)

            yield call

    def async_calls(self, op: Op, x: Array) -> contextlib.AbstractAsyncContextManager[AsyncCall]:
        return self._async_calls(op, x)

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

    def prepare(self, op: Op, x: Array, reference: Array) -> Prepared:
        return Prepared(
            compute_floor(op, x, self._sessions), _check_array(self.name, op, reference)
        )

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
# ``functools.partial(ActgradSubject, name="actgrad-4w", server_flags=("--workers=4",))``.
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
}
DEFAULT_SUBJECTS = ("actgrad", "echo", "onnxruntime")
