"""The server's commands: `actgrad serve` and `actgrad export-triton`.

The SDK's `actgrad` command delegates both here. `serve` reads flags into one
`Settings` and runs one server in this process (``--workers 1``) or the
supervisor of `actgrad_server.workers`; `export-triton` writes a Triton model
repository with `actgrad_server.triton_export`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actgrad.wire import parse_param_value
from actgrad_server import catalog, config, workers
from actgrad_server._malloc import retain_large_buffers
from actgrad_server.app import ActgradServer, install_drain_signals
from actgrad_server.config import Settings
from actgrad_server.errors import ActgradServerError, ConfigError
from actgrad_server.logs import configure_logging
from actgrad_server.triton_export import EXPORT_DTYPES, export, shape_flag

__all__ = ["export_main", "serve", "serve_main"]

_LOGGER = logging.getLogger(__name__)


# -- serve ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actgrad serve",
        description="Serve actgrad.v1 over gRPC. Every flag falls back to ACTGRAD_<NAME>.",
    )
    config.add_arguments(parser)
    return parser


def serve(settings: Settings) -> int:
    """Runs until SIGTERM or SIGINT, then drains within the grace period; returns the
    exit status.

    A second signal during the drain cancels the calls still running. With more
    than one worker (`Settings.workers`; 0 = one per usable CPU) a supervisor runs
    the workers as processes on the same port (`actgrad_server.workers`).
    """
    count = workers.worker_count(settings)
    if count > 1:
        return workers.supervise(settings, count)
    retain_large_buffers()
    server = ActgradServer(settings)
    install_drain_signals(server)
    server.start()
    server.wait()
    server.linger()
    _LOGGER.info("stopped")
    return 0


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `actgrad serve`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = config.from_args(args)
    except ConfigError as exc:
        print(f"actgrad serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return serve(settings)
    except ConfigError as exc:
        _LOGGER.error("%s", exc)
        print(f"actgrad serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Start-up failures of this host (a port in use, a missing file): one line.
        _LOGGER.error("cannot start: %s", exc)
        print(f"actgrad serve: cannot start: {exc}", file=sys.stderr)
        return 1


# -- export-triton ----------------------------------------------------------------


def _param(text: str) -> tuple[str, str, Any]:
    key, sep, value = text.partition("=")
    function, dot, name = key.strip().partition(".")
    if not sep or not dot or not function or not name:
        raise argparse.ArgumentTypeError(f"expected FUNCTION.NAME=VALUE, got {text!r}")
    try:
        return function, name, parse_param_value(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tensor_params() -> list[tuple[catalog.Function, catalog.Param]]:
    return [
        (function, param)
        for function in catalog.CATALOG
        for param in function.params
        if param.kind is catalog.ParamKind.TENSOR
    ]


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actgrad export-triton",
        description=(
            "Write the served graphs as a Triton model repository: <model>/1/model.onnx and "
            "<model>/config.pbtxt for the onnxruntime backend, for every function and its "
            "gradient (<name>_grad). Parameters are baked in as constants."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="repository to write")
    parser.add_argument(
        "--functions", nargs="+", metavar="NAME", help="functions to export (default: all)"
    )
    parser.add_argument(
        "--dtype",
        choices=list(EXPORT_DTYPES),
        default="float32",
        help="model dtype (default: float32)",
    )
    parser.add_argument(
        "--rank", type=int, default=2, help="rank of x, every dim variable (default: 2)"
    )
    # One flag per tensor parameter of the catalog (--prelu-slope-shape).
    for function, param in _tensor_params():
        parser.add_argument(
            shape_flag(function, param),
            dest=f"shape__{function.name}__{param.name}",
            nargs="+",
            type=int,
            default=None,
            metavar="DIM",
            help=(
                f"{function.name}'s {param.name} shape, broadcast to x from the right "
                f"(default: {' '.join(map(str, param.sample_shape))})"
            ),
        )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_param,
        default=[],
        metavar="FUNCTION.NAME=VALUE",
        help="bake this parameter value instead of the default (e.g. leaky_relu.alpha=0.2)",
    )
    return parser


def _tensor_shapes(args: argparse.Namespace) -> dict[str, dict[str, list[int]]]:
    shapes: dict[str, dict[str, list[int]]] = {}
    for function, param in _tensor_params():
        value = getattr(args, f"shape__{function.name}__{param.name}")
        if value is not None:
            shapes.setdefault(function.name, {})[param.name] = value
    return shapes


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `actgrad export-triton`; returns the process exit status."""
    args = build_export_parser().parse_args(argv)
    params: dict[str, dict[str, Any]] = {}
    for function, name, value in args.params:
        params.setdefault(function, {})[name] = value
    try:
        written = export(
            args.directory,
            args.functions,
            dtype=args.dtype,
            rank=args.rank,
            params=params,
            tensor_shapes=_tensor_shapes(args),
        )
    except ActgradServerError as exc:
        print(f"actgrad export-triton: {exc.message}", file=sys.stderr)
        return 2
    for name in written:
        print(args.directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(serve_main())
