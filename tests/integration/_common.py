"""What the integration tests share: small server settings and the AsyncClient adapter.

A module of its own (not conftest.py) so that tests import it by a unique name.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from actgrad import AsyncClient
from actgrad_server.config import Settings

__all__ = ["TEST_SETTINGS", "AsyncAdapter"]

# Small limits so that the limit checks are cheap to reach in tests.
TEST_SETTINGS = Settings(
    host="127.0.0.1",
    port=0,
    http_port=0,
    max_elements=1 << 20,
    max_rank=8,
    max_message_bytes=16 << 20,
    device="cpu",
    grace=2.0,
)


class AsyncAdapter:
    """Runs an AsyncClient's coroutines to completion on a private loop."""

    def __init__(self, target: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._open(target, options))

    @staticmethod
    async def _open(target: str, options: dict[str, Any]) -> AsyncClient:
        return AsyncClient(target, **options)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
