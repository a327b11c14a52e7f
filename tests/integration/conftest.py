"""A real actgrad server on port 0 and both SDK clients against it.

`client` is parametrized over the sync Client and the AsyncClient; the async one
is driven through a small adapter running its own event loop, so that every
integration test runs through both clients with the same code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest

from actgrad import AsyncClient, Client
from actgrad_server.app import ActgradServer
from actgrad_server.config import Settings

# Small limits so that the limit checks are cheap to reach in tests.
TEST_SETTINGS = Settings(
    host="127.0.0.1",
    port=0,
    max_elements=1 << 20,
    max_rank=8,
    max_message_bytes=16 << 20,
    device="cpu",
    grace=2.0,
)


@pytest.fixture(scope="session")
def server() -> Iterator[ActgradServer]:
    srv = ActgradServer(TEST_SETTINGS)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0).wait(10)


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


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, server: ActgradServer) -> Iterator[Any]:
    target = f"127.0.0.1:{server.port}"
    if request.param == "sync":
        sync = Client(target, timeout=30.0)
        try:
            yield sync
        finally:
            sync.close()
    else:
        adapter = AsyncAdapter(target, timeout=30.0)
        try:
            yield adapter
        finally:
            adapter.close()
