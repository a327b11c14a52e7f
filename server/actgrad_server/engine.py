"""Runs catalog calls on onnxruntime: execution providers, the session cache, dtypes.

Sessions are built once per (function, forward|gradient, graph dtype, structural
parameters) and kept in a bounded LRU; per-request scalars (alpha, beta,
temperature, ...) are graph inputs, so a stream of distinct values reuses one
session. Nothing here imports grpc.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from actgrad.wire import BFLOAT16, ChunkPlan, dtype_info, plan_chunks
from actgrad_server import graphs
from actgrad_server.catalog import CATALOG, Call, bind
from actgrad_server.errors import ConfigError

__all__ = [
    "CacheInfo",
    "DenseResult",
    "Engine",
    "GradientResult",
    "Sink",
    "Source",
    "WouldBuild",
    "no_builds",
    "resolve_providers",
]

_LOGGER = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_BFLOAT16 = BFLOAT16

Array = npt.NDArray[Any]


class Source(Protocol):
    """An input tensor outside the process's memory, read a piece at a time (a
    client's shared-memory region, `actgrad_server.shm`); the engine reads it chunk
    by chunk where its chunks are runs of elements, and whole otherwise."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def read(self, start: int, stop: int) -> Array:
        """Elements [start, stop) of the C-ordered tensor: a 1-d array of our own."""
        ...

    def array(self) -> Array:
        """The whole tensor, in our own memory."""
        ...


class Sink(Protocol):
    """Where a result goes instead of an array (a client's shared-memory region)."""

    def write(self, start: int, piece: Array) -> None:
        """`piece`, C-ordered, at element `start` of the result."""
        ...

    def write_all(self, result: Array) -> None:
        """The whole result."""
        ...


@dataclass(frozen=True)
class GradientResult:
    """A vector-Jacobian product; `grad_input` and `output` are None where they were
    written into a `Sink` (or, for `output`, not asked for)."""

    grad_input: Array | None
    grad_params: Mapping[str, Array] = field(default_factory=dict)
    output: Array | None = None


@dataclass(frozen=True)
class DenseResult:
    """A dense layer's results, each in the input's dtype; None where not asked for."""

    output: Array | None = None
    net_output: Array | None = None
    grad_input: Array | None = None
    grad_weight: Array | None = None
    grad_bias: Array | None = None
    grad_params: Mapping[str, Array] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheInfo:
    size: int
    capacity: int
    builds: int


def resolve_providers(device: str, available: Sequence[str] | None = None) -> list[str]:
    """Maps --device to an onnxruntime provider list, or raises ConfigError."""
    available = list(ort.get_available_providers() if available is None else available)
    if device == "cpu":
        return [_CPU]
    if device == "cuda":
        if _CUDA not in available:
            raise ConfigError(
                "--device cuda: onnxruntime offers no CUDAExecutionProvider here "
                f"(available: {', '.join(available)}); install onnxruntime-gpu with a "
                "matching CUDA runtime, or use --device cpu/auto"
            )
        return [_CUDA, _CPU]
    if device == "auto":
        if _CUDA in available:
            _LOGGER.info("device auto: using CUDAExecutionProvider")
            return [_CUDA, _CPU]
        _LOGGER.info("device auto: CUDAExecutionProvider not available, using the CPU")
        return [_CPU]
    raise ConfigError(f"unknown device {device!r}")


def _graph_dtype(dtype: np.dtype[Any]) -> str:
    # The dtype table says which graph computes each dtype (bfloat16: float32's).
    try:
        return dtype_info(dtype).graph
    except KeyError:
        raise TypeError(f"unsupported dtype {dtype}") from None


class WouldBuild(Exception):
    """A call needs a session not built yet, in a context that may not wait for a build
    (`no_builds`): the caller runs it again where it may."""


# Set while a call runs where a build (milliseconds to a tenth of a second) would hold
# up others: the HTTP event loop (`http.runner`).
_NO_BUILDS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "actgrad_no_builds", default=False
)


@contextlib.contextmanager
def no_builds() -> Iterator[None]:
    """Within this block, a call that needs a session not yet built raises WouldBuild
    before it computes anything (a cache hit costs nothing more)."""
    token = _NO_BUILDS.set(True)
    try:
        yield
    finally:
        _NO_BUILDS.reset(token)


