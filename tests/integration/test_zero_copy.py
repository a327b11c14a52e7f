"""The zero-copy paths, seen from outside, through a real server on a real port.

Large tensors (from `actgrad.wire.frames.SMALL_BYTES` on) reach the engine as views of
the bytes gRPC handed the server, and reach the caller as read-only views of the bytes
gRPC handed the SDK; small ones take protobuf's own path. Both give the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _running import make_client, running, settings

from actgrad.wire import frames
from actgrad_server.engine import Engine


class RecordingEngine(Engine):
    """Records what backs each input the engine is handed."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.inputs: list[Any] = []

    def activate(self, call: Any, x: Any, **kwargs: Any) -> Any:
        self.inputs.append(_owner(x))
        return super().activate(call, x, **kwargs)


def _owner(array: np.ndarray[Any, Any]) -> Any:
    """The object whose memory `array` views: the end of its chain of bases."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        return base.obj
    return base


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_large_tensors_are_views_on_both_ends(kind: str) -> None:
    engine = RecordingEngine()
    x = np.linspace(-4.0, 4.0, 1 << 16, dtype=np.float32).reshape(64, 1024)
    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    with running(settings(), engine=engine) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            y = client.activate(x, "sigmoid")
        finally:
            client.close()
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    # The caller's result is a read-only view of the response bytes ...
    assert not y.flags.writeable
    received = _owner(y)
    assert isinstance(received, bytes) and len(received) > y.nbytes
    # ... and the server's input a view of the request bytes (not a copy of them).
    served = engine.inputs[-1]
    assert isinstance(served, bytes) and len(served) > x.nbytes


def test_small_tensors_take_protobufs_path_with_the_same_result() -> None:
    engine = RecordingEngine()
    small = np.linspace(-4.0, 4.0, 64, dtype=np.float32)
    assert small.nbytes < frames.SMALL_BYTES
    with running(settings(), engine=engine) as server:
        client = make_client("sync", f"127.0.0.1:{server.port}")
        try:
            y = client.activate(small, "sigmoid")
        finally:
            client.close()
    np.testing.assert_allclose(y, 1.0 / (1.0 + np.exp(-small.astype(np.float64))), rtol=1e-6)
    assert not y.flags.writeable
    # protobuf's `data` is a bytes object of exactly the tensor's size.
    served = engine.inputs[-1]
    assert isinstance(served, bytes) and len(served) == small.nbytes
