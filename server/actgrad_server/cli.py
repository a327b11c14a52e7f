"""`actgrad serve`: flags -> Settings -> server. The SDK's CLI delegates here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from actgrad_server import app, config
from actgrad_server.errors import ConfigError
from actgrad_server.logs import configure_logging

__all__ = ["serve_main"]

_LOGGER = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actgrad serve",
        description="Serve actgrad.v1 over gRPC. Every flag falls back to ACTGRAD_<NAME>.",
    )
    config.add_arguments(parser)
    return parser


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
        return app.serve(settings)
    except ConfigError as exc:
        _LOGGER.error("%s", exc)
        print(f"actgrad serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(serve_main())