class Engine:
    """Evaluates validated calls; safe to use from many threads."""

    def __init__(
        self,
        *,
        device: str = "auto",
        cache_size: int = 128,
        intra_op_threads: int = 1,
        chunk_elements: int = 1 << 16,
        available_providers: Sequence[str] | None = None,
    ) -> None:
        self._chunk_elements = chunk_elements
        self._providers = resolve_providers(device, available_providers)
        self._capacity = cache_size
        self._options = ort.SessionOptions()
        # Pinned so that results do not change with the fusions a level enables.
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self._options.intra_op_num_threads = intra_op_threads
        # No onnxruntime arena per session: each grows to its session's peak and never
        # shrinks, and with dozens of sessions that peak stays resident after load.
        # Tensors then come from malloc, which keeps large buffers for reuse while
        # busy and gives them back when idle (_malloc).
        self._options.enable_cpu_mem_arena = False
        self._options.inter_op_num_threads = 1
        self._options.log_severity_level = 3
        self._sessions: OrderedDict[tuple[Any, ...], ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()
        self._builds = 0
        self._providers_in_use: list[str] = list(self._providers)

    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions actually use."""
        return list(self._providers_in_use)

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(len(self._sessions), self._capacity, self._builds)

    def warm_up(self, dtypes: Sequence[str] = ("float32",)) -> None:
        """Builds and runs the forward and gradient graph of every function, for a
        rank-2 input of each dtype and each of its structural values (gelu's
        `approximate`, softmax's `log` and axis): runtime values need no session of
        their own, so afterwards any call of these dtypes and rank builds nothing.

        Dense and gradient-flow sessions are left to their first call, which builds
        one in 0.5-4 ms (dense) or 50-170 ms (a 30-layer probe): one per function
        would double the warm-up's sessions and crowd the cache (docs/performance.md).
        """
        for function in CATALOG:
            for dtype_name in dtypes:
                dtype = np.dtype(dtype_name)
                x = np.linspace(-3.0, 3.0, 8, dtype=dtype).reshape(2, 4)
                for variant in function.structural_variants(x.ndim):
                    params = {**function.sample_params(dtype), **variant}
                    call = bind(function, params, x_shape=x.shape, x_dtype=x.dtype)
                    self.activate(call, x)
                    self.gradient(call, x, None)
        _LOGGER.info(
            "warm-up done: %d sessions on %s",
            len(self._sessions),
            ", ".join(self._providers_in_use),
        )

    def _session(self, key: tuple[Any, ...], build: Any) -> ort.InferenceSession:
        # A hit takes no lock (every RPC thread took it on every call): each
        # OrderedDict operation is atomic under the GIL (the keys are tuples of str,
        # int, float and tuples, hashed and compared in C), and a key evicted between
        # the two only skips its move to the end.
        session = self._sessions.get(key)
        if session is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager per call
                self._sessions.move_to_end(key)
            except KeyError:
                pass
            return session
        if _NO_BUILDS.get():
            raise WouldBuild(key)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            # Built under the lock: a build takes milliseconds and happens once per
            # key, and this stops a burst of identical requests building it N times.
            model = build()
            session = ort.InferenceSession(
                model.SerializeToString(), sess_options=self._options, providers=self._providers
            )
            self._builds += 1
            self._providers_in_use = session.get_providers()
            self._sessions[key] = session
            while len(self._sessions) > self._capacity:
                self._sessions.popitem(last=False)
            _LOGGER.debug("built session %s", key)
            return session

    @staticmethod
    def _prepare(call: Call, x: Array) -> tuple[Array, str]:
        graph_dtype = _graph_dtype(x.dtype)
        if x.dtype == _BFLOAT16:
            x = x.astype(np.float32)
        # A function along an axis (softmax) takes a 0-d input as one element along
        # one axis, as PyTorch does.
        if call.function.axis_param is not None and x.ndim == 0:
            x = x.reshape(1)
        return x, graph_dtype

    @overload
    def activate(self, call: Call, x: Array | Source) -> Array: ...
    @overload
    def activate(self, call: Call, x: Array | Source, *, out: Sink) -> None: ...
    @overload
    def activate(self, call: Call, x: Array | Source, *, out: Sink | None) -> Array | None: ...
    def activate(self, call: Call, x: Array | Source, *, out: Sink | None = None) -> Array | None:
        """Forward value of `call` at `x`, in x's dtype and shape; written into `out`
        (and None returned) when given."""
        # Arrays in and out (nearly every call) skip the planning of a streamed one.
        plan = None
        if out is not None or not isinstance(x, np.ndarray):
            plan = self._streaming_plan(call, x, (out,))
        if plan is not None:
            (y,), _ = self._evaluate_plan(
                call,
                _graph_dtype(x.dtype),
                plan,
                x,
                None,
                forward=True,
                with_output=False,
                sinks=(out,),
            )
            return y
        x = _whole(x)
        if x.size == 0:
            y = np.empty(x.shape, dtype=x.dtype)
        else:
            xg, graph_dtype = self._prepare(call, x)
            (y,), _ = self._evaluate(call, graph_dtype, xg, None, forward=True, with_output=False)
            y = _finish(y, x.dtype, x.shape)
        return _deliver(y, out)

    def gradient(
        self,
        call: Call,
        x: Array | Source,
        grad_output: Array | Source | None,
        *,
        with_output: bool = False,
        grad_input_out: Sink | None = None,
        output_out: Sink | None = None,
    ) -> GradientResult:
        """Vector-Jacobian product at `x` with `grad_output` (ones when None); the
        input's gradient (and the output) written into the sinks given."""
        sinks = (grad_input_out, output_out if with_output else None)
        plan = None
        if (
            grad_input_out is not None
            or output_out is not None
            or not isinstance(x, np.ndarray)
            or not (grad_output is None or isinstance(grad_output, np.ndarray))
        ):
            plan = self._streaming_plan(call, x, sinks)
        if plan is not None:
            main, params = self._evaluate_plan(
                call,
                _graph_dtype(x.dtype),
                plan,
                x,
                grad_output,
                forward=False,
                with_output=with_output,
                sinks=sinks,
            )
            return GradientResult(
                grad_input=main[0],
                grad_params={n: params[n].astype(t.dtype) for n, t in call.tensors.items()},
                output=main[1] if with_output else None,
            )
        x = _whole(x)
        grad_output = None if grad_output is None else _whole(grad_output)
        if x.size == 0:
            empty = np.empty(x.shape, dtype=x.dtype)
            return GradientResult(
                _deliver(empty, grad_input_out),
                {n: np.zeros(t.shape, dtype=t.dtype) for n, t in call.tensors.items()},
                _deliver(empty.copy(), output_out) if with_output else None,
            )
        xg, graph_dtype = self._prepare(call, x)
        g = None
        if grad_output is not None:
            g = grad_output.astype(np.float32) if grad_output.dtype == _BFLOAT16 else grad_output
            g = g.reshape(xg.shape)
        whole, whole_params = self._evaluate(
            call, graph_dtype, xg, g, forward=False, with_output=with_output
        )
        return GradientResult(
            grad_input=_deliver(_finish(whole[0], x.dtype, x.shape), grad_input_out),
            grad_params={
                n: _finish(whole_params[n], t.dtype, t.shape) for n, t in call.tensors.items()
            },
            output=_deliver(_finish(whole[1], x.dtype, x.shape), output_out)
            if with_output
            else None,
        )

    def dense(
        self,
        call: Call | None,
        x: Array,
        weight: Array,
        bias: Array | None,
        grad_output: Array | None = None,
        *,
        gradient: bool = False,
        with_output: bool = True,
    ) -> DenseResult:
        """A dense layer f(x . weight^T + bias) at `x` [..., in] with `weight` [out, in].

        `call` binds the activation (None: the bare net output) for an input of the
        net output's shape; shapes are the caller's to check. Forward: output and
        net_output; with `gradient`, the VJP with `grad_output` (ones when None) and
        the output only when `with_output`. One session per (activation, direction,
        graph dtype, structural parameters, rank); the weights are inputs.
        """
        dtype = x.dtype
        graph_dtype = _graph_dtype(dtype)
        out_features = weight.shape[0]
        z_shape = (*x.shape[:-1], out_features)
        if bias is None:
            bias = np.zeros((out_features,), dtype=dtype)

        def widen(array: Array) -> Array:
            return array.astype(np.float32) if array.dtype == _BFLOAT16 else array

        feeds: dict[str, Any] = {"x": widen(x), "weight": widen(weight), "bias": widen(bias)}
        static: tuple[tuple[str, Any], ...] = ()
        function = None
        tensors: Mapping[str, Array] = {}
        if call is not None:
            function = call.function
            static = call.static
            tensors = call.tensors
            for scalar in function.runtime_params:
                feeds[scalar] = np.asarray(call.scalars[scalar], dtype=np.float64)
            for tensor_name, tensor in tensors.items():
                feeds[tensor_name] = widen(tensor)
        name = "" if function is None else function.name
        if not gradient:
            key: tuple[Any, ...] = ("dense", name, "forward", graph_dtype, static, x.ndim)
            session = self._session(
                key,
                lambda: graphs.build_dense(
                    function, graph_dtype, gradient=False, x_rank=x.ndim, **dict(static)
                ),
            )
            y, z = session.run(["y", "z"], feeds)
            return DenseResult(
                output=_finish(y, dtype, z_shape), net_output=_finish(z, dtype, z_shape)
            )
        static = (*static, *((f"{n}_shape", tuple(t.shape)) for n, t in tensors.items()))
        key = ("dense", name, "gradient", graph_dtype, static, x.ndim, with_output)
        session = self._session(
            key,
            lambda: graphs.build_dense(
                function,
                graph_dtype,
                gradient=True,
                with_output=with_output,
                x_rank=x.ndim,
                **dict(static),
            ),
        )
        if grad_output is None:
            feeds["grad_output"] = np.ones(z_shape, dtype=feeds["x"].dtype)
        else:
            feeds["grad_output"] = widen(grad_output)
        names = ["grad_input", "grad_weight", "grad_bias", "z", *(["y"] if with_output else [])]
        params = [f"grad_{n}" for n in tensors]
        results = dict(zip(names + params, session.run(names + params, feeds), strict=True))
        return DenseResult(
            output=_finish(results["y"], dtype, z_shape) if with_output else None,
            net_output=_finish(results["z"], dtype, z_shape),
            grad_input=_finish(results["grad_input"], dtype, x.shape),
            grad_weight=_finish(results["grad_weight"], dtype, weight.shape),
            grad_bias=_finish(results["grad_bias"], dtype, (out_features,)),
            grad_params={
                n: _finish(results[f"grad_{n}"], t.dtype, t.shape) for n, t in tensors.items()
            },
        )

    def gradient_flow(
        self,
        call: Call,
        weights: Sequence[Array],
        x: Array,
        g: Array,
        *,
        residual: bool,
        normalize: bool,
    ) -> dict[str, Array]:
        """Per-layer statistics of a deep square network (graphs/flow.py), as float64.

        `weights` (each [n, n]), `x` and `g` ([B, n]) are of the graph's dtype (float32
        or float64). One session per (function, structural parameters, dtype, depth,
        residual, normalize); the weights are inputs.
        """
        function = call.function
        graph_dtype = _graph_dtype(x.dtype)
        depth = len(weights)
        key = ("flow", function.name, graph_dtype, call.static, depth, residual, normalize)
        session = self._session(
            key,
            lambda: graphs.build_flow(
                function,
                graph_dtype,
                depth=depth,
                residual=residual,
                normalize=normalize,
                **dict(call.static),
            ),
        )
        feeds: dict[str, Any] = {"x": x, "g": g}
        feeds.update({f"w{layer}": w for layer, w in enumerate(weights, start=1)})
        for scalar in function.runtime_params:
            feeds[scalar] = np.asarray(call.scalars[scalar], dtype=np.float64)
        names = list(graphs.FLOW_OUTPUTS)
        results = session.run(names, feeds)
        return {n: np.asarray(r, dtype=np.float64) for n, r in zip(names, results, strict=True)}

    def _plan(
        self, call: Call, size: int, shape: tuple[int, ...], itemsize: int
    ) -> ChunkPlan | None:
        if size <= self._chunk_elements:
            return None
        return plan_chunks(
            shape,
            itemsize,
            chunk_bytes=self._chunk_elements * itemsize,
            elementwise=call.function.elementwise,
            mixing_axis=call.mixing_axis,
            tensor_params={n: t.shape for n, t in call.tensors.items()},
        )

    def _streaming_plan(
        self, call: Call, x: Array | Source, sinks: Sequence[Sink | None]
    ) -> ChunkPlan | None:
        """The plan for reading sources and writing sinks chunk by chunk, or None.

        For a call with some tensor a Source or a Sink (the others are arrays, as
        always): where every chunk is one run of elements (so one read or write
        each) and the tensor is computed in its own dtype (bfloat16, computed in
        float32, is widened whole).
        """
        if not dtype_info(x.dtype).has_graph or len(x.shape) == 0:
            return None
        size = int(np.prod(x.shape, dtype=np.int64))
        plan = self._plan(call, size, x.shape, x.dtype.itemsize)
        return plan if plan is not None and plan.contiguous else None

    def _evaluate_plan(
        self,
        call: Call,
        graph_dtype: str,
        plan: ChunkPlan,
        x: Array | Source,
        g: Array | Source | None,
        *,
        forward: bool,
        with_output: bool,
        sinks: Sequence[Sink | None] = (),
    ) -> tuple[list[Array | None], dict[str, Array]]:
        """Chunk by chunk: each chunk read from its source (or sliced from its array),
        computed while it is in cache, and placed into an output array, or written to
        the sink given for that output (None where none is): a tensor in a client's
        shared memory is never copied whole into the server's, nor its result out."""
        outputs: list[Array | None] = []
        targets: list[Sink | None] = []
        totals = {n: np.zeros(t.shape, dtype=np.float64) for n, t in call.tensors.items()}
        for k in range(len(plan)):
            tensors = {n: plan.param_chunk(n, t, k) for n, t in call.tensors.items()}
            gk = None if g is None else _chunk(plan, g, k)
            main, params = self._run(
                call, graph_dtype, _chunk(plan, x, k), gk, tensors, forward, with_output
            )
            if k == 0:
                targets = [sinks[i] if i < len(sinks) else None for i in range(len(main))]
                outputs = [
                    np.empty(x.shape, dtype=m.dtype) if sink is None else None
                    for m, sink in zip(main, targets, strict=True)
                ]
            for out, sink, piece in zip(outputs, targets, main, strict=True):
                if sink is not None:
                    sink.write(plan.span(k)[0], piece)
                elif out is not None:
                    plan.place(out, k, piece)
            for name, piece in params.items():
                plan.place_param(totals[name], name, k, piece)
        return outputs, {n: totals[n].astype(graph_dtype) for n in totals}

    def _evaluate(
        self,
        call: Call,
        graph_dtype: str,
        x: Array,
        g: Array | None,
        *,
        forward: bool,
        with_output: bool,
    ) -> tuple[list[Array], dict[str, Array]]:
        """Runs the graph whole, or chunk by chunk for large inputs.

        Chunking bounds the memory of a graph's intermediate tensors (a gelu
        gradient has dozens) and keeps them in cache; results are the same
        because every split is along axes the function does not mix.
        """
        plan = self._plan(call, x.size, x.shape, x.itemsize)
        if plan is None:
            return self._run(call, graph_dtype, x, g, call.tensors, forward, with_output)
        outputs, params = self._evaluate_plan(
            call, graph_dtype, plan, x, g, forward=forward, with_output=with_output
        )
        # Without sinks every output is an array.
        return [out for out in outputs if out is not None], params

    def _run(
        self,
        call: Call,
        graph_dtype: str,
        x: Array,
        g: Array | None,
        tensors: Mapping[str, Array],
        forward: bool,
        with_output: bool,
    ) -> tuple[list[Array], dict[str, Array]]:
        function = call.function
        name = function.name
        feeds: dict[str, Any] = {"x": x}
        for scalar in function.runtime_params:
            feeds[scalar] = np.asarray(call.scalars[scalar], dtype=np.float64)
        for tensor_name, tensor in tensors.items():
            feeds[tensor_name] = tensor.astype(graph_dtype) if tensor.dtype == _BFLOAT16 else tensor
        # One graph per rank: a ranked graph can pass onnx.checker's full check.
        static = (*call.static, ("x_rank", x.ndim))
        if forward:
            key: tuple[Any, ...] = (name, "forward", graph_dtype, static)
            session = self._session(
                key, lambda: graphs.build_forward(function, graph_dtype, **dict(static))
            )
            return session.run(["y"], feeds), {}
        static = (*static, *((f"{n}_shape", tuple(t.shape)) for n, t in tensors.items()))
        key = (name, "gradient", graph_dtype, static, with_output)
        session = self._session(
            key,
            lambda: graphs.build_gradient(
                function, graph_dtype, with_output=with_output, **dict(static)
            ),
        )
        feeds["grad_output"] = np.ones(x.shape, dtype=x.dtype) if g is None else g
        names = ["grad_input", *(["y"] if with_output else [])]
        params = [f"grad_{n}" for n in tensors]
        results = session.run(names + params, feeds)
        main = results[: len(names)]
        return main, dict(zip(tensors, results[len(names) :], strict=True))


def _whole(x: Array | Source) -> Array:
    return x if isinstance(x, np.ndarray) else x.array()


def _chunk(plan: ChunkPlan, x: Array | Source, k: int) -> Array:
    if isinstance(x, np.ndarray):
        return plan.chunk(x, k)
    start, stop = plan.span(k)
    return x.read(start, stop).reshape(plan.chunk_shape(k))


def _deliver(result: Array, sink: Sink | None) -> Array | None:
    if sink is None:
        return result
    sink.write_all(result)
    return None


def _finish(result: Array, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Array:
    if result.dtype != dtype:
        result = result.astype(dtype)
    if result.shape != shape:
        result = result.reshape(shape)
    return result
