"""The Open Inference Protocol (KServe v2 / Triton) front end: decode -> catalog -> engine.

`inference.GRPCInferenceService` over the same Engine as actgrad.v1, on the same port.
Models are the catalog's functions and their gradients (see `actgrad_server.oip.model_table`).
Inputs come as raw_input_contents or typed contents (FP32/FP64; FP16 and BF16 only
raw), outputs always as raw_output_contents in the input's datatype and shape. Request
parameters are the function's parameters. Requests are validated as in actgrad.v1: the
codec's shape limits, then `catalog.bind`. RPCs of the service not declared in
proto/oip/v2 answer UNIMPLEMENTED (gRPC does that for unregistered methods).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from actgrad import __version__
from actgrad.wire import check_shape, to_float_array
from actgrad_server import catalog
from actgrad_server.api._errors import handle_errors
from actgrad_server.config import Limits
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument, NotFound
from actgrad_server.oip import grpc_predict_v2_pb2 as pb
from actgrad_server.oip import grpc_predict_v2_pb2_grpc
from actgrad_server.oip import model_table as models

__all__ = ["SERVER_NAME", "SERVICE", "OipServicer", "add_to_server"]

SERVER_NAME = "actgrad"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# Triton's standard request parameters are scheduling hints for its own queue; a
# generic client may send them, and they mean nothing to a stateless function.
_SCHEDULING_PARAMS = frozenset({"priority", "timeout"})
# The typed-contents field of each datatype that has one (FP16/BF16 are raw only).
_TYPED_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}

Array = npt.NDArray[Any]


class OipServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over one Engine."""

    def __init__(
        self, engine: Engine, limits: Limits, *, is_ready: Callable[[], bool] | None = None
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._is_ready = is_ready or (lambda: True)

    # -- health and metadata ----------------------------------------------------

    @handle_errors
    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handle_errors
    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._is_ready())

    @handle_errors
    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        _model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self._is_ready())

    @handle_errors
    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME,
            version=__version__,
            extensions=["model_configuration", "parameters"],
        )

    @handle_errors
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = _model(request.name, request.version)
        config = models.model_config(model)
        response = pb.ModelMetadataResponse(
            name=model.name, versions=[models.VERSION], platform=models.PLATFORM
        )
        # Advertised as FP32 with variable dims; FP64, FP16 and BF16 are served too, in
        # any rank, and every output takes the input's datatype.
        for model_input in config.input:
            response.inputs.add(name=model_input.name, datatype="FP32", shape=model_input.dims)
        for model_output in config.output:
            response.outputs.add(name=model_output.name, datatype="FP32", shape=model_output.dims)
        return response

    @handle_errors
    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        model = _model(request.name, request.version)
        return pb.ModelConfigResponse(config=models.model_config(model))

    # -- inference --------------------------------------------------------------

    @handle_errors
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        model = _model(request.model_name, request.model_version)
        requested = _requested_outputs(request, model)
        inputs = self._decode_inputs(request, model)
        x = inputs["x"]
        params = _request_params(request.parameters, model)
        for name in model.tensor_params:
            params[name] = inputs[name]
        call = catalog.bind(
            model.function, params, x_shape=x.shape, x_dtype=x.dtype, field_prefix="parameters"
        )
        results: dict[str, Array]
        if model.gradient:
            result = self._engine.gradient(call, x, inputs.get("grad_output"))
            if result.grad_input is None:  # only with a Sink, which OIP never passes
                raise RuntimeError("the engine returned no grad_input")
            results = {"grad_input": result.grad_input}
            results.update({f"grad_{n}": v for n, v in result.grad_params.items()})
        else:
            results = {"y": self._engine.activate(call, x)}
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=models.VERSION, id=request.id
        )
        for name in requested:
            array = to_float_array(results[name])
            response.outputs.add(
                name=name, datatype=models.datatype_of(array.dtype), shape=array.shape
            )
            response.raw_output_contents.append(array.tobytes())
        return response

    def _decode_inputs(
        self, request: pb.ModelInferRequest, model: models.Model
    ) -> dict[str, Array]:
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents: has {len(raw)} entries for {len(request.inputs)} inputs "
                "(one per input, in order)"
            )
        arrays: dict[str, Array] = {}
        for index, tensor in enumerate(request.inputs):
            where = f"inputs[{index}]"
            if tensor.name not in model.inputs:
                raise InvalidArgument(
                    f"{where}.name: model {model.name!r} has no input {catalog.shown(tensor.name)} "
                    f"(inputs: {', '.join(model.inputs)})"
                )
            if tensor.name in arrays:
                raise InvalidArgument(
                    f"{where}.name: input {catalog.shown(tensor.name)} is given twice"
                )
            arrays[tensor.name] = self._decode(tensor, raw[index] if raw else None, index)
        for name in model.inputs:
            if name not in arrays and name not in model.optional_inputs:
                raise InvalidArgument(f"inputs: {name!r} is required by model {model.name!r}")
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

    def _decode(
        self, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, index: int
    ) -> Array:
        where = f"inputs[{index}]"
        dtype = models.DATATYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidArgument(
                f"{where}.datatype: {catalog.shown(tensor.datatype)} is not served "
                f"(served: {', '.join(models.DATATYPES)})"
            )
        shape = tuple(tensor.shape)
        count = check_shape(
            shape,
            field=f"{where}.shape",
            max_rank=self._limits.max_rank,
            max_elements=self._limits.max_elements,
        )
        if raw is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"{where}.contents: must be empty when raw_input_contents is used"
                )
            expected = count * dtype.itemsize
            if len(raw) != expected:
                raise InvalidArgument(
                    f"raw_input_contents[{index}]: has {len(raw)} bytes "
                    f"but shape {list(shape)} of {tensor.datatype} needs {expected}"
                )
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        return _typed(tensor, dtype, shape, count, where)


