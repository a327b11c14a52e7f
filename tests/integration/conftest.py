"""A real actgrad server on port 0 and both SDK clients against it.

`client` is parametrized over the sync Client and the AsyncClient; the async one
is driven through a small adapter running its own event loop, so that every
integration test runs through both clients with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _common import TEST_SETTINGS, AsyncAdapter

from actgrad import Client
from actgrad_server.app import ActgradServer


@pytest.fixture(scope="session")
def server() -> Iterator[ActgradServer]:
    srv = ActgradServer(TEST_SETTINGS)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0).wait(10)


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
