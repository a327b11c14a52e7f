"""Where the HTTP routes compute (`http.runner.Runner`): small elementwise requests on
the event loop, unless a session must be built first; everything else on the pool."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from actgrad_server.catalog import bind, lookup
from actgrad_server.engine import Engine, WouldBuild, no_builds
from actgrad_server.http.runner import INLINE_BYTES, Runner


def _activate(engine: Engine, dtype: str) -> tuple[str, np.ndarray]:
    x = np.linspace(-1.0, 1.0, 4, dtype=dtype)
    call = bind(lookup("tanh"), {}, x_shape=x.shape, x_dtype=x.dtype)
    return threading.current_thread().name, engine.activate(call, x)


def test_a_build_is_refused_under_no_builds_and_a_hit_is_not() -> None:
    engine = Engine(device="cpu")
    with no_builds(), pytest.raises(WouldBuild):
        _activate(engine, "float64")
    assert engine.cache_info().builds == 0
    _activate(engine, "float64")  # built outside
    with no_builds():
        _, y = _activate(engine, "float64")
    np.testing.assert_allclose(y, np.tanh(np.linspace(-1.0, 1.0, 4)), rtol=1e-15)
    assert engine.cache_info().builds == 1


def test_small_requests_run_inline_once_their_session_exists() -> None:
    engine = Engine(device="cpu")
    pool = ThreadPoolExecutor(1, thread_name_prefix="routes")
    runner = Runner(pool)
    loop_thread = threading.current_thread().name

    async def main() -> list[str]:
        where = []
        # Cold: the session is built on the pool, never on the loop.
        where.append((await runner.small(100, _activate, engine, "float32"))[0])
        # Warm and small: inline.
        where.append((await runner.small(100, _activate, engine, "float32"))[0])
        # Warm but large: the pool.
        where.append((await runner.small(INLINE_BYTES + 1, _activate, engine, "float32"))[0])
        # Not elementwise: always the pool.
        where.append((await runner(_activate, engine, "float32"))[0])
        return where

    try:
        threads = asyncio.run(main())
    finally:
        pool.shutdown()
    assert threads[0].startswith("routes") and threads[1] == loop_thread
    assert threads[2].startswith("routes") and threads[3].startswith("routes")
    assert engine.cache_info().builds == 1
