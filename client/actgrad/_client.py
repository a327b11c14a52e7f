"""The SDK: one base that builds requests and reads responses, two thin clients.

`_BaseClient` holds everything that does not touch the network: option checks,
turning numpy arrays and keyword parameters into requests, and turning responses
into numpy arrays and dataclasses. Each public method asks it for an `_Rpc` (the
stub method, the request, and how to read the answer); `Client` runs that with a
blocking channel and `AsyncClient` awaits it on a `grpc.aio` channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actgrad import _shm, wire
from actgrad._types import FunctionInfo, Limits, ParamDefault, ParamInfo, ServerInfo, VjpResult
from actgrad.errors import ActgradError, InternalError, from_grpc_error
from actgrad.v1 import activation_pb2, activation_pb2_grpc, tensor_pb2
from actgrad.wire import ChunkPlan, plan_chunks

__all__ = ["AsyncClient", "Client"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 5
# Inputs above this many bytes travel as a stream of chunks of about CHUNK_BYTES.
DEFAULT_STREAM_THRESHOLD_BYTES = 8 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
# With shared_memory=True, inputs of at least this many bytes go through shared
# memory; below it, opening and mapping a segment costs more than the copy saved.
DEFAULT_SHARED_MEMORY_MIN_BYTES = 64 * 1024
# gRPC caps a retry policy's maxAttempts at 5.
_MAX_ATTEMPTS_LIMIT = 5
_ACTIVATION_SERVICE = activation_pb2.DESCRIPTOR.services_by_name["ActivationService"].full_name

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_PARAM_TYPE_PREFIX = "PARAM_TYPE_"
_DTYPE_PREFIX = "DTYPE_"

ResultT = TypeVar("ResultT")
ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class _Rpc(Generic[ResultT]):
    """One prepared call: the stub method to run, its request, how to read the answer."""

    method: str
    request: Message
    parse: Callable[[Any], ResultT]
    service: str = "activation"  # which stub (see `_stub`) runs it


@dataclass(frozen=True)
class _StreamRpc(Generic[ResultT]):
    """A prepared chunked call: one request per chunk, one response per chunk.

    `requests` yields the chunk requests lazily (so only a few are in memory at
    once), `accept(k, response)` writes chunk k's result into place and
    `finish(received)` returns the whole result, or raises when the stream ended
    before every chunk was answered.
    """

    method: str
    requests: Iterator[Message]
    accept: Callable[[int, Any], None]
    finish: Callable[[int], ResultT]


@dataclass(frozen=True)
class _SharedRpc(Generic[ResultT]):
    """A call whose tensors are in a shared-memory segment lent by the pool.

    `parse` checks the response and copies the results out of the segment;
    `release` gives the segment back once the call is over, whatever its end;
    `fallback` builds the same call with the tensors in the message, for a
    server that refuses shared memory.
    """

    method: str
    request: Message
    parse: Callable[[Any], ResultT]
    release: Callable[[], None]
    fallback: Callable[[], _AnyRpc[ResultT]]
    elements: int  # of the input, checked against the server's element limit


@dataclass(frozen=True)
class _NeedsCatalog(Generic[ResultT]):
    """A call that can be prepared only once the server's catalog is known.

    A large input streams in chunks, and how it may be split (anywhere, or along
    axes other than softmax's) is the server's fact, read from ListFunctions once
    per client; `build` prepares the call after that.
    """

    build: Callable[[], _AnyRpc[ResultT]]


_AnyRpc = _Rpc[ResultT] | _StreamRpc[ResultT] | _SharedRpc[ResultT] | _NeedsCatalog[ResultT]
# Statuses that mean "no shared memory with this server" rather than a bad call.
_SHARED_REFUSALS = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED)


class _BaseClient:
    """Options, request building and response decoding shared by both clients."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        max_message_bytes: int,
        options: ChannelOptions | None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
    ) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError("target must be a non-empty 'host:port' string")
        self._target = target
        self._timeout = _check_timeout(timeout, name="timeout")
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int):
            raise TypeError("max_message_bytes must be an int")
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes}")
        self._max_message_bytes = max_message_bytes
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
        self._credentials = _channel_credentials(
            tls, root_certificates, certificate_chain, private_key
        )
        self._metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {_check_token(token)}"),)
        )
        # Our options first; a caller's option with the same key wins.
        merged: dict[str, Any] = {
            "grpc.max_send_message_length": max_message_bytes,
            "grpc.max_receive_message_length": max_message_bytes,
            **_retry_options(max_attempts, max_message_bytes),
        }
        merged.update(dict(options or ()))
        self._channel_options: list[tuple[str, Any]] = list(merged.items())
        self._closed = False
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
        # The server's functions by name and alias, read once when a call first streams.
        self._catalog: dict[str, FunctionInfo] | None = None
        self._shared_pool: _shm.SegmentPool | None = None
        # The server's element limit, learnt before the first shared call: larger
        # inputs go in messages, where they are streamed in chunks under the limit.
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

    @property
    def target(self) -> str:
        """The server address this client talks to, e.g. ``"localhost:50051"``."""
        return self._target

    @property
    def timeout(self) -> float:
        """The default deadline of every call, in seconds."""
        return self._timeout

    @property
    def closed(self) -> bool:
        """True once `close()` was called; further calls raise RuntimeError."""
        return self._closed

    @property
    def shared_memory(self) -> bool:
        """True while calls may use shared memory (asked for, and not refused)."""
        return self._shared_pool is not None

    @property
    def secure(self) -> bool:
        """True when the channel uses TLS."""
        return self._credentials is not None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        tls = ", tls" if self.secure else ""
        return f"{type(self).__name__}({self._target!r}, timeout={self._timeout}{tls}, {state})"

    # -- shared by the I/O of both clients --------------------------------------

    def _call_options(self, deadline: float) -> dict[str, Any]:
        if self._metadata:
            return {"timeout": deadline, "metadata": self._metadata}
        return {"timeout": deadline}

    def _deadline(self, timeout: float | None) -> float:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if timeout is None:
            return self._timeout
        return _check_timeout(timeout, name="timeout")

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

    def _learn_limits(self, info: ServerInfo) -> int:
        limit = info.limits.max_elements
        self._shared_max_elements = limit if limit > 0 else _INT64_MAX
        return self._shared_max_elements

    def _shared_refused(self, error: ActgradError) -> bool:
        """True when `error` means the server takes no shared memory (then stop asking)."""
        if error.code not in _SHARED_REFUSALS:
            return False
        self._stop_sharing(f"the server answered {error.code.name}: {error.details}")
        return True

    def _lend(
        self, arrays: Sequence[npt.NDArray[Any]], regions: int
    ) -> tuple[Callable[[], None], _shm.Segment, list[activation_pb2.SharedMemoryRegion]] | None:
        """A segment holding `arrays` (all of one size) in the first of `regions`
        equal regions, or None when the call should go in messages."""
        pool = self._shared_pool
        nbytes = arrays[0].nbytes
        if pool is None or nbytes == 0 or nbytes < self._shared_min_bytes:
            return None
        if self._shared_max_elements is not None and arrays[0].size > self._shared_max_elements:
            return None
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
            activation_pb2.SharedMemoryRegion(segment=segment.name, offset=offset, size=nbytes)
            for offset in offsets
        ]
        return release, segment, described

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

        Call only once the catalog is known (see `_NeedsCatalog`). A function the
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
    ) -> _StreamRpc[npt.NDArray[Any]]:
        tensors = {
            n: _as_dtype(v, array.dtype, name=f"parameter {n!r}")
            for n, v in params.items()
            if isinstance(v, np.ndarray | list | tuple)
        }
        scalars = {n: v for n, v in params.items() if n not in tensors}

        def requests() -> Iterator[Message]:
            for k in range(len(plan)):
                request = activation_pb2.ActivateRequest(function=function)
                wire.encode(plan.chunk(array, k), out=request.input)
                _fill_params(request.params, scalars, array.dtype)
                _fill_params(
                    request.params,
                    {n: plan.param_chunk(n, t, k) for n, t in tensors.items()},
                    array.dtype,
                )
                yield request

        out = np.empty(array.shape, dtype=array.dtype)

        def accept(k: int, response: activation_pb2.ActivateResponse) -> None:
            _place(plan, out, k, response.output, field="output")

        return _StreamRpc("ActivateStream", requests(), accept, _finisher(plan, lambda: out))

    def _activate_rpc(
        self, x: Any, function: str, params: Mapping[str, Any], *, shared: bool = True
    ) -> _AnyRpc[npt.NDArray[Any]]:
        array = wire.to_float_array(x, name="x")
        function = _check_function(function)
        if shared and self._shared_pool is not None:
            header = activation_pb2.ActivateRequest(function=function)
            _header(array, out=header.input)
            _fill_params(header.params, params, array.dtype)
            lent = self._lend([array], 1)
            if lent is not None:
                release, segment, (region,) = lent
                # The output overwrites the input: the server reads it all first.
                return _SharedRpc(
                    "ActivateShared",
                    activation_pb2.ActivateSharedRequest(
                        request=header, input=region, output=region
                    ),
                    lambda response: _read_shared(
                        segment, response.output, region, array, field="output"
                    ),
                    release,
                    lambda: self._activate_rpc(array, function, params, shared=False),
                    array.size,
                )
        if self._streams(array) and self._catalog is None:
            return _NeedsCatalog(lambda: self._activate_rpc(array, function, params, shared=shared))
        plan = self._plan(array, function, params)
        if plan is not None:
            return self._activate_stream(array, function, params, plan)
        request = activation_pb2.ActivateRequest(function=function)
        wire.encode(array, out=request.input)
        _fill_params(request.params, params, array.dtype)
        return _Rpc(
            "Activate",
            request,
            lambda response: _decode_like(response.output, array, field="output"),
        )

    def _gradient_rpc(
        self,
        x: Any,
        function: str,
        params: Mapping[str, Any],
        *,
        grad_output: Any,
        return_output: bool,
        shared: bool = True,
    ) -> _AnyRpc[VjpResult]:
        array = wire.to_float_array(x, name="x")
        function = _check_function(function)
        g = None if grad_output is None else _as_dtype(grad_output, array.dtype, name="grad_output")
        if shared and self._shared_pool is not None and (g is None or g.shape == array.shape):
            rpc = self._gradient_shared(array, g, function, params, bool(return_output))
            if rpc is not None:
                return rpc
        # Chunks pair x and grad_output element for element; a grad_output of
        # another shape goes whole, for the server to refuse.
        plan = None
        if g is None or g.shape == array.shape:
            extra = 0 if g is None else g.nbytes
            if self._streams(array, extra) and self._catalog is None:
                return _NeedsCatalog(
                    lambda: self._gradient_rpc(
                        array,
                        function,
                        params,
                        grad_output=g,
                        return_output=return_output,
                        shared=shared,
                    )
                )
            plan = self._plan(array, function, params, extra)
        if plan is not None:
            return self._gradient_stream(array, g, function, params, plan, bool(return_output))
        request = activation_pb2.GradientRequest(
            function=function, return_output=bool(return_output)
        )
        wire.encode(array, out=request.input)
        if g is not None:
            # Same dtype as x; the shape is left for the server to check.
            wire.encode(g, out=request.grad_output)
        _fill_params(request.params, params, array.dtype)

        def parse(response: activation_pb2.GradientResponse) -> VjpResult:
            output = None
            if response.HasField("output"):
                output = _decode_like(response.output, array, field="output")
            return VjpResult(
                grad_input=_decode_like(response.grad_input, array, field="grad_input"),
                grad_params={
                    name: _decode(tensor, field=f"grad_params[{name!r}]")
                    for name, tensor in sorted(response.grad_params.items())
                },
                output=output,
            )

        return _Rpc("Gradient", request, parse)

    def _gradient_shared(
        self,
        array: npt.NDArray[Any],
        g: npt.NDArray[Any] | None,
        function: str,
        params: Mapping[str, Any],
        return_output: bool,
    ) -> _SharedRpc[VjpResult] | None:
        header = activation_pb2.GradientRequest(function=function, return_output=return_output)
        _header(array, out=header.input)
        if g is not None:
            _header(g, out=header.grad_output)
        _fill_params(header.params, params, array.dtype)
        inputs = [array] if g is None else [array, g]
        lent = self._lend(inputs, max(len(inputs), 2 if return_output else 1))
        if lent is None:
            return None
        release, segment, regions = lent
        # Results overwrite the inputs (the server reads them all first):
        # grad_input over x, the forward value over grad_output (or after x).
        request = activation_pb2.GradientSharedRequest(
            request=header, input=regions[0], grad_input=regions[0]
        )
        if g is not None:
            request.grad_output.CopyFrom(regions[1])
        if return_output:
            request.output.CopyFrom(regions[1])

        def parse(response: activation_pb2.GradientSharedResponse) -> VjpResult:
            output = None
            if return_output:
                output = _read_shared(segment, response.output, regions[1], array, field="output")
            return VjpResult(
                grad_input=_read_shared(
                    segment, response.grad_input, regions[0], array, field="grad_input"
                ),
                grad_params={
                    name: _decode(tensor, field=f"grad_params[{name!r}]")
                    for name, tensor in sorted(response.grad_params.items())
                },
                output=output,
            )

        return _SharedRpc(
            "GradientShared",
            request,
            parse,
            release,
            lambda: self._gradient_rpc(
                array, function, params, grad_output=g, return_output=return_output, shared=False
            ),
            array.size,
        )

    def _gradient_stream(
        self,
        array: npt.NDArray[Any],
        g: npt.NDArray[Any] | None,
        function: str,
        params: Mapping[str, Any],
        plan: ChunkPlan,
        return_output: bool,
    ) -> _StreamRpc[VjpResult]:
        tensors = {
            n: _as_dtype(v, array.dtype, name=f"parameter {n!r}")
            for n, v in params.items()
            if isinstance(v, np.ndarray | list | tuple)
        }
        scalars = {n: v for n, v in params.items() if n not in tensors}

        def requests() -> Iterator[Message]:
            for k in range(len(plan)):
                request = activation_pb2.GradientRequest(
                    function=function, return_output=return_output
                )
                wire.encode(plan.chunk(array, k), out=request.input)
                if g is not None:
                    wire.encode(plan.chunk(g, k), out=request.grad_output)
                _fill_params(request.params, scalars, array.dtype)
                _fill_params(
                    request.params,
                    {n: plan.param_chunk(n, t, k) for n, t in tensors.items()},
                    array.dtype,
                )
                yield request

        grad_input = np.empty(array.shape, dtype=array.dtype)
        output = np.empty(array.shape, dtype=array.dtype) if return_output else None
        # Parameter gradients of chunks are summed in float64, then rounded once.
        totals = {n: np.zeros(t.shape, dtype=np.float64) for n, t in tensors.items()}

        def accept(k: int, response: activation_pb2.GradientResponse) -> None:
            _place(plan, grad_input, k, response.grad_input, field="grad_input")
            if output is not None:
                _place(plan, output, k, response.output, field="output")
            for name in totals:
                if name not in response.grad_params:
                    raise InternalError(
                        f"malformed response from the server: chunk {k} has no "
                        f"grad_params[{name!r}]"
                    )
                piece = _decode(response.grad_params[name], field=f"grad_params[{name!r}]")
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

        return _StreamRpc("GradientStream", requests(), accept, _finisher(plan, result))

    def _softmax_rpc(
        self, x: Any, *, axis: int, temperature: float, log: bool, shared: bool = True
    ) -> _AnyRpc[npt.NDArray[Any]]:
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
        if shared and self._shared_pool is not None:
            header = activation_pb2.SoftmaxRequest(**fields)
            _header(array, out=header.input)
            lent = self._lend([array], 1)
            if lent is not None:
                release, segment, (region,) = lent
                return _SharedRpc(
                    "SoftmaxShared",
                    activation_pb2.SoftmaxSharedRequest(
                        request=header, input=region, output=region
                    ),
                    lambda response: _read_shared(
                        segment, response.output, region, array, field="output"
                    ),
                    release,
                    lambda: self._softmax_rpc(
                        array, axis=axis, temperature=temperature, log=log, shared=False
                    ),
                    array.size,
                )
        # The Softmax RPC names its axis: chunks split along the others.
        plan = None
        if self._streams(array):
            mixing_axis = _normalized_axis(int(axis), array.ndim)
            if mixing_axis is not None:
                plan = self._plan_along(array, {}, mixing_axis)
        if plan is not None:
            return self._softmax_stream(array, fields, plan)
        request = activation_pb2.SoftmaxRequest(**fields)
        wire.encode(array, out=request.input)
        return _Rpc(
            "Softmax",
            request,
            lambda response: _decode_like(response.output, array, field="output"),
        )

    def _softmax_stream(
        self, array: npt.NDArray[Any], fields: Mapping[str, Any], plan: ChunkPlan
    ) -> _StreamRpc[npt.NDArray[Any]]:
        def requests() -> Iterator[Message]:
            for k in range(len(plan)):
                request = activation_pb2.SoftmaxRequest(**fields)
                wire.encode(plan.chunk(array, k), out=request.input)
                yield request

        out = np.empty(array.shape, dtype=array.dtype)

        def accept(k: int, response: activation_pb2.SoftmaxResponse) -> None:
            _place(plan, out, k, response.output, field="output")

        return _StreamRpc("SoftmaxStream", requests(), accept, _finisher(plan, lambda: out))

    def _functions_rpc(self) -> _Rpc[list[FunctionInfo]]:
        return _Rpc(
            "ListFunctions",
            activation_pb2.ListFunctionsRequest(),
            lambda response: [_function_info(f) for f in response.functions],
        )

    def _server_info_rpc(self) -> _Rpc[ServerInfo]:
        return _Rpc("GetServerInfo", activation_pb2.GetServerInfoRequest(), _server_info)

    def _health_rpc(self, service: str) -> _Rpc[str]:
        if not isinstance(service, str):
            raise TypeError(f"service must be a str, got {type(service).__name__}")
        return _Rpc(
            "Check",
            health_pb2.HealthCheckRequest(service=service),
            _health_status,
            service="health",
        )


