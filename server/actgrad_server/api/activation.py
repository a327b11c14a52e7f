"""The actgrad.v1 front end: decode -> catalog -> engine -> encode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy.typing as npt
import onnxruntime as ort

from actgrad import __version__
from actgrad._codec import DTYPES, decode, encode
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
from actgrad_server import catalog, graphs
from actgrad_server.api._errors import handle_errors, handle_stream_errors
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument

__all__ = ["ActivationServicer", "Limits", "function_infos"]


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_elements: int
    max_rank: int
    max_concurrent_rpcs: int


_PARAM_TYPES = {
    catalog.ParamKind.NUMBER: pb.PARAM_TYPE_NUMBER,
    catalog.ParamKind.INTEGER: pb.PARAM_TYPE_INTEGER,
    catalog.ParamKind.STRING: pb.PARAM_TYPE_STRING,
    catalog.ParamKind.BOOL: pb.PARAM_TYPE_BOOL,
    catalog.ParamKind.TENSOR: pb.PARAM_TYPE_TENSOR,
}


def _param_value(value: Any) -> pb.ParamValue:
    if isinstance(value, bool):
        return pb.ParamValue(flag=value)
    if isinstance(value, int):
        return pb.ParamValue(integer=value)
    if isinstance(value, float):
        return pb.ParamValue(number=value)
    return pb.ParamValue(text=str(value))


def function_infos() -> list[pb.FunctionInfo]:
    """The catalog as protobuf messages."""
    infos = []
    for function in catalog.CATALOG:
        params = []
        for param in function.params:
            info = pb.ParamInfo(
                name=param.name,
                type=_PARAM_TYPES[param.kind],
                description=param.description,
                required=param.required,
                minimum_exclusive=param.minimum_exclusive,
                maximum_exclusive=param.maximum_exclusive,
                choices=param.choices,
            )
            if param.default is not None:
                info.default.CopyFrom(_param_value(param.default))
            if param.minimum is not None:
                info.minimum = param.minimum
            if param.maximum is not None:
                info.maximum = param.maximum
            params.append(info)
        infos.append(
            pb.FunctionInfo(
                name=function.name,
                aliases=function.aliases,
                summary=function.summary,
                formula=function.formula,
                formula_latex=function.formula_latex,
                gradient_note=function.gradient_note,
                params=params,
                elementwise=function.elementwise,
                dtypes=[d.wire for d in DTYPES],  # type: ignore[misc]
            )
        )
    return infos


def _lookup(name: str, streamed: bool) -> catalog.Function:
    function = catalog.lookup(name)
    # Chunks are computed independently: only functions that do not mix values
    # across the split are streamable (softmax splits along other axes).
    if streamed and not function.elementwise and function.name != "softmax":
        raise InvalidArgument(f"function: {function.name} cannot be computed in chunks")
    return function


class ActivationServicer(activation_pb2_grpc.ActivationServiceServicer):
    """actgrad.v1.ActivationService over one Engine."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self._engine = engine
        self._limits = limits
        self._functions = pb.ListFunctionsResponse(functions=function_infos())

    def _decode(self, message: Any, name: str, field: str) -> npt.NDArray[Any]:
        if not message.HasField(name):
            raise InvalidArgument(f"{field}: is required")
        return decode(
            getattr(message, name),
            field=field,
            max_rank=self._limits.max_rank,
            max_elements=self._limits.max_elements,
        )

    def _params(self, params: Mapping[str, pb.ParamValue]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in params.items():
            kind = value.WhichOneof("kind")
            if kind is None:
                raise InvalidArgument(f"params[{name!r}]: no value set")
            if kind == "tensor":
                values[name] = self._decode(value, "tensor", f"params[{name!r}]")
            else:
                values[name] = getattr(value, kind)
        return values

    def _activate(
        self, request: pb.ActivateRequest, *, streamed: bool = False
    ) -> pb.ActivateResponse:
        function = _lookup(request.function, streamed)
        x = self._decode(request, "input", "input")
        call = catalog.bind(
            function, self._params(request.params), x_shape=x.shape, x_dtype=x.dtype
        )
        y = self._engine.activate(call, x)
        response = pb.ActivateResponse()
        # Encoded into the fresh message in place: passing a Tensor to the
        # constructor copies its bytes once more (about 1 ms per MiB with upb).
        encode(y, out=response.output)
        return response

    def _gradient(
        self, request: pb.GradientRequest, *, streamed: bool = False
    ) -> pb.GradientResponse:
        function = _lookup(request.function, streamed)
        x = self._decode(request, "input", "input")
        grad_output = None
        if request.HasField("grad_output"):
            grad_output = self._decode(request, "grad_output", "grad_output")
            if grad_output.dtype != x.dtype:
                raise InvalidArgument(
                    f"grad_output: dtype {grad_output.dtype} differs from the input's "
                    f"dtype {x.dtype}"
                )
            if grad_output.shape != x.shape:
                raise InvalidArgument(
                    f"grad_output: shape {list(grad_output.shape)} differs from the "
                    f"input's shape {list(x.shape)}"
                )
        call = catalog.bind(
            function, self._params(request.params), x_shape=x.shape, x_dtype=x.dtype
        )
        result = self._engine.gradient(call, x, grad_output, with_output=request.return_output)
        response = pb.GradientResponse()
        encode(result.grad_input, out=response.grad_input)
        for name, value in result.grad_params.items():
            encode(value, out=response.grad_params[name])
        if result.output is not None:
            encode(result.output, out=response.output)
        return response

    def _softmax(self, request: pb.SoftmaxRequest) -> pb.SoftmaxResponse:
        x = self._decode(request, "input", "input")
        params: dict[str, Any] = {"log": request.log}
        if request.HasField("axis"):
            params["axis"] = request.axis
        if request.HasField("temperature"):
            params["temperature"] = request.temperature
        call = catalog.bind(
            catalog.lookup("softmax"),
            params,
            x_shape=x.shape,
            x_dtype=x.dtype,
            field_prefix="request",
        )
        response = pb.SoftmaxResponse()
        encode(self._engine.activate(call, x), out=response.output)
        return response

    @handle_errors
    def Activate(
        self, request: pb.ActivateRequest, context: grpc.ServicerContext
    ) -> pb.ActivateResponse:
        return self._activate(request)

    @handle_errors
    def Gradient(
        self, request: pb.GradientRequest, context: grpc.ServicerContext
    ) -> pb.GradientResponse:
        return self._gradient(request)

    @handle_errors
    def Softmax(
        self, request: pb.SoftmaxRequest, context: grpc.ServicerContext
    ) -> pb.SoftmaxResponse:
        return self._softmax(request)

    # Each streamed message is one chunk, handled exactly as the unary call; gRPC
    # reads chunk k+1 from the transport while chunk k is computed.
    @handle_stream_errors
    def ActivateStream(
        self, requests: Iterator[pb.ActivateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ActivateResponse]:
        for request in requests:
            yield self._activate(request, streamed=True)

    @handle_stream_errors
    def GradientStream(
        self, requests: Iterator[pb.GradientRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.GradientResponse]:
        for request in requests:
            yield self._gradient(request, streamed=True)

    @handle_stream_errors
    def SoftmaxStream(
        self, requests: Iterator[pb.SoftmaxRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SoftmaxResponse]:
        for request in requests:
            yield self._softmax(request)

    @handle_errors
    def ListFunctions(
        self, request: pb.ListFunctionsRequest, context: grpc.ServicerContext
    ) -> pb.ListFunctionsResponse:
        return self._functions

    @handle_errors
    def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetServerInfoResponse:
        limits = self._limits
        return pb.GetServerInfoResponse(
            version=__version__,
            onnx_opset=graphs.OPSET,
            onnxruntime_version=ort.__version__,
            execution_providers=self._engine.providers,
            limits=pb.Limits(
                max_message_bytes=limits.max_message_bytes,
                max_elements=limits.max_elements,
                max_rank=limits.max_rank,
                max_concurrent_rpcs=limits.max_concurrent_rpcs,
            ),
        )
