"""Reading the server's answers: tensors into numpy arrays, messages into dataclasses.

Everything here checks what the contract promises (a result has the input's dtype
and shape, a stream answers every chunk) and turns a broken promise into
`InternalError` ("malformed response from the server"). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from actgrad import wire
from actgrad._types import (
    DenseVjpResult,
    FunctionInfo,
    FunctionProperties,
    GradientFlowResult,
    Limits,
    ParamDefault,
    ParamInfo,
    ServerInfo,
    VjpResult,
)
from actgrad.errors import InternalError
from actgrad.v1 import activation_pb2, tensor_pb2
from actgrad.wire import ChunkPlan

__all__ = [
    "decode_like",
    "decode_result",
    "decode_shaped",
    "dense_vjp_result",
    "function_info",
    "grad_params",
    "gradient_flow_result",
    "gradient_result",
    "health_status",
    "place_chunk",
    "server_info",
    "stream_finisher",
]

_PARAM_TYPE_PREFIX = "PARAM_TYPE_"
_DTYPE_PREFIX = "DTYPE_"

ResultT = TypeVar("ResultT")


def decode_result(tensor: tensor_pb2.Tensor, *, field: str) -> npt.NDArray[Any]:
    """A response tensor as a read-only array; undecodable is INTERNAL."""
    try:
        return wire.decode(tensor, field=field)
    except wire.TensorError as exc:
        raise InternalError(f"malformed response from the server: {exc}") from exc


def decode_like(
    tensor: tensor_pb2.Tensor, like: npt.NDArray[Any], *, field: str
) -> npt.NDArray[Any]:
    """Decodes a result that the contract says has the input's dtype and shape."""
    array = decode_result(tensor, field=field)
    if array.dtype != like.dtype or array.shape != like.shape:
        raise InternalError(
            f"malformed response from the server: {field} is {array.dtype}{list(array.shape)}, "
            f"expected {like.dtype}{list(like.shape)}"
        )
    return array


def decode_shaped(
    tensor: tensor_pb2.Tensor, like: npt.NDArray[Any], shape: tuple[int, ...], *, field: str
) -> npt.NDArray[Any]:
    """Decodes a result that the contract says has `like`'s dtype and this shape."""
    array = decode_result(tensor, field=field)
    if array.dtype != like.dtype or array.shape != shape:
        raise InternalError(
            f"malformed response from the server: {field} is {array.dtype}{list(array.shape)}, "
            f"expected {like.dtype}{list(shape)}"
        )
    return array


def dense_vjp_result(
    response: activation_pb2.DenseResponse, x: npt.NDArray[Any], weight: npt.NDArray[Any]
) -> DenseVjpResult:
    """A DenseResponse with gradients, for the input `x` and the weight `weight`."""
    z_shape = (*x.shape[:-1], weight.shape[0])
    optional = {
        name: decode_shaped(getattr(response, name), x, z_shape, field=name)
        for name in ("output", "net_output")
        if response.HasField(name)
    }
    return DenseVjpResult(
        grad_input=decode_shaped(response.grad_input, x, x.shape, field="grad_input"),
        grad_weight=decode_shaped(response.grad_weight, x, weight.shape, field="grad_weight"),
        grad_bias=decode_shaped(response.grad_bias, x, weight.shape[:1], field="grad_bias"),
        grad_params=grad_params(response),
        output=optional.get("output"),
        net_output=optional.get("net_output"),
    )


def gradient_flow_result(
    response: activation_pb2.GradientFlowResponse, depth: int
) -> GradientFlowResult:
    """A GradientFlowResponse for a network of `depth` layers."""
    lengths = {"act_rms": depth + 1, "grad_rms": depth + 1}
    arrays = {}
    for name in ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead"):
        values = np.asarray(getattr(response, name), dtype=np.float64)
        if values.shape != (lengths.get(name, depth),):
            raise InternalError(
                f"malformed response from the server: {name} has {values.size} values "
                f"for {depth} layers"
            )
        arrays[name] = values
    return GradientFlowResult(**arrays, ratio=response.ratio)


def grad_params(
    response: activation_pb2.GradientResponse | activation_pb2.DenseResponse,
) -> dict[str, npt.NDArray[Any]]:
    """The parameter gradients of a GradientResponse (always in the message), by name."""
    return {
        name: decode_result(tensor, field=f"grad_params[{name!r}]")
        for name, tensor in sorted(response.grad_params.items())
    }


def gradient_result(response: activation_pb2.GradientResponse, like: npt.NDArray[Any]) -> VjpResult:
    """A GradientResponse whose tensors are in the message, for the input `like`."""
    output = None
    if response.HasField("output"):
        output = decode_like(response.output, like, field="output")
    return VjpResult(
        grad_input=decode_like(response.grad_input, like, field="grad_input"),
        grad_params=grad_params(response),
        output=output,
    )


def place_chunk(
    plan: ChunkPlan, out: npt.NDArray[Any], k: int, tensor: tensor_pb2.Tensor, *, field: str
) -> None:
    """Decodes chunk k's result and writes it into `out`; a wrong chunk is INTERNAL."""
    if k >= len(plan):
        raise InternalError(f"malformed response from the server: more than {len(plan)} chunks")
    piece = decode_result(tensor, field=field)
    if piece.dtype != out.dtype:
        raise InternalError(
            f"malformed response from the server: chunk {k} {field} is {piece.dtype}, "
            f"expected {out.dtype}"
        )
    try:
        plan.place(out, k, piece)
    except ValueError as exc:
        raise InternalError(f"malformed response from the server: {field} {exc}") from exc


def stream_finisher(plan: ChunkPlan, result: Callable[[], ResultT]) -> Callable[[int], ResultT]:
    """`finish` of a stream: the result only when every chunk was answered."""

    def finish(received: int) -> ResultT:
        if received != len(plan):
            # Never hand back a partly filled array as if it were complete.
            raise InternalError(
                f"the stream ended after {received} of {len(plan)} chunks; no result"
            )
        return result()

    return finish


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


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
        return decode_result(value.tensor, field=field).tolist()  # type: ignore[no-any-return]
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


def function_info(info: activation_pb2.FunctionInfo) -> FunctionInfo:
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
        properties=_properties(info.properties) if info.HasField("properties") else None,
    )


def _properties(props: activation_pb2.FunctionProperties) -> FunctionProperties:
    return FunctionProperties(
        output_min=props.output_min,
        output_max=props.output_max,
        monotonic=props.monotonic,
        smooth=props.smooth,
        zero_centred=props.zero_centred,
        bounded_below=props.bounded_below,
        bounded_above=props.bounded_above,
        saturating_left=props.saturating_left,
        saturating_right=props.saturating_right,
        condition=props.condition,
    )


def server_info(response: activation_pb2.GetServerInfoResponse) -> ServerInfo:
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
