"""One frozen Settings object, read from `actgrad serve` flags and ACTGRAD_* variables.

Precedence: a flag given on the command line, then the environment variable
ACTGRAD_<NAME>, then the default. Every field is one flag `--<name-with-dashes>`
and one variable, so compose files need only environment variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actgrad_server.errors import ConfigError

__all__ = [
    "DEVICES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OPEN_SLOTS",
    "Limits",
    "Settings",
    "add_arguments",
    "from_args",
    "load",
]

DEVICES = ("auto", "cpu", "cuda")
LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MiB = 1 << 20
# Threads of the open services' (health's) pool of their own, so that a probe never
# waits behind the work, whose threads may all be busy.
OPEN_SLOTS = 2


def _opt(help_text: str, **extra: Any) -> Any:
    return {"help": help_text, **extra}


@dataclass(frozen=True)
class Limits:
    """The request limits every front end enforces (a part of `Settings`)."""

    max_message_bytes: int
    max_elements: int
    max_rank: int
    max_concurrent_rpcs: int


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_opt("address to bind"))
    port: int = field(default=50051, metadata=_opt("port to bind; 0 picks a free one"))
    # Triton's and KServe's HTTP port. Every worker serves it (SO_REUSEPORT), on --host.
    http_port: int = field(
        default=8000,
        metadata=_opt(
            "HTTP port (the Open Inference Protocol's REST binding, actgrad's JSON calls, "
            "/openapi.json), on --host; 0 picks a free one; -1 = off"
        ),
    )
    playground: bool = field(
        default=True,
        metadata=_opt(
            "serve the playground page at / of the HTTP port (a client of the JSON API; "
            "docs/playground.md); --no-playground to leave it out"
        ),
    )
    uds: str = field(
        default="",
        metadata=_opt(
            "also listen on this Unix-domain socket path (callers on this host use the "
            "target unix:PATH); needs --workers 1; empty = none"
        ),
    )
    device: str = field(
        default="auto",
        metadata=_opt(
            "execution provider: cpu, cuda, or auto (CUDA when available)", choices=DEVICES
        ),
    )
    max_message_bytes: int = field(
        default=64 * MiB, metadata=_opt("largest gRPC message accepted or sent, in bytes")
    )
    max_elements: int = field(default=1 << 26, metadata=_opt("largest element count of one tensor"))
    max_rank: int = field(default=32, metadata=_opt("largest rank of one tensor"))
    max_concurrent_rpcs: int = field(
        default=64,
        metadata=_opt(
            "calls in flight (all callers together) that are never refused; the server refuses "
            "calls at once with RESOURCE_EXHAUSTED when it holds this many plus one per "
            "thread (--threads and --max-streams)"
        ),
    )
    # Few, as each process is one GIL: 4 against 16 was 6-35% more small calls a
    # second and less CPU each (docs/performance.md, "Settings chosen by measurement").
    threads: int = field(default=4, metadata=_opt("server threads running calls, per process"))
    max_streams: int = field(
        default=0,
        metadata=_opt(
            "threads of the streaming calls' own pool (more wait their turn), so that "
            "streams never hold the threads of unary calls; 0 = half of --threads"
        ),
    )
    max_connection_age: float = field(
        default=0.0,
        metadata=_opt(
            "seconds after which a connection is asked to close (GOAWAY) and clients "
            "reconnect, so that calls spread again over new replicas behind a "
            "connection balancer (a Kubernetes Service); 0 = never"
        ),
    )
    max_connection_age_grace: float = field(
        default=30.0,
        metadata=_opt("seconds the calls of a connection past its age get to finish"),
    )
    # gRPC's own default is 120 s: 2,000 connections that never spoke HTTP/2 held
    # 2,012 descriptors for that long (issue 20).
    handshake_timeout: float = field(
        default=10.0,
        metadata=_opt(
            "seconds a new connection has to finish its handshake (TLS, then the client's "
            "HTTP/2 preface and settings) before the server closes it"
        ),
    )
    stream_idle_timeout: float = field(
        default=30.0,
        metadata=_opt(
            "seconds a streaming call may go without a message either way (a client that "
            "stopped reading or sending) before it is cancelled; 0 = never"
        ),
    )
    workers: int = field(
        default=0,
        metadata=_opt(
            "server processes sharing the port (SO_REUSEPORT); 0 = one per CPU this "
            "process may use; 1 = no supervisor, the server runs in this process"
        ),
    )
    session_cache_size: int = field(
        default=128, metadata=_opt("onnxruntime sessions kept warm (LRU)")
    )
    # Defaults chosen by measurement (docs/performance.md): one intra-op thread per
    # session (worker processes use the cores) and 64 Ki-element chunks.
    intra_op_threads: int = field(
        default=1, metadata=_opt("onnxruntime intra-op threads per session; 0 = its default")
    )
    chunk_elements: int = field(
        default=1 << 16,
        metadata=_opt(
            "inputs above this many elements are computed chunk by chunk, which bounds "
            "the memory of a graph's intermediates"
        ),
    )
    grace: float = field(
        default=10.0, metadata=_opt("seconds in-flight calls get to finish on SIGTERM")
    )
    log_level: str = field(default="INFO", metadata=_opt("logging level"))
    log_format: str = field(
        default="plain",
        metadata=_opt("log format: plain text, or json (one object per line)", choices=LOG_FORMATS),
    )
    # Off by default: a line per call cost about 220 us of server CPU per call
    # here, a third of a small call's cost (docs/performance.md).
    access_log: bool = field(
        default=False, metadata=_opt("log one line per call (rpc, status, duration, request id)")
    )
    tracing: bool = field(
        default=False,
        metadata=_opt(
            "an OpenTelemetry span per call and trace_id on JSON log lines (needs "
            "actgrad[otel]; the provider and exporter are the deployment's, e.g. "
            "opentelemetry-instrument)"
        ),
    )
    reflection: bool = field(
        default=True, metadata=_opt("serve grpc.reflection.v1alpha (--no-reflection to turn off)")
    )
    metrics_port: int = field(
        default=-1,
        metadata=_opt("port of the Prometheus /metrics endpoint; -1 = off, 0 = any free port"),
    )
    metrics_host: str = field(
        default="127.0.0.1", metadata=_opt("address the /metrics endpoint binds")
    )
    tls_cert: str = field(
        default="", metadata=_opt("PEM certificate chain file; with --tls-key turns on TLS")
    )
    tls_key: str = field(default="", metadata=_opt("PEM private key file of --tls-cert"))
    tls_client_ca: str = field(
        default="",
        metadata=_opt("PEM CA file; when set, clients must present a certificate it signed"),
    )
    auth_token_file: str = field(
        default="",
        metadata=_opt("file of accepted bearer tokens, one per line; when set, calls need one"),
    )
    allow_shared_memory: bool = field(
        default=False,
        metadata=_opt(
            "accept tensors and outputs in POSIX shared memory (/dev/shm regions named in "
            "the request) from clients on this host running as the server's user "
            "(off: such requests get FAILED_PRECONDITION)"
        ),
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for name in (
            "max_message_bytes",
            "max_elements",
            "max_rank",
            "max_concurrent_rpcs",
            "threads",
            "session_cache_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_streams < 0:
            raise ConfigError(f"max_streams must be >= 0 (0 = threads / 2), got {self.max_streams}")
        if self.max_connection_age < 0 or self.max_connection_age_grace < 0:
            raise ConfigError("max_connection_age and its grace must be >= 0 (0 = never)")
        if not 0 < self.handshake_timeout <= 3600:
            raise ConfigError(
                f"handshake_timeout must be in (0, 3600] seconds, got {self.handshake_timeout}"
            )
        if self.stream_idle_timeout < 0:
            raise ConfigError(
                f"stream_idle_timeout must be >= 0 (0 = never), got {self.stream_idle_timeout}"
            )
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = one per CPU), got {self.workers}")
        if self.chunk_elements < 1:
            raise ConfigError(f"chunk_elements must be >= 1, got {self.chunk_elements}")
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.grace < 0:
            raise ConfigError(f"grace must be >= 0, got {self.grace}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if not -1 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be -1 (off) or 0..65535, got {self.http_port}")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be -1 (off) or 0..65535, got {self.metrics_port}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key must be given together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")

    @property
    def stream_slots(self) -> int:
        """Threads of the streaming calls' pool (max_streams, or half the threads)."""
        return self.max_streams or max(1, self.threads // 2)

    @property
    def call_cap(self) -> int:
        """Calls grpc holds (queued or running) before it refuses one at once.

        grpcio counts a call until its thread-pool task has ended, which is after the
        caller has the answer and may have sent its next call; each thread, of any of
        the three pools (calls, streams, health), can hold one call counted that way.
        max_concurrent_rpcs plus one per thread is thus the smallest cap under which
        callers that keep max_concurrent_rpcs calls unanswered are never refused.
        """
        return self.max_concurrent_rpcs + self.threads + self.stream_slots + OPEN_SLOTS

    @property
    def limits(self) -> Limits:
        """The request limits, for the front ends."""
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_elements=self.max_elements,
            max_rank=self.max_rank,
            max_concurrent_rpcs=self.max_concurrent_rpcs,
        )

    @property
    def tls(self) -> bool:
        """True when the server listens with TLS."""
        return bool(self.tls_cert)


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
    )
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{source}: cannot read {raw!r} as {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per Settings field; unset flags fall back to the environment."""
    for f in _fields():
        flag = "--" + f.name.replace("_", "-")
        env = "ACTGRAD_" + f.name.upper()
        meta = dict(f.metadata)
        help_text = f"{meta.pop('help')} (env {env}; default {f.default!r})"
        if f.type in (bool, "bool"):
            # --reflection / --no-reflection; unset stays None and falls back to the env.
            meta["action"] = argparse.BooleanOptionalAction
        parser.add_argument(flag, dest=f.name, default=None, help=help_text, **meta)


def load(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Builds Settings from explicit overrides, then ACTGRAD_* variables, then defaults."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for f in _fields():
        env = "ACTGRAD_" + f.name.upper()
        given = overrides.get(f.name)
        if given is not None:
            values[f.name] = (
                _convert(f, given, "--" + f.name.replace("_", "-"))
                if isinstance(given, str)
                else given
            )
        elif env in environ:
            values[f.name] = _convert(f, environ[env], env)
    return Settings(**values)


def from_args(args: argparse.Namespace | Sequence[str] | None = None) -> Settings:
    """Parses flags (or a Namespace from a parser set up by add_arguments)."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="actgrad serve")
        add_arguments(parser)
        args = parser.parse_args(args)
    return load({f.name: getattr(args, f.name, None) for f in _fields()})
