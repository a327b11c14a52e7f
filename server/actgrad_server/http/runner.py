"""Where the HTTP routes compute: on the front end's thread pool, or, for a request
small enough, on the event loop itself.

Handing a call to a pool thread and back costs two thread switches and a GIL hand-off
each way, more than a small elementwise call computes (tens of microseconds for 16
values). A request of the elementwise kinds (OIP infer, /v1/activate, gradient,
softmax) whose body is at most `inline_bytes` is therefore decoded, computed and
encoded where it was read; anything larger, and the calls whose cost does not follow
their body (dense, the gradient-flow probe), goes to the pool so that the loop keeps
reading other requests meanwhile. A small call that needs an onnxruntime session not
built yet (a new dtype, rank or structural parameter: milliseconds to a tenth of a
second) stops before computing anything (`engine.no_builds`) and runs again on the pool,
so health, metadata and the drain's refusals never wait behind a build, only behind
small calls of sessions already built (tens of microseconds each).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from actgrad_server.engine import WouldBuild, no_builds

__all__ = ["INLINE_BYTES", "Runner"]

#: The largest body computed on the event loop (16 KiB: about a thousand numbers as
#: JSON, four thousand float32 values as binary).
INLINE_BYTES = 16 * 1024

T = TypeVar("T")


class Runner:
    """Runs a route's work on `pool`, or inline when `small` says it is cheap."""

    def __init__(self, pool: ThreadPoolExecutor, inline_bytes: int = INLINE_BYTES) -> None:
        self.pool = pool
        self.inline_bytes = inline_bytes

    async def __call__(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the pool, with the request's context (its request id)."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def small(self, size: int, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` inline when the request's body is at most `inline_bytes`
        (the caller knows it is elementwise work), else on the pool."""
        if size <= self.inline_bytes:
            try:
                with no_builds():
                    return function(*args)
            except WouldBuild:
                pass  # a session to build first: on the pool, from the start
        return await self(function, *args)
