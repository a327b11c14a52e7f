"""What is measured: the three operations, their wire messages and their compute floor.

Every subject runs the same operation on the same float32 array. The messages the
transport floor echoes are built by the SDK's own request builder with the client's
own chunking settings, so they are the bytes `Client` puts on the wire: one request
for a tensor that fits one message, or the same chunk requests the SDK streams for
a larger one. The compute floor builds the graph the server builds (same catalog
binding, same builder, same session options) and runs it in-process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from actgrad import Client
from actgrad._client import _BaseClient
from actgrad._requests import DEFAULT_CHUNK_BYTES, DEFAULT_STREAM_THRESHOLD_BYTES
from actgrad._requests import StreamRpc as _StreamRpc
from actgrad._responses import function_info as _function_info
from actgrad_server import catalog, graphs
from actgrad_server.api.activation import function_infos
from actgrad_server.config import Settings
from actgrad_server.engine import Engine

__all__ = [
    "OPS",
    "ROW_ELEMENTS",
    "Array",
    "Chunking",
    "Op",
    "Reference",
    "Wire",
    "compute_floor",
    "floor_runner",
    "input_shape",
    "make_input",
    "session_setup",
    "wire",
]

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


# Inputs are rows of this many elements (fewer for smaller sizes): softmax normalises
# each row, and the SDK can stream a softmax input only by splitting along an axis
# other than the softmax axis, which a 1-D vector does not have.
ROW_ELEMENTS = 1024


def input_shape(elements: int) -> tuple[int, int]:
    """``(rows, ROW_ELEMENTS)``; one row when `elements` is not a multiple of it."""
    if elements > ROW_ELEMENTS and elements % ROW_ELEMENTS == 0:
        return (elements // ROW_ELEMENTS, ROW_ELEMENTS)
    return (1, elements)


def make_input(elements: int, seed: int) -> Array:
    """A float32 array spanning the functions' interesting range (a few units)."""
    rng = np.random.default_rng(seed)
    # Drawn in float32 and scaled in place: no float64 temporary twice the size.
    x = rng.standard_normal(elements, dtype=np.float32)
    x *= 3.0
    return x.reshape(input_shape(elements))


@dataclass(frozen=True)
class Chunking:
    """The SDK options that decide how a tensor travels (see actgrad._client)."""

    max_message_bytes: int
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def client_options(self) -> dict[str, int]:
        return {
            "max_message_bytes": self.max_message_bytes,
            "stream_threshold_bytes": self.stream_threshold_bytes,
            "chunk_bytes": self.chunk_bytes,
        }


@dataclass(frozen=True)
class Wire:
    """How one call travels: one unary request, or a stream of chunk requests."""

    streamed: bool
    message_sizes: tuple[int, ...]
    messages: tuple[bytes, ...] = ()  # the serialized requests, when asked for

    @property
    def mode(self) -> str:
        return "streamed" if self.streamed else "unary"

    @property
    def total_bytes(self) -> int:
        return sum(self.message_sizes)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "messages": len(self.message_sizes),
            "largest_message_bytes": max(self.message_sizes),
            "wire_bytes": self.total_bytes,
        }


def wire(op: Op, x: Array, chunking: Chunking, *, serialize: bool = False) -> Wire:
    """The request(s) `Client` with these options sends for `op` on `x`.

    With `serialize`, the bytes themselves (what the echo sends); without, only
    their sizes.
    """
    # The SDK's private builder, on purpose: the echo must carry exactly these bytes,
    # chunked by the same plan the SDK makes.
    builder = _BaseClient(
        "127.0.0.1:1",
        timeout=1.0,
        max_message_bytes=chunking.max_message_bytes,
        options=None,
        stream_threshold_bytes=chunking.stream_threshold_bytes,
        chunk_bytes=chunking.chunk_bytes,
    )
    # How a stream may be split is the server's catalog; a real client reads it once.
    builder._learn_catalog([_function_info(info) for info in function_infos()])
    if op.name == "activate":
        rpc: Any = builder._activate_rpc(x, op.function, dict(op.params))
    elif op.name == "gradient":
        rpc = builder._gradient_rpc(
            x, op.function, dict(op.params), grad_output=None, return_output=False
        )
    else:
        rpc = builder._softmax_rpc(x, **op.params)
    streamed = isinstance(rpc, _StreamRpc)
    requests = rpc.requests() if streamed else iter((rpc.request,))
    sizes: list[int] = []
    messages: list[bytes] = []
    for request in requests:
        if serialize:
            messages.append(request.SerializeToString())
            sizes.append(len(messages[-1]))
        else:
            sizes.append(request.ByteSize())
    return Wire(streamed, tuple(sizes), tuple(messages))


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