class Client(_BaseClient):
    """Blocking client of an actgrad server. numpy arrays in, numpy arrays out.

    Inputs may be numpy arrays of float32, float64, float16 or bfloat16
    (``ml_dtypes.bfloat16``), lists or scalars (which become float64); the result
    has the input's dtype and shape. Returned arrays are read-only views of the
    response bytes; ``.copy()`` one to modify it in place. Options are
    keyword-only; `timeout` (seconds) is the default deadline of every call and
    each method takes its own ``timeout=`` too::

        import numpy as np
        from actgrad import Client

        with Client("localhost:50051", timeout=10.0) as client:
            y = client.activate(np.linspace(-3, 3, 7, dtype=np.float32), "gelu")

    `max_message_bytes` sets the channel's send and receive limits; `options` are
    extra ``grpc`` channel arguments (they override ours on the same key).

    Security: `root_certificates` (PEM bytes of the CA that signed the server's
    certificate) turns on TLS; `certificate_chain` and `private_key` (PEM bytes)
    are the client certificate of mutual TLS; ``tls=True`` alone uses the system's
    roots. `token` is sent as ``authorization: Bearer <token>`` on every call
    (use it over TLS)::

        ca = Path("ca.pem").read_bytes()
        with Client("actgrad.internal:443", root_certificates=ca, token=token) as client:
            ...

    Calls that end in UNAVAILABLE (no server reachable, or one draining) are
    retried with exponential backoff (0.1 s doubling, at most 2 s) within the
    call's deadline, up to `max_attempts` attempts in all (1 turns it off, gRPC
    allows at most 5); no other status is retried.

    Inputs above `stream_threshold_bytes` (default 8 MiB) travel as a stream of
    chunks of about `chunk_bytes` (default 2 MiB) and are reassembled here, so a
    tensor of any size fits under the message limit. This is transparent:
    elementwise functions split anywhere, softmax along another axis than its
    own, prelu along axis 0. A stream that breaks raises; no partial result is
    returned.

    Same host: with ``shared_memory=True`` and a local target (``localhost``, a
    loopback address or ``unix:``), inputs of at least `shared_memory_min_bytes`
    (default 64 KiB) are handed over in POSIX shared memory instead of the
    message, in one call whatever their size (no streaming); inputs over the
    server's element limit (asked once with `server_info`) go in messages,
    streamed. The server must run with ``--allow-shared-memory`` as the same
    user; when it refuses (or is too old), the call goes in messages and this
    client stops trying (logged once; `shared_memory` turns False). The client
    owns its segments (``/dev/shm/actgrad-*``, mode 0600): it reuses a few and
    unlinks all of them on `close()` or at exit. Results are copies, never views
    of a segment::

        with Client("localhost:50051", shared_memory=True) as client:
            y = client.activate(big, "silu")
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: ChannelOptions | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            options=options,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            max_attempts=max_attempts,
            stream_threshold_bytes=stream_threshold_bytes,
            chunk_bytes=chunk_bytes,
            shared_memory=shared_memory,
            shared_memory_min_bytes=shared_memory_min_bytes,
        )
        if self._credentials is None:
            self._channel = grpc.insecure_channel(target, options=self._channel_options)
        else:
            self._channel = grpc.secure_channel(
                target, self._credentials, options=self._channel_options
            )
        self._stubs: dict[str, Any] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel and unlinks the shared-memory segments; idempotent.

        ``with Client() as c:`` calls it for you.
        """
        if not self._closed:
            self._closed = True
            self._stop_sharing("")
            self._channel.close()

    def _invoke(self, rpc: _AnyRpc[ResultT], timeout: float | None) -> ResultT:
        deadline = self._deadline(timeout)
        if isinstance(rpc, _NeedsCatalog):
            self._learn_catalog(self._invoke(self._functions_rpc(), deadline))
            return self._invoke(rpc.build(), deadline)
        if isinstance(rpc, _StreamRpc):
            return self._invoke_stream(rpc, deadline)
        if isinstance(rpc, _SharedRpc):
            return self._invoke_shared(rpc, deadline)
        stub = _stub(self._stubs, self._channel, rpc.service)
        try:
            response = getattr(stub, rpc.method)(rpc.request, **self._call_options(deadline))
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from exc
        return rpc.parse(response)

    def _invoke_shared(self, rpc: _SharedRpc[ResultT], deadline: float) -> ResultT:
        stub = _stub(self._stubs, self._channel, "activation")
        try:
            limit = self._shared_max_elements
            if limit is None:
                limit = self._learn_limits(self._invoke(self._server_info_rpc(), deadline))
            if rpc.elements <= limit:
                try:
                    response = getattr(stub, rpc.method)(
                        rpc.request, **self._call_options(deadline)
                    )
                except grpc.RpcError as exc:
                    error = from_grpc_error(exc)
                    if not self._shared_refused(error):
                        raise error from exc
                else:
                    return rpc.parse(response)
        finally:
            rpc.release()
        return self._invoke(rpc.fallback(), deadline)

    def _invoke_stream(self, rpc: _StreamRpc[ResultT], deadline: float) -> ResultT:
        stub = _stub(self._stubs, self._channel, "activation")
        call = getattr(stub, rpc.method)(rpc.requests, **self._call_options(deadline))
        received = 0
        try:
            for response in call:
                rpc.accept(received, response)
                received += 1
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from exc
        except BaseException:
            call.cancel()
            raise
        return rpc.finish(received)

    def activate(
        self, x: Any, function: str, /, *, timeout: float | None = None, **params: Any
    ) -> npt.NDArray[Any]:
        """Applies `function` (name or alias) to `x` with keyword parameters.

        Parameters map by Python type: bool, int, float, str, or an array/list
        (converted to x's dtype, e.g. prelu's ``slope``)::

            y = client.activate(x, "gelu", approximate="tanh")
            y = client.activate(x, "prelu", slope=np.array([0.25]))
        """
        return self._invoke(self._activate_rpc(x, function, params), timeout)

    def gradient(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """Returns ``grad_output * f'(x)``, the gradient with respect to `x`.

        `grad_output` (default: ones) is converted to x's dtype and must have x's
        shape; use `vjp` for parameter gradients::

            dx = client.gradient(x, "leaky_relu", grad_output=g, alpha=0.1)
        """
        rpc = self._gradient_rpc(x, function, params, grad_output=grad_output, return_output=False)
        return self._invoke(rpc, timeout).grad_input

    def vjp(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        return_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> VjpResult:
        """Vector-Jacobian product with parameter gradients (and the forward value).

        Example::

            r = client.vjp(x, "prelu", slope=s, return_output=True)
            r.grad_input, r.grad_params["slope"], r.output
        """
        rpc = self._gradient_rpc(
            x, function, params, grad_output=grad_output, return_output=return_output
        )
        return self._invoke(rpc, timeout)

    def softmax(
        self,
        x: Any,
        /,
        *,
        axis: int = -1,
        temperature: float = 1.0,
        log: bool = False,
        timeout: float | None = None,
    ) -> npt.NDArray[Any]:
        """Softmax of ``x / temperature`` along `axis` (log-softmax with ``log=True``).

        Example::

            p = client.softmax(logits, axis=-1, temperature=0.7)
        """
        return self._invoke(
            self._softmax_rpc(x, axis=axis, temperature=temperature, log=log), timeout
        )

    def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The server's function catalog.

        Example: ``[f.name for f in client.functions()]``.
        """
        return self._invoke(self._functions_rpc(), timeout)

    def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version, ONNX opset, execution providers and limits.

        Example: ``client.server_info().execution_providers``.
        """
        return self._invoke(self._server_info_rpc(), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of `service` ("" = the whole server), e.g. ``"SERVING"``.

        ``"NOT_SERVING"`` while the server warms up or drains. Health needs no token.
        An unknown service raises `NotFoundError`; an unreachable server
        `UnavailableError` (health checks are not retried)::

            ready = client.health() == "SERVING"
        """
        return self._invoke(self._health_rpc(service), timeout)


class AsyncClient(_BaseClient):
    """asyncio client with the same methods as `Client`, awaitable.

    It may be created anywhere; its channel is opened on the first call, inside
    the running event loop, and stays bound to that loop (one client per loop)::

        async with AsyncClient("localhost:50051") as client:
            y = await client.activate(x, "silu")
            p = await client.softmax(logits, temperature=0.7)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: ChannelOptions | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            options=options,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            max_attempts=max_attempts,
            stream_threshold_bytes=stream_threshold_bytes,
            chunk_bytes=chunk_bytes,
            shared_memory=shared_memory,
            shared_memory_min_bytes=shared_memory_min_bytes,
        )
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs: dict[str, Any] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel and unlinks the shared-memory segments; idempotent.

        ``async with`` calls it for you.
        """
        if not self._closed:
            self._closed = True
            self._stop_sharing("")
            if self._channel is not None:
                await self._channel.close(grace=None)

    def _connected_stub(self, service: str) -> Any:
        # grpc.aio binds a channel to the loop it is created in; made in __init__
        # outside a running loop, it would hang on another loop than asyncio.run's.
        loop = asyncio.get_running_loop()
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(
                    self._target, options=self._channel_options
                )
            else:
                self._channel = grpc.aio.secure_channel(
                    self._target, self._credentials, options=self._channel_options
                )
            self._stubs = {}
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "this AsyncClient is bound to the event loop of its first call; "
                "create one client per event loop"
            )
        return _stub(self._stubs, self._channel, service)

    async def _invoke(self, rpc: _AnyRpc[ResultT], timeout: float | None) -> ResultT:
        deadline = self._deadline(timeout)
        if isinstance(rpc, _NeedsCatalog):
            self._learn_catalog(await self._invoke(self._functions_rpc(), deadline))
            return await self._invoke(rpc.build(), deadline)
        if isinstance(rpc, _StreamRpc):
            return await self._invoke_stream(rpc, deadline)
        if isinstance(rpc, _SharedRpc):
            return await self._invoke_shared(rpc, deadline)
        stub = self._connected_stub(rpc.service)
        try:
            response = await getattr(stub, rpc.method)(rpc.request, **self._call_options(deadline))
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from exc
        return rpc.parse(response)

    async def _invoke_shared(self, rpc: _SharedRpc[ResultT], deadline: float) -> ResultT:
        try:
            stub = self._connected_stub("activation")
            limit = self._shared_max_elements
            if limit is None:
                limit = self._learn_limits(await self._invoke(self._server_info_rpc(), deadline))
            if rpc.elements <= limit:
                try:
                    response = await getattr(stub, rpc.method)(
                        rpc.request, **self._call_options(deadline)
                    )
                except grpc.RpcError as exc:
                    error = from_grpc_error(exc)
                    if not self._shared_refused(error):
                        raise error from exc
                else:
                    return rpc.parse(response)
        finally:
            rpc.release()
        return await self._invoke(rpc.fallback(), deadline)

    async def _invoke_stream(self, rpc: _StreamRpc[ResultT], deadline: float) -> ResultT:
        stub = self._connected_stub("activation")
        call = getattr(stub, rpc.method)(rpc.requests, **self._call_options(deadline))
        received = 0
        try:
            async for response in call:
                rpc.accept(received, response)
                received += 1
        except grpc.RpcError as exc:
            raise from_grpc_error(exc) from exc
        except BaseException:
            call.cancel()
            raise
        return rpc.finish(received)

    async def activate(
        self, x: Any, function: str, /, *, timeout: float | None = None, **params: Any
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.activate`: ``y = await client.activate(x, "gelu")``."""
        return await self._invoke(self._activate_rpc(x, function, params), timeout)

    async def gradient(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.gradient`: ``dx = await client.gradient(x, "tanh", grad_output=g)``."""
        rpc = self._gradient_rpc(x, function, params, grad_output=grad_output, return_output=False)
        return (await self._invoke(rpc, timeout)).grad_input

    async def vjp(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        return_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> VjpResult:
        """Awaitable `Client.vjp`: ``r = await client.vjp(x, "prelu", slope=s)``."""
        rpc = self._gradient_rpc(
            x, function, params, grad_output=grad_output, return_output=return_output
        )
        return await self._invoke(rpc, timeout)

    async def softmax(
        self,
        x: Any,
        /,
        *,
        axis: int = -1,
        temperature: float = 1.0,
        log: bool = False,
        timeout: float | None = None,
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.softmax`: ``p = await client.softmax(logits, axis=0)``."""
        return await self._invoke(
            self._softmax_rpc(x, axis=axis, temperature=temperature, log=log), timeout
        )

    async def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """Awaitable `Client.functions`: ``fs = await client.functions()``."""
        return await self._invoke(self._functions_rpc(), timeout)

    async def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """Awaitable `Client.server_info`: ``info = await client.server_info()``."""
        return await self._invoke(self._server_info_rpc(), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """Awaitable `Client.health`: ``ready = await client.health() == "SERVING"``."""
        return await self._invoke(self._health_rpc(service), timeout)


# -- helpers of the base (no I/O) ------------------------------------------------


def _stub(stubs: dict[str, Any], channel: grpc.Channel | grpc.aio.Channel, service: str) -> Any:
    """The stub of `service` on `channel`, made on first use and kept in `stubs`."""
    stub = stubs.get(service)
    if stub is None:
        # The generated stubs are untyped; `_invoke` looks their methods up by name.
        if service == "health":
            stub = health_pb2_grpc.HealthStub(channel)
        else:
            stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        stubs[service] = stub
    return stub


def _check_pem(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or not value.strip():
        raise TypeError(f"{name} must be non-empty PEM bytes, got {type(value).__name__}")
    return value


def _channel_credentials(
    tls: bool | None,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for a plaintext channel.

    `tls=None` means TLS when any certificate is given; `tls=True` alone verifies
    the server against the system's roots.
    """
    roots = _check_pem(root_certificates, "root_certificates")
    chain = _check_pem(certificate_chain, "certificate_chain")
    key = _check_pem(private_key, "private_key")
    if (chain is None) != (key is None):
        raise ValueError("certificate_chain and private_key must be given together")
    wants_tls = roots is not None or chain is not None
    if tls is None:
        tls = wants_tls
    elif not isinstance(tls, bool):
        raise TypeError(f"tls must be a bool or None, got {type(tls).__name__}")
    if not tls:
        if wants_tls:
            raise ValueError("tls=False contradicts the certificates given")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _check_token(token: Any) -> str:
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    if not token or any(not (0x21 <= ord(ch) <= 0x7E) for ch in token):
        raise ValueError("token must be non-empty printable ASCII without spaces")
    return token


def _retry_options(max_attempts: Any, max_message_bytes: int) -> dict[str, Any]:
    """Channel options of the retry policy: UNAVAILABLE only, exponential backoff.

    Only UNAVAILABLE (no server, or one draining) is retried: every other code is
    an answer that a retry would repeat. Every RPC of the service is idempotent.
    """
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise TypeError(f"max_attempts must be an int, got {type(max_attempts).__name__}")
    if not 1 <= max_attempts <= _MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts must be in 1..{_MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
    if max_attempts == 1:
        return {"grpc.enable_retries": 0}
    config = {
        "methodConfig": [
            {
                "name": [{"service": _ACTIVATION_SERVICE}],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return {
        "grpc.enable_retries": 1,
        "grpc.service_config": json.dumps(config),
        # A call is retried only while its request fits the retry buffer (256 KiB
        # by default); large tensors need the buffer as large as a message.
        "grpc.per_rpc_retry_buffer_size": max_message_bytes,
    }


def _health_status(response: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _check_timeout(timeout: Any, *, name: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(timeout).__name__}")
    value = float(timeout)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0 seconds, got {timeout!r}")
    return value


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
    is_bfloat16 = array.dtype == wire.dtype_info("bfloat16").numpy
    if array.dtype.kind not in "fiu" and not is_bfloat16:
        raise TypeError(f"{name}: {array.dtype} values cannot be converted to {dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


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


def _place(
    plan: ChunkPlan, out: npt.NDArray[Any], k: int, tensor: tensor_pb2.Tensor, *, field: str
) -> None:
    """Decodes chunk k's result and writes it into `out`; a wrong chunk is INTERNAL."""
    if k >= len(plan):
        raise InternalError(f"malformed response from the server: more than {len(plan)} chunks")
    piece = _decode(tensor, field=field)
    if piece.dtype != out.dtype:
        raise InternalError(
            f"malformed response from the server: chunk {k} {field} is {piece.dtype}, "
            f"expected {out.dtype}"
        )
    try:
        plan.place(out, k, piece)
    except ValueError as exc:
        raise InternalError(f"malformed response from the server: {field} {exc}") from exc


def _finisher(plan: ChunkPlan, result: Callable[[], ResultT]) -> Callable[[int], ResultT]:
    """`finish` of a stream: the result only when every chunk was answered."""

    def finish(received: int) -> ResultT:
        if received != len(plan):
            # Never hand back a partly filled array as if it were complete.
            raise InternalError(
                f"the stream ended after {received} of {len(plan)} chunks; no result"
            )
        return result()

    return finish


def _header(array: npt.NDArray[Any], *, out: tensor_pb2.Tensor) -> None:
    """dtype and shape of a tensor whose bytes travel in shared memory."""
    out.dtype = wire.dtype_info(array.dtype).wire  # type: ignore[assignment]
    out.shape[:] = array.shape


def _read_shared(
    segment: _shm.Segment,
    got: activation_pb2.SharedMemoryRegion,
    sent: activation_pb2.SharedMemoryRegion,
    like: npt.NDArray[Any],
    *,
    field: str,
) -> npt.NDArray[Any]:
    """A copy of the result the server wrote into `sent` (the segment is reused)."""
    if got != sent:
        raise InternalError(
            f"malformed response from the server: {field} names another region than the one sent"
        )
    return segment.array(sent.offset, like.dtype, like.shape).copy()


def _decode(tensor: tensor_pb2.Tensor, *, field: str) -> npt.NDArray[Any]:
    try:
        return wire.decode(tensor, field=field)
    except wire.TensorError as exc:
        raise InternalError(f"malformed response from the server: {exc}") from exc


def _decode_like(
    tensor: tensor_pb2.Tensor, like: npt.NDArray[Any], *, field: str
) -> npt.NDArray[Any]:
    """Decodes a result that the contract says has the input's dtype and shape."""
    array = _decode(tensor, field=field)
    if array.dtype != like.dtype or array.shape != like.shape:
        raise InternalError(
            f"malformed response from the server: {field} is {array.dtype}{list(array.shape)}, "
            f"expected {like.dtype}{list(like.shape)}"
        )
    return array


def _enum_label(name: str, prefix: str) -> str:
    return name[len(prefix) :].lower() if name.startswith(prefix) else name.lower()


def _dtype_name(value: int) -> str:
    try:
        return wire.dtype_info(value).name
    except KeyError:
        pass
    try:
        return _enum_label(tensor_pb2.DType.Name(value), _DTYPE_PREFIX)
    except ValueError:
        return f"dtype_{value}"


def _param_value(value: activation_pb2.ParamValue, *, field: str) -> ParamDefault:
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "tensor":
        return _decode(value.tensor, field=field).tolist()  # type: ignore[no-any-return]
    result: ParamDefault = getattr(value, kind)
    return result


def _param_info(param: activation_pb2.ParamInfo, *, function: str) -> ParamInfo:
    try:
        type_name = activation_pb2.ParamType.Name(param.type)
    except ValueError:
        type_name = str(int(param.type))
    default = None
    if param.HasField("default"):
        default = _param_value(param.default, field=f"{function}.{param.name}.default")
    return ParamInfo(
        name=param.name,
        type=_enum_label(type_name, _PARAM_TYPE_PREFIX),
        description=param.description,
        required=param.required,
        default=default,
        minimum=param.minimum if param.HasField("minimum") else None,
        maximum=param.maximum if param.HasField("maximum") else None,
        minimum_exclusive=param.minimum_exclusive,
        maximum_exclusive=param.maximum_exclusive,
        choices=list(param.choices),
    )


def _function_info(info: activation_pb2.FunctionInfo) -> FunctionInfo:
    return FunctionInfo(
        name=info.name,
        aliases=list(info.aliases),
        summary=info.summary,
        formula=info.formula,
        formula_latex=info.formula_latex,
        gradient_note=info.gradient_note,
        params=[_param_info(p, function=info.name) for p in info.params],
        elementwise=info.elementwise,
        dtypes=[_dtype_name(d) for d in info.dtypes],
        axis_param=info.axis_param or None,
    )


def _server_info(response: activation_pb2.GetServerInfoResponse) -> ServerInfo:
    limits = response.limits
    return ServerInfo(
        version=response.version,
        onnx_opset=response.onnx_opset,
        onnxruntime_version=response.onnxruntime_version,
        execution_providers=list(response.execution_providers),
        limits=Limits(
            max_message_bytes=limits.max_message_bytes,
            max_elements=limits.max_elements,
            max_rank=limits.max_rank,
            max_concurrent_rpcs=limits.max_concurrent_rpcs,
        ),
    )
