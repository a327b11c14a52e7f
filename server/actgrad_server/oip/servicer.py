"""The Open Inference Protocol's gRPC front end: protobuf -> plain values -> DataPlane.

`inference.GRPCInferenceService` over the same Engine as actgrad.v1, on the same port.
Each method converts its request into the plain values of `oip.dataplane`, calls the
DataPlane (which validates, runs the engine and counts the statistics) and converts
the result back; it decides nothing else. Inputs come as raw_input_contents or typed
contents (FP32/FP64; FP16 and BF16 only raw), outputs always as raw_output_contents.
RPCs of the service not declared in proto/oip/v2 answer UNIMPLEMENTED (gRPC does that
for unregistered methods).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from actgrad_server.config import Limits
from actgrad_server.engine import Engine
from actgrad_server.errors import ActgradServerError, InvalidArgument
from actgrad_server.oip import dataplane as dp
from actgrad_server.oip import grpc_predict_v2_pb2 as pb
from actgrad_server.oip import grpc_predict_v2_pb2_grpc
from actgrad_server.oip import model_table as models
from actgrad_server.statuses import handle_errors

__all__ = ["SERVER_NAME", "SERVICE", "OipServicer", "add_to_server"]

SERVER_NAME = dp.SERVER_NAME
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# The typed-contents field of each datatype that has one (FP16/BF16 are raw only).
_TYPED_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")

Array = npt.NDArray[Any]


class OipServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over one DataPlane (made from an Engine, or given)."""

    def __init__(
        self,
        engine: Engine,
        limits: Limits,
        *,
        is_ready: Callable[[], bool] | None = None,
        plane: dp.DataPlane | None = None,
    ) -> None:
        self._plane = plane or dp.DataPlane(engine, limits, is_ready=is_ready)

    # -- health and metadata ----------------------------------------------------

    @handle_errors
    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.server_live())

    @handle_errors
    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.server_ready())

    @handle_errors
    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

    @handle_errors
    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        metadata = self._plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.name, version=metadata.version, extensions=metadata.extensions
        )

    @handle_errors
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        # Triton's message has no parameters: ModelConfig carries metadata.parameters.
        metadata = self._plane.model_metadata(request.name, request.version)
        response = pb.ModelMetadataResponse(
            name=metadata.name, versions=metadata.versions, platform=metadata.platform
        )
        for tensor in metadata.inputs:
            response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        for tensor in metadata.outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        return response

    @handle_errors
    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        config = self._plane.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=models.to_proto(config))

    @handle_errors
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for entry in self._plane.repository_index(ready_only=request.ready):
            response.models.add(
                name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
            )
        return response

    @handle_errors
    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        response = pb.ModelStatisticsResponse()
        for stats in self._plane.model_statistics(request.name, request.version):
            entry = response.model_stats.add(
                name=stats.name,
                version=stats.version,
                last_inference=stats.last_inference,
                inference_count=stats.inference_count,
                execution_count=stats.execution_count,
            )
            for name in _DURATIONS:
                duration: dp.StatisticDuration = getattr(stats.inference_stats, name)
                getattr(entry.inference_stats, name).CopyFrom(
                    pb.StatisticDuration(count=duration.count, ns=duration.ns)
                )
        return response

    # -- inference --------------------------------------------------------------

    @handle_errors
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter_ns()
        try:
            inputs = self._inputs(request)
            parameters = _parameters(request.parameters)
        except ActgradServerError:
            self._plane.decode_failed(request.model_name, request.model_version, started)
            raise
        result = self._plane.infer(
            dp.InferRequest(
                model_name=request.model_name,
                model_version=request.model_version,
                id=request.id,
                inputs=inputs,
                parameters=parameters,
                outputs=[dp.RequestedOutput(o.name) for o in request.outputs],
                started_ns=started,
            )
        )
        response = pb.ModelInferResponse(
            model_name=result.model_name, model_version=result.model_version, id=result.id
        )
        for output in result.outputs:
            response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
            response.raw_output_contents.append(output.data.tobytes())
        return response

    def _inputs(self, request: pb.ModelInferRequest) -> list[dp.InferInput]:
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents: has {len(raw)} entries for {len(request.inputs)} inputs "
                "(one per input, in order)"
            )
        return [
            dp.InferInput(tensor.name, self._decode(tensor, raw[index] if raw else None, index))
            for index, tensor in enumerate(request.inputs)
        ]

    def _decode(
        self, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, index: int
    ) -> Array:
        where = f"inputs[{index}]"
        dtype = self._plane.input_dtype(tensor.datatype, f"{where}.datatype")
        shape = tuple(tensor.shape)
        count = self._plane.check_input_shape(shape, f"{where}.shape")
        if raw is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"{where}.contents: must be empty when raw_input_contents is used"
                )
            return self._plane.from_bytes(
                raw, tensor.datatype, dtype, shape, f"raw_input_contents[{index}]"
            )
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


def _parameters(
    parameters: Mapping[str, pb.InferParameter],
) -> dict[str, dp.ParameterValue | None]:
    values: dict[str, dp.ParameterValue | None] = {}
    for name, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[name] = None if kind is None else getattr(parameter, kind)
    return values


def add_to_server(servicer: OipServicer, server: grpc.Server) -> None:
    """Registers `servicer` on `server` (next to actgrad.v1, on the same port)."""
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server
    )