def floor_runner(op: Op, like: Array, setup: SessionSetup) -> Callable[..., Array]:
    """Runs `op`'s graph in this process on any array of `like`'s rank and dtype.

    Binding, graph building and feeds follow actgrad_server.engine (the graph
    depends on the rank, not the shape); what is left in the call is onnxruntime's
    run, as the server's engine calls it.
    """
    function = catalog.lookup(op.function)
    call = catalog.bind(function, dict(op.params), x_shape=like.shape, x_dtype=like.dtype)
    scalars: dict[str, Any] = {
        name: np.asarray(call.scalars[name], dtype=np.float64) for name in function.runtime_params
    }
    if op.name == "gradient":
        model = graphs.build_gradient(
            function, "float32", with_output=False, x_rank=like.ndim, **dict(call.static)
        )
        output = "grad_input"
    else:
        model = graphs.build_forward(function, "float32", x_rank=like.ndim, **dict(call.static))
        output = "y"
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=setup.options, providers=setup.providers
    )
    gradient = op.name == "gradient"

    def run(x: Array, grad_output: Array | None = None) -> Array:
        feeds: dict[str, Any] = {"x": x, **scalars}
        if gradient:
            feeds["grad_output"] = np.ones_like(x) if grad_output is None else grad_output
        result: Array = session.run([output], feeds)[0]
        return result

    return run


def compute_floor(
    op: Op, x: Array, setup: SessionSetup, *, chunk_elements: int | None = None
) -> Callable[[], Array]:
    """A zero-argument call running `op`'s graph on `x` in this process.

    As the server's engine does it: whole when `x` has at most `chunk_elements`
    elements (`actgrad serve --chunk-elements`, the server's default when None),
    else in blocks of whole rows of at most that many elements, each result written
    into one output array made up front (the engine places its chunks the same
    way). On the whole of a large array the graph's intermediates are as large as
    the array, fresh memory each time without an arena, which the server never
    pays: that floor was slower than the server's own compute at 16 Mi.
    """
    limit = Settings().chunk_elements if chunk_elements is None else chunk_elements
    run = floor_runner(op, x, setup)
    # Gradient's ones (the server's default grad_output) are made once, outside the
    # timed call.
    ones = np.ones_like(x) if op.name == "gradient" else None
    if x.size <= limit or x.ndim == 0:
        return lambda: run(x, ones)
    rows = max(1, limit // max(1, math.prod(x.shape[1:])))
    blocks = [slice(start, start + rows) for start in range(0, x.shape[0], rows)]
    out = np.empty_like(x)

    def chunked() -> Array:
        for block in blocks:
            out[block] = run(x[block], None if ones is None else ones[block])
        return out

    return chunked


class Reference:
    """Checks a result of `op` on `x` against the compute floor, block by block.

    Rows are compared in blocks of about `block_elements`, so that checking a
    1 GiB result needs no second 1 GiB array (every operation here works row by
    row, so a block's result is that block of the whole result).
    """

    def __init__(
        self, op: Op, x: Array, setup: SessionSetup, *, block_elements: int = 1 << 22
    ) -> None:
        self._op = op
        self._x = x
        self._rows = max(1, block_elements // max(1, x.shape[-1]))
        self._run = floor_runner(op, x[: self._rows], setup)

    def check(self, name: str, result: object, *, rtol: float, atol: float) -> None:
        """Raises ValueError naming the first mismatch."""
        got = np.asarray(result)
        x = self._x
        if got.shape != x.shape or got.dtype != x.dtype:
            raise ValueError(
                f"{name} {self._op.label}: got {got.dtype}{list(got.shape)}, "
                f"expected {x.dtype}{list(x.shape)}"
            )
        for start in range(0, x.shape[0], self._rows):
            block = slice(start, start + self._rows)
            expected = self._run(x[block])
            if not np.allclose(got[block], expected, rtol=rtol, atol=atol):
                diff = np.abs(got[block].astype(np.float64) - expected)
                raise ValueError(
                    f"{name} {self._op.label}: differs from onnxruntime by up to "
                    f"{float(np.max(diff)):g} (rows {start}..)"
                )
