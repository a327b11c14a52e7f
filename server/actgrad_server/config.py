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

__all__ = ["DEVICES", "Settings", "add_arguments", "from_args", "load"]

DEVICES = ("auto", "cpu", "cuda")
MiB = 1 << 20


def _opt(help_text: str, **extra: Any) -> Any:
    return {"help": help_text, **extra}


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_opt("address to bind"))
    port: int = field(default=50051, metadata=_opt("port to bind; 0 picks a free one"))
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
        metadata=_opt("calls in flight beyond this get RESOURCE_EXHAUSTED at once"),
    )
    threads: int = field(default=16, metadata=_opt("server threads running calls"))
    session_cache_size: int = field(
        default=128, metadata=_opt("onnxruntime sessions kept warm (LRU)")
    )
    intra_op_threads: int = field(
        default=0, metadata=_opt("onnxruntime intra-op threads per session; 0 = its default")
    )
    grace: float = field(
        default=10.0, metadata=_opt("seconds in-flight calls get to finish on SIGTERM")
    )
    log_level: str = field(default="INFO", metadata=_opt("logging level"))

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
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.grace < 0:
            raise ConfigError(f"grace must be >= 0, got {self.grace}")


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
