"""Prepared calls: numpy arrays and keyword parameters turned into requests, no I/O.

A public method of either client asks `RequestBuilder` (a base of both) for a
prepared call: an `Rpc` (the stub method, the request, how to read the answer), a
`StreamRpc` (one request per chunk of a large input), or, when the call depends on
a fact of the server not known yet, a `NeedsCatalog` / `NeedsServerInfo` that the
client resolves by asking first. `Client` runs them on a blocking channel,
`AsyncClient` awaits them on a `grpc.aio` channel.

Here too: splitting large inputs into chunk streams (as the server's catalog says
they may be split), and the same-host fast path: lending one shared-memory segment
per call (`Loan`), whose regions replace the tensors' bytes in the request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from actgrad import _shm, wire
from actgrad._responses import (
    decode_like,
    decode_result,
    decode_shaped,
    dense_vjp_result,
    function_info,
    grad_params,
    gradient_flow_result,
    gradient_result,
    health_status,
    place_chunk,
    server_info,
    stream_finisher,
)
from actgrad._types import (
    DenseVjpResult,
    FunctionInfo,
    GradientFlowResult,
    ServerInfo,
    VjpResult,
)
from actgrad.errors import InternalError
from actgrad.v1 import activation_pb2, tensor_pb2
from actgrad.wire import ChunkPlan, plan_chunks

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_SHARED_MEMORY_MIN_BYTES",
    "DEFAULT_STREAM_THRESHOLD_BYTES",
    "AnyRpc",
    "Loan",
    "NeedsCatalog",
    "NeedsServerInfo",
    "RequestBuilder",
    "ResultT",
    "Rpc",
    "StreamRpc",
]

_LOGGER = logging.getLogger(__name__)

# Inputs above this many bytes travel as a stream of chunks of about CHUNK_BYTES.
DEFAULT_STREAM_THRESHOLD_BYTES = 8 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
# With shared_memory=True, inputs of at least this many bytes go through shared
# memory; below it, opening and mapping a segment costs more than the copy saved.
DEFAULT_SHARED_MEMORY_MIN_BYTES = 64 * 1024

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

ResultT = TypeVar("ResultT")

# A request message, or one whose large tensors are copied straight into the bytes
# gRPC sends when it is serialized (`actgrad.wire.frames`).
Request = Message | wire.Outgoing


@dataclass(frozen=True)
class Rpc(Generic[ResultT]):
    """One prepared call: the stub method to run, its request, how to read the answer.

    A call whose tensors are in a shared-memory segment lent by the pool also has
    `release`, which gives the segment back once the call is over whatever its
    end (after `parse` copied the results out), and `fallback`, which prepares
    the same call with the tensors in the message, for a server that refuses
    shared memory (FAILED_PRECONDITION).
    """

    method: str
    request: Request
    parse: Callable[[Any], ResultT]
    service: str = "activation"  # which stub (see `_channel.stub_for`) runs it
    release: Callable[[], None] | None = None
    fallback: Callable[[], AnyRpc[ResultT]] | None = None


@dataclass(frozen=True)
class StreamRpc(Generic[ResultT]):
    """A prepared chunked call: one request per chunk, one response per chunk.

    `requests()` yields the chunk requests lazily (so only a few are in memory at
    once; called again for each attempt), `accept(k, response)` writes chunk k's
    result into place and `finish(received)` returns the whole result, or raises
    when the stream ended before every chunk was answered.
    """

    method: str
    requests: Callable[[], Iterator[Request]]
    accept: Callable[[int, Any], None]
    finish: Callable[[int], ResultT]


@dataclass(frozen=True)
class NeedsCatalog(Generic[ResultT]):
    """A call that can be prepared only once the server's catalog is known.

    A large input streams in chunks, and how it may be split (anywhere, or along
    axes other than softmax's) is the server's fact, read from ListFunctions once
    per client; `build` prepares the call after that.
    """

    build: Callable[[], AnyRpc[ResultT]]


@dataclass(frozen=True)
class NeedsServerInfo(Generic[ResultT]):
    """A call that would put its tensors in shared memory, prepared once the server
    says whether it takes them, and up to how many elements (GetServerInfo, asked
    once per client); `build` then lends a segment, or goes in messages.
    """

    build: Callable[[], AnyRpc[ResultT]]


AnyRpc = Rpc[ResultT] | StreamRpc[ResultT] | NeedsCatalog[ResultT] | NeedsServerInfo[ResultT]


@dataclass(frozen=True)
class Loan:
    """A segment lent for one call, the inputs copied into its first `regions`."""

    segment: _shm.Segment
    regions: list[tensor_pb2.SharedMemoryRegion]
    release: Callable[[], None]

    def put(self, k: int, array: npt.NDArray[Any], *, out: tensor_pb2.Tensor) -> None:
        """Describes `array`, held in region k, as the request tensor `out`."""
        out.dtype = wire.dtype_info(array.dtype).wire  # type: ignore[assignment]
        out.shape[:] = array.shape
        out.region.CopyFrom(self.regions[k])

    def result(
        self, tensor: tensor_pb2.Tensor, k: int, like: npt.NDArray[Any], *, field: str
    ) -> npt.NDArray[Any]:
        """A copy of the result the server wrote into region k (the segment is reused)."""
        if tensor.WhichOneof("payload") != "region" or tensor.region != self.regions[k]:
            raise InternalError(
                f"malformed response from the server: {field} is not in the region sent"
            )
        if tensor.dtype != wire.dtype_info(like.dtype).wire or tuple(tensor.shape) != like.shape:
            raise InternalError(
                f"malformed response from the server: {field} is not {like.dtype}{list(like.shape)}"
            )
        offset = self.regions[k].offset
        return self.segment.array(offset, like.dtype, like.shape).copy()


@dataclass(frozen=True)
class _DenseLayer:
    """A dense call's tensors, already in x's dtype, and its flags."""

    x: npt.NDArray[Any]
    weight: npt.NDArray[Any]
    bias: npt.NDArray[Any] | None
    grad_output: npt.NDArray[Any] | None
    activation: str
    params: Mapping[str, Any]
    gradient: bool
    return_output: bool
    return_net_output: bool

    @property
    def z_shape(self) -> tuple[int, ...]:
        return (*self.x.shape[:-1], *self.weight.shape[:1])

    def request(self, rows: slice | None = None) -> Request:
        """The request for the whole call, or for these rows of x's first axis."""
        request = activation_pb2.DenseRequest(
            activation=self.activation,
            gradient=self.gradient,
            return_output=self.return_output,
            return_net_output=self.return_net_output,
        )
        x, g = self.x, self.grad_output
        if rows is not None:
            x = x[rows]
            g = None if g is None else g[rows]
        tensors = {"input": x, "weight": self.weight}
        if self.bias is not None:
            tensors["bias"] = self.bias
        if g is not None:
            tensors["grad_output"] = g
        _fill_params(request.params, self.params, self.x.dtype)
        return wire.frame_for(request, tensors)


class RequestBuilder:
    """Request building and the state it needs: chunking options, the server's
    catalog once read, and the shared-memory segments and what the server said
    of them. A base of both clients; nothing here touches the network.
    """

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int,
        stream_threshold_bytes: int,
        chunk_bytes: int,
        shared_memory: bool,
        shared_memory_min_bytes: int,
    ) -> None:
        self._target = target
        for name, value in (
            ("stream_threshold_bytes", stream_threshold_bytes),
            ("chunk_bytes", chunk_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        # A chunk (or an unstreamed input) and its request's other fields must fit
        # one message; half the limit leaves room for grad_output or a slope.
        self._stream_threshold = min(stream_threshold_bytes, max_message_bytes // 2)
        self._chunk_bytes = min(chunk_bytes, max(1, max_message_bytes // 4))
        # The server's functions by name and alias, read once when a call first streams.
        self._catalog: dict[str, FunctionInfo] | None = None
        if not isinstance(shared_memory, bool):
            raise TypeError(f"shared_memory must be a bool, got {type(shared_memory).__name__}")
        if (
            isinstance(shared_memory_min_bytes, bool)
            or not isinstance(shared_memory_min_bytes, int)
            or shared_memory_min_bytes < 0
        ):
            raise ValueError(
                f"shared_memory_min_bytes must be an int >= 0, got {shared_memory_min_bytes!r}"
            )
        self._shared_min_bytes = shared_memory_min_bytes
        self._shared_lock = threading.Lock()
        self._shared_pool: _shm.SegmentPool | None = None
        # The server's element limit, learnt with whether it takes shared memory
        # before the first shared call: larger inputs go in messages, where they
        # are streamed in chunks under the limit.
        self._shared_max_elements: int | None = None
        if shared_memory:
            if not _shm.is_local_target(target):
                _LOGGER.info(
                    "shared memory not used: %s is not on this host; tensors go in messages",
                    target,
                )
            elif not os.path.isdir(_shm.DIRECTORY):
                _LOGGER.info(
                    "shared memory not used: %s does not exist here; tensors go in messages",
                    _shm.DIRECTORY,
                )
            else:
                self._shared_pool = _shm.SegmentPool()

    # -- shared memory -------------------------------------------------------------

    def _stop_sharing(self, reason: str) -> None:
        """Turns shared memory off for good (logged once) and unlinks the segments."""
        with self._shared_lock:
            pool, self._shared_pool = self._shared_pool, None
        if pool is not None:
            pool.close()
            if reason:
                _LOGGER.warning(
                    "shared memory off for %s: %s; tensors go in messages from now on",
                    self._target,
                    reason,
                )

    def _learn_sharing(self, response: activation_pb2.GetServerInfoResponse) -> None:
        """Records what GetServerInfo says of shared memory; off for good when it is off."""
        if not response.shared_memory:
            # Servers from before shared-memory payloads lack the field (false) too.
            self._stop_sharing("the server does not allow it (no --allow-shared-memory)")
            return
        limit = response.limits.max_elements
        self._shared_max_elements = limit if limit > 0 else _INT64_MAX

    def _shares(self, array: npt.NDArray[Any]) -> bool:
        """True when `array` should travel in shared memory, as far as is known yet."""
        nbytes = array.nbytes
        if self._shared_pool is None or nbytes == 0 or nbytes < self._shared_min_bytes:
            return False
        limit = self._shared_max_elements
        return limit is None or array.size <= limit

    def _lend(self, arrays: Sequence[npt.NDArray[Any]], regions: int) -> Loan | None:
        """A segment holding `arrays` (all of one size) in the first of `regions`
        equal regions, or None when the call should go in messages."""
        pool = self._shared_pool
        if pool is None:
            return None
        nbytes = arrays[0].nbytes
        offsets, total = _shm.layout([nbytes] * regions)
        try:
            segment = pool.acquire(total)
        except OSError as exc:
            self._stop_sharing(f"cannot make a segment in {_shm.DIRECTORY} ({exc.strerror})")
            return None
        except RuntimeError:  # the pool was closed meanwhile
            return None

        def release() -> None:
            pool.release(segment)

        try:
            for array, offset in zip(arrays, offsets, strict=False):
                segment.array(offset, array.dtype, array.shape)[...] = array
        except BaseException:
            release()
            raise
        described = [
            tensor_pb2.SharedMemoryRegion(segment=segment.name, offset=offset, size=nbytes)
            for offset in offsets
        ]
        return Loan(segment, described, release)

    def _prerequisite(
        self, rpc: NeedsCatalog[ResultT] | NeedsServerInfo[ResultT]
    ) -> Rpc[None] | None:
        """The call that learns what `rpc` needs to know of the server, None if known.

        Its `parse` records the answer on this client (once per client).
        """
        if isinstance(rpc, NeedsCatalog):
            if self._catalog is not None:
                return None
            return Rpc(
                "ListFunctions",
                activation_pb2.ListFunctionsRequest(),
                lambda response: self._learn_catalog(
                    [function_info(f) for f in response.functions]
                ),
            )
        if self._shared_pool is None or self._shared_max_elements is not None:
            return None
        return Rpc("GetServerInfo", activation_pb2.GetServerInfoRequest(), self._learn_sharing)

    # -- request building --------------------------------------------------------

    def _learn_catalog(self, functions: list[FunctionInfo]) -> None:
        self._catalog = {
            _catalog_key(name): info for info in functions for name in (info.name, *info.aliases)
        }

    def _streams(self, array: npt.NDArray[Any], extra_bytes: int = 0) -> bool:
        """True when the input is too big for one message."""
        return array.nbytes + extra_bytes > self._stream_threshold

    def _plan(
        self,
        array: npt.NDArray[Any],
        function: str,
        params: Mapping[str, Any],
        extra_bytes: int = 0,
    ) -> ChunkPlan | None:
        """A chunk plan when the input is too big for one message, else None.

        Call only once the catalog is known (see `NeedsCatalog`). A function the
        server does not know, or one that cannot be split, goes whole: the server
        then names what is wrong.
        """
        if not self._streams(array, extra_bytes) or self._catalog is None:
            return None
        info = self._catalog.get(_catalog_key(function))
        if info is None:
            return None
        mixing_axis = None
        if info.axis_param is not None:
            mixing_axis = _normalized_axis(params.get(info.axis_param, -1), array.ndim)
            if mixing_axis is None:
                return None  # let the server name the bad parameter
        elif not info.elementwise:
            return None
        return self._plan_along(array, params, mixing_axis)

    def _plan_along(
        self, array: npt.NDArray[Any], params: Mapping[str, Any], mixing_axis: int | None
    ) -> ChunkPlan | None:
        tensors = {
            name: np.shape(value)
            for name, value in params.items()
            if isinstance(value, np.ndarray | list | tuple)
        }
        return plan_chunks(
            array.shape,
            array.itemsize,
            chunk_bytes=self._chunk_bytes,
            elementwise=mixing_axis is None,
            mixing_axis=mixing_axis,
            tensor_params=tensors,
        )

    def _activate_stream(
        self,
        array: npt.NDArray[Any],
        function: str,
        params: Mapping[str, Any],
        plan: ChunkPlan,
    ) -> StreamRpc[npt.NDArray[Any]]:
        chunked = _ChunkParams.split(params, plan, array.dtype)

        def requests() -> Iterator[Request]:
            for k in range(len(plan)):
                request = activation_pb2.ActivateRequest(function=function)
                chunked.fill(request.params, k)
                yield wire.frame_for(request, {"input": plan.chunk(array, k)})

        out = np.empty(array.shape, dtype=array.dtype)

        def accept(k: int, response: activation_pb2.ActivateResponse) -> None:
            place_chunk(plan, out, k, response.output, field="output")

        return StreamRpc("ActivateStream", requests, accept, stream_finisher(plan, lambda: out))

    def _activate_rpc(
        self, x: Any, function: str, params: Mapping[str, Any], *, lend: bool = False
    ) -> AnyRpc[npt.NDArray[Any]]:
        array = wire.to_float_array(x, name="x")
        function = _check_function(function)
        if self._shares(array):
            if not lend:
                return NeedsServerInfo(
                    lambda: self._activate_rpc(array, function, params, lend=True)
                )
            request = activation_pb2.ActivateRequest(function=function)
            _fill_params(request.params, params, array.dtype)
            loan = self._lend([array], 1)
            if loan is not None:
                loan.put(0, array, out=request.input)
                # The output overwrites the input: the server reads each chunk (or the
                # whole input) before it writes that part of the result.
                request.output_region.CopyFrom(loan.regions[0])
                return Rpc(
                    "Activate",
                    request,
                    lambda response: loan.result(response.output, 0, array, field="output"),
                    release=loan.release,
                    fallback=lambda: self._activate_rpc(array, function, params),
                )
        if self._streams(array) and self._catalog is None:
            return NeedsCatalog(lambda: self._activate_rpc(array, function, params))
        plan = self._plan(array, function, params)
        if plan is not None:
            return self._activate_stream(array, function, params, plan)
        request = activation_pb2.ActivateRequest(function=function)
        _fill_params(request.params, params, array.dtype)
        return Rpc(
            "Activate",
            wire.frame_for(request, {"input": array}),
            lambda response: decode_like(response.output, array, field="output"),
        )

    def _gradient_rpc(
        self,
        x: Any,
        function: str,
        params: Mapping[str, Any],
        *,
        grad_output: Any,
        return_output: bool,
        lend: bool = False,
    ) -> AnyRpc[VjpResult]:
        array = wire.to_float_array(x, name="x")
        function = _check_function(function)
        g = None if grad_output is None else _as_dtype(grad_output, array.dtype, name="grad_output")
        # A grad_output of another shape goes in the message, for the server to refuse.
        if self._shares(array) and (g is None or g.shape == array.shape):
            if not lend:
                return NeedsServerInfo(
                    lambda: self._gradient_rpc(
                        array,
                        function,
                        params,
                        grad_output=g,
                        return_output=return_output,
                        lend=True,
                    )
                )
            rpc = self._gradient_shared(array, g, function, params, bool(return_output))
            if rpc is not None:
                return rpc
        # Chunks pair x and grad_output element for element; a grad_output of
        # another shape goes whole, for the server to refuse.
        plan = None
        if g is None or g.shape == array.shape:
            extra = 0 if g is None else g.nbytes
            if self._streams(array, extra) and self._catalog is None:
                return NeedsCatalog(
                    lambda: self._gradient_rpc(
                        array,
                        function,
                        params,
                        grad_output=g,
                        return_output=return_output,
                    )
                )
            plan = self._plan(array, function, params, extra)
        if plan is not None:
            return self._gradient_stream(array, g, function, params, plan, bool(return_output))
        request = activation_pb2.GradientRequest(
            function=function, return_output=bool(return_output)
        )
        # grad_output has x's dtype; the shape is left for the server to check.
        tensors = {"input": array} if g is None else {"input": array, "grad_output": g}
        _fill_params(request.params, params, array.dtype)
        return Rpc(
            "Gradient",
            wire.frame_for(request, tensors),
            lambda response: gradient_result(response, array),
        )

    def _gradient_shared(
        self,
        array: npt.NDArray[Any],
        g: npt.NDArray[Any] | None,
        function: str,
        params: Mapping[str, Any],
        return_output: bool,
    ) -> Rpc[VjpResult] | None:
        request = activation_pb2.GradientRequest(function=function, return_output=return_output)
        _fill_params(request.params, params, array.dtype)
        inputs = [array] if g is None else [array, g]
        loan = self._lend(inputs, max(len(inputs), 2 if return_output else 1))
        if loan is None:
            return None
        loan.put(0, array, out=request.input)
        if g is not None:
            loan.put(1, g, out=request.grad_output)
        # Results overwrite the inputs, each exactly in place (the server reads every
        # input chunk before it writes that chunk of a result):
        # grad_input over x, the forward value over grad_output (or after x).
        request.grad_input_region.CopyFrom(loan.regions[0])
        if return_output:
            request.output_region.CopyFrom(loan.regions[1])

        def parse(response: activation_pb2.GradientResponse) -> VjpResult:
            output = None
            if return_output:
                output = loan.result(response.output, 1, array, field="output")
            return VjpResult(
                grad_input=loan.result(response.grad_input, 0, array, field="grad_input"),
                grad_params=grad_params(response),
                output=output,
            )

        return Rpc(
            "Gradient",
            request,
            parse,
            release=loan.release,
            fallback=lambda: self._gradient_rpc(
                array, function, params, grad_output=g, return_output=return_output
            ),
        )

    def _gradient_stream(
        self,
        array: npt.NDArray[Any],
        g: npt.NDArray[Any] | None,
        function: str,
        params: Mapping[str, Any],
        plan: ChunkPlan,
        return_output: bool,
    ) -> StreamRpc[VjpResult]:
        chunked = _ChunkParams.split(params, plan, array.dtype)

        def requests() -> Iterator[Request]:
            for k in range(len(plan)):
                request = activation_pb2.GradientRequest(
                    function=function, return_output=return_output
                )
                tensors = {"input": plan.chunk(array, k)}
                if g is not None:
                    tensors["grad_output"] = plan.chunk(g, k)
                chunked.fill(request.params, k)
                yield wire.frame_for(request, tensors)

        grad_input = np.empty(array.shape, dtype=array.dtype)
        output = np.empty(array.shape, dtype=array.dtype) if return_output else None
        # Parameter gradients of chunks are summed in float64, then rounded once.
        totals = {n: np.zeros(t.shape, dtype=np.float64) for n, t in chunked.tensors.items()}

        def accept(k: int, response: activation_pb2.GradientResponse) -> None:
            place_chunk(plan, grad_input, k, response.grad_input, field="grad_input")
            if output is not None:
                place_chunk(plan, output, k, response.output, field="output")
            for name in totals:
                if name not in response.grad_params:
                    raise InternalError(
                        f"malformed response from the server: chunk {k} has no "
                        f"grad_params[{name!r}]"
                    )
                piece = decode_result(response.grad_params[name], field=f"grad_params[{name!r}]")
                try:
                    plan.place_param(totals[name], name, k, piece)
                except ValueError as exc:
                    raise InternalError(f"malformed response from the server: {exc}") from exc

        def result() -> VjpResult:
            return VjpResult(
                grad_input=grad_input,
                grad_params={n: totals[n].astype(array.dtype) for n in sorted(totals)},
                output=output,
            )

        return StreamRpc("GradientStream", requests, accept, stream_finisher(plan, result))

    def _softmax_rpc(
        self, x: Any, *, axis: int, temperature: float, log: bool, lend: bool = False
    ) -> AnyRpc[npt.NDArray[Any]]:
        array = wire.to_float_array(x, name="x")
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
            raise TypeError(f"axis must be an int, got {type(axis).__name__}")
        if isinstance(temperature, bool) or not isinstance(
            temperature, int | float | np.integer | np.floating
        ):
            raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
        # Values are always sent: the server's defaults are not ours to guess.
        fields: dict[str, Any] = {
            "axis": int(axis),
            "temperature": float(temperature),
            "log": bool(log),
        }
        if self._shares(array):
            if not lend:
                return NeedsServerInfo(
                    lambda: self._softmax_rpc(
                        array, axis=axis, temperature=temperature, log=log, lend=True
                    )
                )
            loan = self._lend([array], 1)
            if loan is not None:
                request = activation_pb2.SoftmaxRequest(**fields)
                loan.put(0, array, out=request.input)
                request.output_region.CopyFrom(loan.regions[0])
                return Rpc(
                    "Softmax",
                    request,
                    lambda response: loan.result(response.output, 0, array, field="output"),
                    release=loan.release,
                    fallback=lambda: self._softmax_rpc(
                        array, axis=axis, temperature=temperature, log=log
                    ),
                )
        # The Softmax RPC names its axis: chunks split along the others.
        plan = None
        if self._streams(array):
            mixing_axis = _normalized_axis(int(axis), array.ndim)
            if mixing_axis is not None:
                plan = self._plan_along(array, {}, mixing_axis)
        if plan is not None:
            return self._softmax_stream(array, fields, plan)
        return Rpc(
            "Softmax",
            wire.frame_for(activation_pb2.SoftmaxRequest(**fields), {"input": array}),
            lambda response: decode_like(response.output, array, field="output"),
        )

    def _softmax_stream(
        self, array: npt.NDArray[Any], fields: Mapping[str, Any], plan: ChunkPlan
    ) -> StreamRpc[npt.NDArray[Any]]:
        def requests() -> Iterator[Request]:
            for k in range(len(plan)):
                request = activation_pb2.SoftmaxRequest(**fields)
                yield wire.frame_for(request, {"input": plan.chunk(array, k)})

        out = np.empty(array.shape, dtype=array.dtype)

        def accept(k: int, response: activation_pb2.SoftmaxResponse) -> None:
            place_chunk(plan, out, k, response.output, field="output")

        return StreamRpc("SoftmaxStream", requests, accept, stream_finisher(plan, lambda: out))

    def _dense_layer(
        self,
        x: Any,
        weight: Any,
        bias: Any,
        activation: str | None,
        params: Mapping[str, Any],
        *,
        gradient: bool,
        grad_output: Any = None,
        return_output: bool = False,
        return_net_output: bool = False,
    ) -> _DenseLayer:
        """A dense call's tensors in x's dtype; shapes are the server's to check."""
        array = wire.to_float_array(x, name="x")
        if activation is not None:
            activation = _check_function(activation)
        return _DenseLayer(
            x=array,
            weight=_as_dtype(weight, array.dtype, name="weight"),
            bias=None if bias is None else _as_dtype(bias, array.dtype, name="bias"),
            grad_output=(
                None
                if grad_output is None
                else _as_dtype(grad_output, array.dtype, name="grad_output")
            ),
            activation=activation or "",
            params=params,
            gradient=gradient,
            return_output=bool(return_output),
            return_net_output=bool(return_net_output),
        )

    def _dense_rows(self, layer: _DenseLayer) -> int | None:
        """Rows of x's first axis per chunk when the call is too big for one message, or
        None: it goes whole (also when it cannot be split: then the server, or the
        message size limit, says what is wrong)."""
        x, w, g = layer.x, layer.weight, layer.grad_output
        extra = w.nbytes + (0 if g is None else g.nbytes)
        if x.ndim < 2 or x.shape[0] < 2 or not self._streams(x, extra):
            return None
        if w.ndim != 2 or x.shape[-1] != w.shape[1] or w.nbytes > self._chunk_bytes:
            return None
        if g is not None and g.shape != (*x.shape[:-1], w.shape[0]):
            return None
        for value in layer.params.values():
            # A tensor parameter that spans x's first axis would have to be split too.
            shape = np.shape(value) if isinstance(value, np.ndarray | list | tuple) else ()
            if len(shape) >= x.ndim and shape[len(shape) - x.ndim] != 1:
                return None
        # Per row: x's and the results' bytes (output, net output, grad_input, grad_output).
        row_bytes = x[0].nbytes * 2 + (x[0].nbytes // max(1, w.shape[1])) * w.shape[0] * 3
        return max(1, int(self._chunk_bytes - w.nbytes) // max(1, int(row_bytes)))

    def _dense_rpc(
        self, x: Any, weight: Any, bias: Any, activation: str | None, params: Mapping[str, Any]
    ) -> Rpc[npt.NDArray[Any]] | StreamRpc[npt.NDArray[Any]]:
        layer = self._dense_layer(x, weight, bias, activation, params, gradient=False)
        rows = self._dense_rows(layer)
        if rows is not None:
            return self._dense_stream(layer, rows, lambda parts: parts["output"])
        return Rpc(
            "Dense",
            layer.request(),
            lambda response: decode_shaped(response.output, layer.x, layer.z_shape, field="output"),
        )

    def _dense_vjp_rpc(
        self,
        x: Any,
        weight: Any,
        bias: Any,
        activation: str | None,
        params: Mapping[str, Any],
        *,
        grad_output: Any,
        return_output: bool,
        return_net_output: bool,
    ) -> Rpc[DenseVjpResult] | StreamRpc[DenseVjpResult]:
        layer = self._dense_layer(
            x,
            weight,
            bias,
            activation,
            params,
            gradient=True,
            grad_output=grad_output,
            return_output=return_output,
            return_net_output=return_net_output,
        )
        rows = self._dense_rows(layer)
        if rows is not None:
            return self._dense_stream(layer, rows, _dense_vjp_from_parts)
        return Rpc(
            "Dense",
            layer.request(),
            lambda response: dense_vjp_result(response, layer.x, layer.weight),
        )

    def _dense_stream(
        self,
        layer: _DenseLayer,
        rows: int,
        pick: Callable[[dict[str, npt.NDArray[Any]]], ResultT],
    ) -> StreamRpc[ResultT]:
        """DenseStream: x (and grad_output) in chunks of `rows` along the first axis, the
        weights in every chunk; rows are placed back, the weight, bias and parameter
        gradients of the chunks summed in float64 and rounded once."""
        x, dtype = layer.x, layer.x.dtype
        starts = list(range(0, x.shape[0], rows))
        z_shape = layer.z_shape
        wanted = {
            "output": not layer.gradient or layer.return_output,
            "net_output": layer.return_net_output,
            "grad_input": layer.gradient,
        }
        placed = {
            name: np.empty(x.shape if name == "grad_input" else z_shape, dtype=dtype)
            for name, want in wanted.items()
            if want
        }
        totals: dict[str, npt.NDArray[Any]] = {}

        def requests() -> Iterator[Request]:
            for start in starts:
                yield layer.request(slice(start, start + rows))

        def accept(k: int, response: activation_pb2.DenseResponse) -> None:
            if k >= len(starts):
                raise InternalError(
                    f"malformed response from the server: more than {len(starts)} chunks"
                )
            part = slice(starts[k], starts[k] + rows)
            for name, out in placed.items():
                out[part] = decode_shaped(getattr(response, name), x, out[part].shape, field=name)
            if layer.gradient:
                sums = {
                    "grad_weight": decode_shaped(
                        response.grad_weight, x, layer.weight.shape, field="grad_weight"
                    ),
                    "grad_bias": decode_shaped(
                        response.grad_bias, x, layer.weight.shape[:1], field="grad_bias"
                    ),
                    **grad_params(response),
                }
                for name, value in sums.items():
                    total = totals.setdefault(name, np.zeros(value.shape, dtype=np.float64))
                    if total.shape != value.shape:
                        raise InternalError(
                            f"malformed response from the server: chunk {k} {name} is "
                            f"{list(value.shape)}, expected {list(total.shape)}"
                        )
                    total += value

        def finish(received: int) -> ResultT:
            if received != len(starts):
                raise InternalError(
                    f"the stream ended after {received} of {len(starts)} chunks; no result"
                )
            return pick({**placed, **{n: t.astype(dtype) for n, t in totals.items()}})

        return StreamRpc("DenseStream", requests, accept, finish)

    def _gradient_flow_rpc(
        self,
        function: str,
        params: Mapping[str, Any],
        *,
        depth: int,
        width: int,
        batch: int,
        init: str,
        init_std: float | None,
        seed: int,
        residual: bool,
        normalize: bool,
        dtype: str,
    ) -> Rpc[GradientFlowResult]:
        function = _check_function(function)
        sizes = {"depth": depth, "width": width, "batch": batch, "seed": seed}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if not isinstance(init, str):
            raise TypeError(f"init must be a str, got {type(init).__name__}")
        try:
            wire_dtype = wire.dtype_info(dtype).wire
        except (KeyError, TypeError):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        request = activation_pb2.GradientFlowRequest(
            function=function,
            depth=int(depth),
            width=int(width),
            batch=int(batch),
            init=init,
            seed=int(seed),
            residual=bool(residual),
            normalize=bool(normalize),
            dtype=wire_dtype,  # type: ignore[arg-type]
        )
        if init_std is not None:
            request.init_std = float(init_std)
        _fill_params(request.params, params, np.dtype(np.float64))
        return Rpc(
            "GradientFlow", request, lambda response: gradient_flow_result(response, int(depth))
        )

    def _functions_rpc(self) -> Rpc[list[FunctionInfo]]:
        return Rpc(
            "ListFunctions",
            activation_pb2.ListFunctionsRequest(),
            lambda response: [function_info(f) for f in response.functions],
        )

    def _server_info_rpc(self) -> Rpc[ServerInfo]:
        return Rpc("GetServerInfo", activation_pb2.GetServerInfoRequest(), server_info)

    def _health_rpc(self, service: str) -> Rpc[str]:
        if not isinstance(service, str):
            raise TypeError(f"service must be a str, got {type(service).__name__}")
        return Rpc(
            "Check",
            health_pb2.HealthCheckRequest(service=service),
            health_status,
            service="health",
        )


# -- helpers (no state) ----------------------------------------------------------


def _dense_vjp_from_parts(parts: dict[str, npt.NDArray[Any]]) -> DenseVjpResult:
    """A DenseVjpResult from a stream's reassembled results, by field name."""
    fixed = ("grad_input", "grad_weight", "grad_bias", "output", "net_output")
    return DenseVjpResult(
        grad_input=parts["grad_input"],
        grad_weight=parts["grad_weight"],
        grad_bias=parts["grad_bias"],
        grad_params={n: v for n, v in sorted(parts.items()) if n not in fixed},
        output=parts.get("output"),
        net_output=parts.get("net_output"),
    )


def _catalog_key(name: str) -> str:
    # Names are matched as the server does: case-insensitive, '-' as '_'.
    return name.strip().lower().replace("-", "_")


def _normalized_axis(axis: Any, ndim: int) -> int | None:
    """`axis` in [0, rank) (a 0-d input counts as rank 1), None when it is not valid."""
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        return None
    rank = max(ndim, 1)
    if not -rank <= int(axis) < rank:
        return None
    return int(axis) % rank


def _check_function(function: Any) -> str:
    if not isinstance(function, str):
        raise TypeError(f"function must be a str name, got {type(function).__name__}")
    return function


def _as_dtype(value: Any, dtype: np.dtype[Any], *, name: str) -> npt.NDArray[Any]:
    """Converts a companion tensor (grad_output, a tensor parameter) to x's dtype.

    Integers are accepted here because the target dtype is fixed by x; booleans,
    complex numbers and objects are not numbers the server can take.
    """
    array = np.asarray(value)
    wire.check_numbers(value, array, name=name)
    is_bfloat16 = array.dtype == wire.dtype_info("bfloat16").numpy
    if array.dtype.kind not in "fiu" and not is_bfloat16:
        raise TypeError(f"{name}: {array.dtype} values cannot be converted to {dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


@dataclass(frozen=True)
class _ChunkParams:
    """The keyword parameters of a streamed call: scalars go with every chunk; tensor
    parameters are converted to x's dtype once, then sliced or repeated per chunk as
    the plan says."""

    plan: ChunkPlan
    dtype: np.dtype[Any]
    scalars: Mapping[str, Any]
    tensors: Mapping[str, npt.NDArray[Any]]

    @classmethod
    def split(
        cls, params: Mapping[str, Any], plan: ChunkPlan, dtype: np.dtype[Any]
    ) -> _ChunkParams:
        tensors = {
            n: _as_dtype(v, dtype, name=f"parameter {n!r}")
            for n, v in params.items()
            if isinstance(v, np.ndarray | list | tuple)
        }
        scalars = {n: v for n, v in params.items() if n not in tensors}
        return cls(plan, dtype, scalars, tensors)

    def fill(self, target: Any, k: int) -> None:
        """Writes chunk k's parameters into a request's ``params`` map."""
        _fill_params(target, self.scalars, self.dtype)
        chunk = {n: self.plan.param_chunk(n, t, k) for n, t in self.tensors.items()}
        _fill_params(target, chunk, self.dtype)


def _fill_params(target: Any, params: Mapping[str, Any], dtype: np.dtype[Any]) -> None:
    """Writes keyword parameters into a request's ``map<string, ParamValue>``."""
    for name, value in params.items():
        slot: activation_pb2.ParamValue = target[name]
        # bool before int: True is an int in Python.
        if isinstance(value, bool | np.bool_):
            slot.flag = bool(value)
        elif isinstance(value, int | np.integer):
            if not _INT64_MIN <= int(value) <= _INT64_MAX:
                raise ValueError(f"parameter {name!r}: {value} does not fit in int64")
            slot.integer = int(value)
        elif isinstance(value, float | np.floating):
            slot.number = float(value)
        elif isinstance(value, str):
            slot.text = value
        elif isinstance(value, np.ndarray | list | tuple):
            wire.encode(_as_dtype(value, dtype, name=f"parameter {name!r}"), out=slot.tensor)
        else:
            raise TypeError(
                f"parameter {name!r}: {type(value).__name__} is not supported; "
                "pass a bool, int, float, str, numpy array or list"
            )
