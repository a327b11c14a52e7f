"""The Open Inference Protocol's operations on plain values, for every front end.

Each operation takes and returns str, numbers, numpy arrays and the dataclasses below,
and raises the domain errors of `actgrad_server.errors`; none knows protobuf, gRPC or
HTTP. A front end converts its wire form to these values and back, nothing more (the
gRPC one is `oip/servicer.py`), the way MLServer's REST and gRPC servers share one
DataPlane. Tensors arrive decoded: a front end reads a tensor's bytes or numbers with
`DataPlane.input_dtype`, `DataPlane.check_input_shape` and `DataPlane.from_bytes`, so
that every front end applies the same datatypes and limits.

The statistics (`ModelStatistics`) are counted here, so that every front end adds to
the same table: per model (canonical name) and version, successes and failures with
their durations, and where the time of a request went as far as we measure it (see
`InferStatistics`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from actgrad import __version__
from actgrad.wire import TensorError, check_shape, to_float_array
from actgrad_server import catalog
from actgrad_server.config import Limits
from actgrad_server.engine import Engine, WouldBuild
from actgrad_server.errors import InvalidArgument, NotFound
from actgrad_server.oip import model_table as models

__all__ = [
    "EXTENSIONS",
    "SERVER_NAME",
    "DataPlane",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferStatistics",
    "ModelIndexEntry",
    "ModelMetadata",
    "ModelStatistics",
    "ParameterValue",
    "RequestedOutput",
    "ServerMetadata",
    "StatisticDuration",
    "TensorMetadata",
]

SERVER_NAME = "actgrad"
# The protocol extensions served (Triton's names). Not "model_repository": of it only the
# index is served, and a client that sees it may try to load or unload models.
EXTENSIONS = ("model_configuration", "parameters", "statistics")
# Triton's standard request parameters are scheduling hints for its own queue; a
# generic client may send them, and they mean nothing to a stateless function.
_SCHEDULING_PARAMS = frozenset({"priority", "timeout"})
# A model's state in the repository index (Triton's names).
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
_NOT_READY_REASON = "the server is not ready (warming up or draining)"

Array = npt.NDArray[Any]
ParameterValue = bool | int | float | str
"""A request, input or output parameter's value (the protocol's parameter choices)."""


# -- values -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class TensorMetadata:
    """One tensor of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """A model's signature. The protocol gives each tensor one datatype and one shape:
    `inputs` and `outputs` say FP32 and [-1]; `parameters` says what the model accepts
    beyond that (every datatype, any rank; see `DataPlane.accepts`)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Tensor:
    """A named tensor whose datatype and shape are its array's."""

    name: str
    data: Array

    @property
    def datatype(self) -> str:
        return models.datatype_of(self.data.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(frozen=True)
class InferInput(_Tensor):
    """One decoded input tensor."""

    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    """One inference request. `outputs` empty: every output of the model. `started_ns`:
    when the front end began reading the request (`time.perf_counter_ns()`), so that the
    statistics count its decoding too; None counts from the call to `infer`. A parameter
    None was sent without a value (refused)."""

    model_name: str
    inputs: Sequence[InferInput]
    model_version: str = ""
    id: str = ""
    parameters: Mapping[str, ParameterValue | None] = field(default_factory=dict)
    outputs: Sequence[RequestedOutput] = ()
    started_ns: int | None = None


@dataclass(frozen=True)
class InferOutput(_Tensor):
    """One output tensor (C-contiguous, little-endian)."""


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[InferOutput, ...]


@dataclass(frozen=True)
class ModelIndexEntry:
    """One model of the repository index: READY or UNAVAILABLE (with the reason)."""

    name: str
    version: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class StatisticDuration:
    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class InferStatistics:
    """Where requests' time went. `success` and `fail` span a request from the moment its
    front end began reading it (`InferRequest.started_ns`) to its outputs, before the
    front end encodes them. `compute_input`: from then until the engine is called
    (decoding, checks, binding parameters); `compute_infer`: the engine's call (a first
    call with new static values includes building its session); `compute_output`:
    laying out the outputs. `queue` is not measured (the front end's thread pool queue
    is not visible here) and stays 0."""

    success: StatisticDuration = StatisticDuration()
    fail: StatisticDuration = StatisticDuration()
    queue: StatisticDuration = StatisticDuration()
    compute_input: StatisticDuration = StatisticDuration()
    compute_infer: StatisticDuration = StatisticDuration()
    compute_output: StatisticDuration = StatisticDuration()


@dataclass(frozen=True)
class ModelStatistics:
    """One model version's statistics since the process started. Without batching,
    `inference_count` and `execution_count` are both the successful requests.
    `last_inference`: milliseconds since the epoch of the last request, successful or
    not (0: none)."""

    name: str
    version: str
    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    inference_stats: InferStatistics = InferStatistics()


# -- statistics -------------------------------------------------------------------


class _Tally:
    """One model's running counts, changed in place under `_Statistics`' lock: a
    request costs a few additions, not new frozen records (`ModelStatistics` is built
    when asked for)."""

    __slots__ = (
        "count",
        "fail",
        "fail_ns",
        "infer_ns",
        "input_ns",
        "last",
        "output_ns",
        "success_ns",
    )

    def __init__(self) -> None:
        self.last = self.count = self.fail = 0
        self.success_ns = self.fail_ns = self.input_ns = self.infer_ns = self.output_ns = 0

    def statistics(self, name: str) -> ModelStatistics:
        def duration(ns: int) -> StatisticDuration:
            return StatisticDuration(self.count, ns)

        return ModelStatistics(
            name,
            models.VERSION,
            last_inference=self.last,
            inference_count=self.count,
            execution_count=self.count,
            inference_stats=InferStatistics(
                success=duration(self.success_ns),
                fail=StatisticDuration(self.fail, self.fail_ns),
                compute_input=duration(self.input_ns),
                compute_infer=duration(self.infer_ns),
                compute_output=duration(self.output_ns),
            ),
        )


class _Statistics:
    """Every model's statistics, updated under one lock (an update is a few additions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model = {m.name: _Tally() for m in models.MODELS}

    def get(self, name: str) -> ModelStatistics:
        with self._lock:
            return self._by_model[name].statistics(name)

    def success(self, name: str, input_ns: int, infer_ns: int, output_ns: int) -> None:
        now_ms = time.time_ns() // 1_000_000
        input_ns, infer_ns, output_ns = max(input_ns, 0), max(infer_ns, 0), max(output_ns, 0)
        with self._lock:
            tally = self._by_model[name]
            tally.last = now_ms
            tally.count += 1
            tally.success_ns += input_ns + infer_ns + output_ns
            tally.input_ns += input_ns
            tally.infer_ns += infer_ns
            tally.output_ns += output_ns

    def failure(self, name: str, ns: int) -> None:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            tally = self._by_model[name]
            tally.last = now_ms
            tally.fail += 1
            tally.fail_ns += max(ns, 0)


# -- the operations ---------------------------------------------------------------


class DataPlane:
    """The Open Inference Protocol over one Engine: what every OIP front end calls."""

    def __init__(
        self, engine: Engine, limits: Limits, *, is_ready: Callable[[], bool] | None = None
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._is_ready = is_ready or (lambda: True)
        self._statistics = _Statistics()

    # -- health and metadata --------------------------------------------------------

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return self._is_ready()

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        model(name, version)
        return self._is_ready()

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        found = model(name, version)
        config = models.config_of(found)
        return ModelMetadata(
            name=found.name,
            versions=(models.VERSION,),
            platform=models.PLATFORM,
            inputs=tuple(TensorMetadata(t.name, t.datatype, t.dims) for t in config.inputs),
            outputs=tuple(TensorMetadata(t.name, t.datatype, t.dims) for t in config.outputs),
            parameters=self.accepts(found),
        )

    def model_config(self, name: str, version: str = "") -> models.ModelConfig:
        found = model(name, version)
        return replace(models.config_of(found), parameters=self.accepts(found))

    def accepts(self, found: models.Model) -> dict[str, str]:
        """What a model accepts beyond its metadata's one datatype and [-1] dims: the
        protocol has no way to say "any of these datatypes" or "any rank"."""
        shapes = "every tensor has x's shape"
        if found.tensor_params:
            names = ", ".join(
                f"{name} and grad_{name}" if found.gradient else name
                for name in found.tensor_params
            )
            shapes = f"every tensor has x's shape but {names}: broadcastable to x"
        return {
            "datatypes": ",".join(models.DATATYPES),
            "datatype_rule": "every input of a request has x's datatype; outputs take it",
            "max_rank": str(self._limits.max_rank),
            "max_elements": str(self._limits.max_elements),
            "shapes": f"x: any shape up to max_rank and max_elements; {shapes}",
        }

    def repository_index(self, *, ready_only: bool = False) -> tuple[ModelIndexEntry, ...]:
        """Every model (canonical names; aliases answer too) with its state."""
        ready = self._is_ready()
        if ready_only and not ready:
            return ()
        state, reason = (READY, "") if ready else (UNAVAILABLE, _NOT_READY_REASON)
        return tuple(ModelIndexEntry(m.name, models.VERSION, state, reason) for m in models.MODELS)

    def model_statistics(self, name: str = "", version: str = "") -> tuple[ModelStatistics, ...]:
        """The statistics of one model (`name`), or of every model (`name` empty)."""
        if name:
            return (self._statistics.get(model(name, version).name),)
        if version not in ("", models.VERSION):
            raise NotFound(
                f"no model has version {catalog.shown(version)} (versions: {models.VERSION})"
            )
        return tuple(self._statistics.get(m.name) for m in models.MODELS)

    # -- decoding helpers for front ends --------------------------------------------

    def input_dtype(self, datatype: str, field: str) -> np.dtype[Any]:
        """The numpy dtype of a served datatype; InvalidArgument naming `field` otherwise."""
        dtype = models.DATATYPES.get(datatype)
        if dtype is None:
            raise InvalidArgument(
                f"{field}: {catalog.shown(datatype)} is not served "
                f"(served: {', '.join(models.DATATYPES)})"
            )
        return dtype

    def check_input_shape(self, shape: Sequence[int], field: str) -> int:
        """Checks a shape against the limits; returns its element count."""
        try:
            return check_shape(
                tuple(shape),
                field=field,
                max_rank=self._limits.max_rank,
                max_elements=self._limits.max_elements,
            )
        except TensorError as exc:
            raise InvalidArgument(str(exc)) from exc

    def from_bytes(
        self,
        raw: bytes | memoryview,
        datatype: str,
        dtype: np.dtype[Any],
        shape: Sequence[int],
        field: str,
    ) -> Array:
        """A checked shape's raw little-endian row-major bytes as a read-only array (a
        view of `raw`)."""
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise InvalidArgument(
                f"{field}: has {len(raw)} bytes "
                f"but shape {list(shape)} of {datatype} needs {expected}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))

    def decode_failed(self, name: str, version: str, started_ns: int) -> None:
        """Counts a request its front end could not decode as a failure of its model.
        An unknown model or version raises NotFound, which the front end answers instead
        of its decoding error (the protocol names the model first)."""
        found = model(name, version)
        self._statistics.failure(found.name, time.perf_counter_ns() - started_ns)

    # -- inference ------------------------------------------------------------------

    def infer(self, request: InferRequest) -> InferResponse:
        """Runs a model. NotFound for an unknown model or version, InvalidArgument naming
        the field for anything wrong in the request."""
        started = request.started_ns if request.started_ns is not None else time.perf_counter_ns()
        found = model(request.model_name, request.model_version)
        with self._counted(found, started) as stages:
            requested = _requested_outputs(request.outputs, found)
            inputs = _inputs(request.inputs, found)
            x = inputs["x"]
            params = _request_params(request.parameters, found)
            for name in found.tensor_params:
                params[name] = inputs[name]
            call = catalog.bind(
                found.function,
                params,
                x_shape=x.shape,
                x_dtype=x.dtype,
                field_prefix="parameters",
            )
            stages.mark()
            results: dict[str, Array]
            if found.gradient:
                result = self._engine.gradient(call, x, inputs.get("grad_output"))
                if result.grad_input is None:  # only with a Sink, which OIP never passes
                    raise RuntimeError("the engine returned no grad_input")
                results = {"grad_input": result.grad_input}
                results.update({f"grad_{n}": v for n, v in result.grad_params.items()})
            else:
                results = {"y": self._engine.activate(call, x)}
            stages.mark()
            outputs = tuple(InferOutput(name, to_float_array(results[name])) for name in requested)
            stages.mark()
        return InferResponse(found.name, models.VERSION, request.id, outputs)

    @contextmanager
    def _counted(self, found: models.Model, started: int) -> Iterator[_Stages]:
        stages = _Stages(started)
        try:
            yield stages
        except WouldBuild:
            raise  # not an outcome: the front end runs the request again (http.runner)
        except BaseException:
            self._statistics.failure(found.name, time.perf_counter_ns() - started)
            raise
        input_ns, infer_ns, output_ns = stages.durations()
        self._statistics.success(found.name, input_ns, infer_ns, output_ns)


class _Stages:
    """The moments an inference passes from input to compute to output."""

    def __init__(self, started: int) -> None:
        self._marks = [started]

    def mark(self) -> None:
        self._marks.append(time.perf_counter_ns())

    def durations(self) -> tuple[int, int, int]:
        marks = self._marks
        return marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]


# -- request checks ---------------------------------------------------------------


def model(name: str, version: str = "") -> models.Model:
    """The model of a name (canonical or alias) and version ("" or "1"); NotFound otherwise."""
    found = models.lookup_model(name)
    if version not in ("", models.VERSION):
        raise NotFound(
            f"model {name!r} has no version {catalog.shown(version)} (versions: {models.VERSION})"
        )
    return found


def _requested_outputs(outputs: Sequence[RequestedOutput], found: models.Model) -> list[str]:
    if not outputs:
        return list(found.outputs)
    names = []
    for index, output in enumerate(outputs):
        if output.name not in found.outputs:
            raise InvalidArgument(
                f"outputs[{index}].name: model {found.name!r} has no output "
                f"{catalog.shown(output.name)} (outputs: {', '.join(found.outputs)})"
            )
        names.append(output.name)
    return names


def _inputs(tensors: Sequence[InferInput], found: models.Model) -> dict[str, Array]:
    arrays: dict[str, Array] = {}
    for index, tensor in enumerate(tensors):
        where = f"inputs[{index}]"
        if tensor.name not in found.inputs:
            raise InvalidArgument(
                f"{where}.name: model {found.name!r} has no input {catalog.shown(tensor.name)} "
                f"(inputs: {', '.join(found.inputs)})"
            )
        if tensor.name in arrays:
            raise InvalidArgument(
                f"{where}.name: input {catalog.shown(tensor.name)} is given twice"
            )
        if tensor.data.dtype not in models.DATATYPES.values():
            raise InvalidArgument(
                f"{where}.datatype: {tensor.data.dtype} is not served "
                f"(served: {', '.join(models.DATATYPES)})"
            )
        arrays[tensor.name] = tensor.data
    for name in found.inputs:
        if name not in arrays and name not in found.optional_inputs:
            raise InvalidArgument(f"inputs: {name!r} is required by model {found.name!r}")
    x = arrays["x"]
    grad_output = arrays.get("grad_output")
    if grad_output is not None:
        if grad_output.dtype != x.dtype:
            raise InvalidArgument(
                f"inputs['grad_output']: datatype {models.datatype_of(grad_output.dtype)} "
                f"differs from x's {models.datatype_of(x.dtype)}"
            )
        if grad_output.shape != x.shape:
            raise InvalidArgument(
                f"inputs['grad_output']: shape {list(grad_output.shape)} differs from "
                f"x's shape {list(x.shape)}"
            )
    return arrays


def _request_params(
    parameters: Mapping[str, ParameterValue | None], found: models.Model
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        if name in _SCHEDULING_PARAMS:
            continue
        if name in found.tensor_params:
            raise InvalidArgument(
                f"parameters[{catalog.shown(name)}]: is a tensor; send it as the input {name!r}"
            )
        if value is None:
            raise InvalidArgument(f"parameters[{catalog.shown(name)}]: no value set")
        values[name] = value
    return values
