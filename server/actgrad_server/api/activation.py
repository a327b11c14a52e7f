"""The actgrad.v1 front end: decode -> catalog -> engine -> encode."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import numpy.typing as npt
import onnxruntime as ort

from actgrad import __version__
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
from actgrad.wire import DTYPES, decode, encode
from actgrad_server import catalog, graphs
from actgrad_server.api._errors import handle_errors, handle_stream_errors
from actgrad_server.config import Limits
from actgrad_server.engine import Engine, GradientResult
from actgrad_server.errors import InvalidArgument
from actgrad_server.shm import Region, SharedMemory, Transfer

__all__ = ["ActivationServicer", "function_infos"]

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
                axis_param=function.axis_param or "",
                dtypes=[d.wire for d in DTYPES],  # type: ignore[misc]
            )
        )
    return infos


def _lookup(name: str, streamed: bool) -> catalog.Function:
    function = catalog.lookup(name)
    # Chunks are computed independently: only functions that do not mix values
    # across the split are streamable (see catalog.Function.streamable).
    if streamed and not function.streamable:
        raise InvalidArgument(f"function: {function.name} cannot be computed in chunks")
    return function


# How a helper gets a tensor field of a request: decoded from the message, or read
# from shared memory. (message, field name, field path for errors) -> array.
_Read = Callable[[Any, str, str], npt.NDArray[Any]]


class ActivationServicer(activation_pb2_grpc.ActivationServiceServicer):
    """actgrad.v1.ActivationService over one Engine."""

    def __init__(
        self, engine: Engine, limits: Limits, *, allow_shared_memory: bool = False
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._functions = pb.ListFunctionsResponse(functions=function_infos())
        self._shared = SharedMemory(allowed=allow_shared_memory)

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
        y = self._activate_array(request, self._decode, streamed=streamed)
        response = pb.ActivateResponse()
        # Encoded into the fresh message in place: passing a Tensor to the
        # constructor copies its bytes once more (about 1 ms per MiB with upb).
        encode(y, out=response.output)
        return response

    def _activate_array(
        self, request: pb.ActivateRequest, read: _Read, *, streamed: bool = False
    ) -> npt.NDArray[Any]:
        function = _lookup(request.function, streamed)
        x = read(request, "input", "input")
        call = catalog.bind(
            function, self._params(request.params), x_shape=x.shape, x_dtype=x.dtype
        )
        return self._engine.activate(call, x)

    def _gradient(
        self, request: pb.GradientRequest, *, streamed: bool = False
    ) -> pb.GradientResponse:
        result = self._gradient_result(request, self._decode, streamed=streamed)
        response = pb.GradientResponse()
        encode(result.grad_input, out=response.grad_input)
        for name, value in result.grad_params.items():
            encode(value, out=response.grad_params[name])
        if result.output is not None:
            encode(result.output, out=response.output)
        return response

    def _gradient_result(
        self, request: pb.GradientRequest, read: _Read, *, streamed: bool = False
    ) -> GradientResult:
        function = _lookup(request.function, streamed)
        x = read(request, "input", "input")
        grad_output = None
        if request.HasField("grad_output"):
            grad_output = read(request, "grad_output", "grad_output")
        call = catalog.bind(
            function,
            self._params(request.params),
            x_shape=x.shape,
            x_dtype=x.dtype,
            grad_output=grad_output,
        )
        return self._engine.gradient(call, x, grad_output, with_output=request.return_output)

    def _softmax(self, request: pb.SoftmaxRequest) -> pb.SoftmaxResponse:
        response = pb.SoftmaxResponse()
        encode(self._softmax_array(request, self._decode), out=response.output)
        return response

    def _softmax_array(self, request: pb.SoftmaxRequest, read: _Read) -> npt.NDArray[Any]:
        x = read(request, "input", "input")
        params: dict[str, Any] = {"log": request.log}
        if request.HasField("axis"):
            params["axis"] = request.axis
        if request.HasField("temperature"):
            params["temperature"] = request.temperature
        call = catalog.bind(
            catalog.SOFTMAX,
            params,
            x_shape=x.shape,
            x_dtype=x.dtype,
            field_prefix="request",
        )
        return self._engine.activate(call, x)

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

    # Same-host fast path: tensors in the client's shared-memory segments (see
    # actgrad_server.shm for what is accepted), computed by the same helpers.
    def _shared_reader(self, transfer: Transfer, shared: Any, outputs: tuple[str, ...]) -> _Read:
        """A `_Read` taking each tensor from the region of the same name in `shared`.

        Once the input is read (so its byte size is known), the output regions
        are checked, before anything is computed.
        """

        def read(message: Any, name: str, field: str) -> npt.NDArray[Any]:
            if not message.HasField(name):
                raise InvalidArgument(f"request.{field}: is required")
            if not shared.HasField(name):
                raise InvalidArgument(f"{name}: is required (the region of request.{name})")
            array = transfer.read(
                getattr(message, name),
                _region(getattr(shared, name)),
                field=f"request.{field}",
                region_field=name,
                max_rank=self._limits.max_rank,
                max_elements=self._limits.max_elements,
            )
            if name == "input":
                for output in outputs:
                    if not shared.HasField(output):
                        raise InvalidArgument(f"{output}: is required")
                    transfer.reserve(_region(getattr(shared, output)), array.nbytes, field=output)
            return array

        return read

    @handle_errors
    def ActivateShared(
        self, request: pb.ActivateSharedRequest, context: grpc.ServicerContext
    ) -> pb.ActivateSharedResponse:
        with self._shared.transfer() as transfer:
            read = self._shared_reader(transfer, request, ("output",))
            y = self._activate_array(request.request, read)
            transfer.write(_region(request.output), y, field="output")
        return pb.ActivateSharedResponse(output=request.output)

    @handle_errors
    def GradientShared(
        self, request: pb.GradientSharedRequest, context: grpc.ServicerContext
    ) -> pb.GradientSharedResponse:
        call = request.request
        with self._shared.transfer() as transfer:
            if request.HasField("grad_output") and not call.HasField("grad_output"):
                raise InvalidArgument("grad_output: a region is set but request.grad_output is not")
            if request.HasField("output") and not call.return_output:
                raise InvalidArgument("output: a region is set but request.return_output is not")
            outputs = ("grad_input", "output") if call.return_output else ("grad_input",)
            result = self._gradient_result(call, self._shared_reader(transfer, request, outputs))
            transfer.write(_region(request.grad_input), result.grad_input, field="grad_input")
            if result.output is not None:
                transfer.write(_region(request.output), result.output, field="output")
        response = pb.GradientSharedResponse(grad_input=request.grad_input)
        for name, value in result.grad_params.items():
            encode(value, out=response.grad_params[name])
        if result.output is not None:
            response.output.CopyFrom(request.output)
        return response

    @handle_errors
    def SoftmaxShared(
        self, request: pb.SoftmaxSharedRequest, context: grpc.ServicerContext
    ) -> pb.SoftmaxSharedResponse:
        with self._shared.transfer() as transfer:
            read = self._shared_reader(transfer, request, ("output",))
            y = self._softmax_array(request.request, read)
            transfer.write(_region(request.output), y, field="output")
        return pb.SoftmaxSharedResponse(output=request.output)

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


def _region(region: pb.SharedMemoryRegion) -> Region:
    return Region(segment=region.segment, offset=region.offset, size=region.size)
