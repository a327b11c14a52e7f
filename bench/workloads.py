"""What is measured: the three operations, their request bytes and their compute floor.

Every subject runs the same operation on the same float32 array. The request bytes
the transport floor echoes are built by the SDK's own request builder, so they are
the bytes `Client` puts on the wire; the compute floor builds the graph the server
builds (same catalog binding, same builder, same session options) and runs it
in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from actgrad import Client
from actgrad._client import AsyncClient, _BaseClient
from actgrad_server import catalog, graphs
from actgrad_server.engine import Engine

__all__ = ["OPS", "Array", "Op", "compute_floor", "make_input", "request_bytes", "session_setup"]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Op:
    """One RPC as the benchmark calls it."""

    name: str  # short key used in flags and results: activate, gradient, softmax
    label: str  # how reports name it
    function: str  # catalog name
    params: Mapping[str, Any] = field(default_factory=dict)  # what the SDK sends

    def sdk_call(self, client: Client, x: Array) -> Callable[[], Array]:
        if self.name == "activate":
            return lambda: client.activate(x, self.function, **self.params)
        if self.name == "gradient":
            return lambda: client.gradient(x, self.function, **self.params)
        return lambda: client.softmax(x, **self.params)

    async def async_sdk_call(self, client: AsyncClient, x: Array) -> Array:
        if self.name == "activate":
            return await client.activate(x, self.function, **self.params)
        if self.name == "gradient":
            return await client.gradient(x, self.function, **self.params)
        return await client.softmax(x, **self.params)


# Gradient sends no grad_output (the server uses ones), so that all three requests
# carry one tensor of the same size and share one transport floor per size.
OPS: Mapping[str, Op] = {
    op.name: op
    for op in (
        Op("activate", "Activate(sigmoid)", "sigmoid"),
        Op("gradient", "Gradient(gelu)", "gelu"),
        Op("softmax", "Softmax", "softmax", {"axis": -1, "temperature": 1.0, "log": False}),
    )
}


def make_input(elements: int, seed: int) -> Array:
    """A float32 vector spanning the functions' interesting range (a few units)."""
    rng = np.random.default_rng(seed)
    return (3.0 * rng.standard_normal(elements)).astype(np.float32)


def request_bytes(op: Op, x: Array) -> bytes:
    """The serialized request `Client` sends for `op` on `x`."""
    # The SDK's private builder, on purpose: the echo must carry exactly these bytes.
    builder = _BaseClient(
        "127.0.0.1:1",
        timeout=1.0,
        max_message_bytes=1 << 62,
        options=None,
        stream_threshold_bytes=1 << 62,
    )
    if op.name == "activate":
        rpc: Any = builder._activate_rpc(x, op.function, dict(op.params))
    elif op.name == "gradient":
        rpc = builder._gradient_rpc(
            x, op.function, dict(op.params), grad_output=None, return_output=False
        )
    else:
        rpc = builder._softmax_rpc(x, **op.params)
    return bytes(rpc.request.SerializeToString())


@dataclass(frozen=True)
class SessionSetup:
    options: ort.SessionOptions
    providers: list[str]


def session_setup(*, device: str, intra_op_threads: int) -> SessionSetup:
    """The session options and providers an `actgrad serve` with these flags uses."""
    engine = Engine(device=device, intra_op_threads=intra_op_threads, cache_size=1)
    # The engine's own options object, read rather than copied, so that the floor
    # follows any change to the engine's settings.
    return SessionSetup(engine._options, engine.providers)


def compute_floor(op: Op, x: Array, setup: SessionSetup) -> Callable[[], Array]:
    """A zero-argument call running `op`'s graph on `x` in this process.

    Binding, graph building and feeds follow actgrad_server.engine; what is left in
    the call is onnxruntime's run, as the server's engine calls it.
    """
    function = catalog.lookup(op.function)
    call = catalog.bind(function, dict(op.params), x_shape=x.shape, x_dtype=x.dtype)
    feeds: dict[str, Any] = {"x": x}
    for name in graphs.runtime_inputs(function.name):
        feeds[name] = np.asarray(call.scalars[name], dtype=np.float64)
    if op.name == "gradient":
        model = graphs.build_gradient(
            function.name, "float32", with_output=False, x_rank=x.ndim, **dict(call.static)
        )
        feeds["grad_output"] = np.ones_like(x)
        output = "grad_input"
    else:
        model = graphs.build_forward(function.name, "float32", x_rank=x.ndim, **dict(call.static))
        output = "y"
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=setup.options, providers=setup.providers
    )

    def run() -> Array:
        result: Array = session.run([output], feeds)[0]
        return result

    return run
