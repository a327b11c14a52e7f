"""actgrad's own calls over HTTP/JSON under /v1/ (work in progress: the interface first).

`routes(ops)` returns the Starlette routes to mount; `OPENAPI_PATHS` is their OpenAPI 3.1
`paths` object.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from actgrad_server.ops import Operations

__all__ = ["OPENAPI_PATHS", "routes"]

OPENAPI_PATHS: dict[str, Any] = {}


def routes(ops: Operations) -> list[BaseRoute]:
    """The /v1/ routes of actgrad's own calls, answered by `ops`."""
    return []