def _typed(
    tensor: pb.ModelInferRequest.InferInputTensor,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    count: int,
    where: str,
) -> Array:
    typed_field = _TYPED_FIELDS.get(tensor.datatype)
    for descriptor, _ in tensor.contents.ListFields():
        if descriptor.name != typed_field:
            raise InvalidArgument(
                f"{where}.contents.{descriptor.name}: does not hold {tensor.datatype} "
                + (
                    f"(use {typed_field} or raw_input_contents)"
                    if typed_field
                    else "(FP16 and BF16 travel only in raw_input_contents)"
                )
            )
    if typed_field is None:
        if count:
            raise InvalidArgument(f"{where}: {tensor.datatype} travels only in raw_input_contents")
        return np.empty(shape, dtype=dtype)
    values = getattr(tensor.contents, typed_field)
    if len(values) != count:
        raise InvalidArgument(
            f"{where}.contents.{typed_field}: has {len(values)} values but shape "
            f"{list(shape)} needs {count}"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def _model(name: str, version: str) -> models.Model:
    model = models.lookup_model(name)
    if version not in ("", models.VERSION):
        raise NotFound(
            f"model {name!r} has no version {catalog.shown(version)} (versions: {models.VERSION})"
        )
    return model


def _requested_outputs(request: pb.ModelInferRequest, model: models.Model) -> list[str]:
    if not request.outputs:
        return list(model.outputs)
    names = []
    for index, output in enumerate(request.outputs):
        if output.name not in model.outputs:
            raise InvalidArgument(
                f"outputs[{index}].name: model {model.name!r} has no output "
                f"{catalog.shown(output.name)} (outputs: {', '.join(model.outputs)})"
            )
        names.append(output.name)
    return names


def _request_params(
    parameters: Mapping[str, pb.InferParameter], model: models.Model
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if name in _SCHEDULING_PARAMS:
            continue
        if name in model.tensor_params:
            raise InvalidArgument(
                f"parameters[{catalog.shown(name)}]: is a tensor; send it as the input {name!r}"
            )
        kind = parameter.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidArgument(f"parameters[{catalog.shown(name)}]: no value set")
        values[name] = getattr(parameter, kind)
    return values


def add_to_server(servicer: OipServicer, server: grpc.Server) -> None:
    """Registers `servicer` on `server` (next to actgrad.v1, on the same port)."""
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server
    )
