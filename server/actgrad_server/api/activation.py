"""The actgrad.v1 front end: decode -> catalog -> engine -> encode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import onnxruntime as ort
from google.protobuf.message import Message

from actgrad import __version__
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
from actgrad.wire import codec_for, dtype_info, encode, frame_for
from actgrad_server import catalog, graphs, ops
from actgrad_server.api._payloads import Payloads
from actgrad_server.config import Limits
from actgrad_server.engine import Engine, Sink
from actgrad_server.errors import InvalidArgument
from actgrad_server.shm import SharedMemory
from actgrad_server.statuses import handle_errors, handle_stream_errors

__all__ = ["ActivationServicer", "add_to_server", "function_infos"]

# A response message, or one whose large tensors are framed (`actgrad.wire.frames`).
Response = Any

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


def _param_info(param: ops.ParamInfo) -> pb.ParamInfo:
    info = pb.ParamInfo(
        name=param.name,
        type=_PARAM_TYPES[catalog.ParamKind(param.kind)],
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
    return info


def function_infos() -> list[pb.FunctionInfo]:
    """The catalog (`ops.function_infos`) as protobuf messages."""
    return [
        pb.FunctionInfo(
            name=info.name,
            aliases=info.aliases,
            summary=info.summary,
            formula=info.formula,
            formula_latex=info.formula_latex,
            gradient_note=info.gradient_note,
            params=[_param_info(p) for p in info.params],
            elementwise=info.elementwise,
            axis_param=info.axis_param or "",
            dtypes=[dtype_info(name).wire for name in info.dtypes],  # type: ignore[misc]
            properties=pb.FunctionProperties(**vars(info.properties)),
        )
        for info in ops.function_infos()
    ]


def _output_sink(tensors: Payloads, response: Message, region: Any, like: Any) -> Sink | None:
    """Where Activate's and Softmax's result goes: its region, the bytes of the response
    (large results), or None (an array, encoded into the response)."""
    if region is not None:
        return tensors.sink(region, "output_region")
    return tensors.prepare(response, {"output": like}).get("output")


def _lookup(name: str, streamed: bool) -> catalog.Function:
    function = catalog.lookup(name)
    # Chunks are computed independently: only functions that do not mix values
    # across the split are streamable (see catalog.Function.streamable).
    if streamed and not function.streamable:
        raise InvalidArgument(f"function: {function.name} cannot be computed in chunks")
    return function


class ActivationServicer(activation_pb2_grpc.ActivationServiceServicer):
    """actgrad.v1.ActivationService over one Engine."""

    def __init__(
        self, engine: Engine, limits: Limits, *, allow_shared_memory: bool = False
    ) -> None:
        self._engine = engine
        self._limits = limits
        # The calls whose tensors travel in the message (Dense, GradientFlow) are the
        # protocol-neutral core's; Activate, Gradient and Softmax keep the zero-copy,
        # shared-memory and written-while-computed path below, over the same catalog.bind.
        self._ops = ops.Operations(engine, limits, input_field="input")
        self._functions = pb.ListFunctionsResponse(functions=function_infos())
        self._shared = SharedMemory(allowed=allow_shared_memory)

    def _payloads(self) -> Payloads:
        """The tensors of one request message, in the message or in shared memory."""
        return Payloads(self._shared, self._limits)

    def _params(self, params: Mapping[str, pb.ParamValue], tensors: Payloads) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in params.items():
            kind = value.WhichOneof("kind")
            if kind is None:
                raise InvalidArgument(f"params[{catalog.shown(name)}]: no value set")
            if kind == "tensor":
                values[name] = tensors.read(value, "tensor", f"params[{catalog.shown(name)}]")
            else:
                values[name] = getattr(value, kind)
        return values

    def _activate(self, request: pb.ActivateRequest, *, streamed: bool = False) -> Response:
        function = _lookup(request.function, streamed)
        response = pb.ActivateResponse()
        with self._payloads() as tensors:
            x = tensors.source(request, "input", "input")
            output = tensors.reserve(request, "output_region", x)
            params = self._params(request.params, tensors)
            call = catalog.bind(function, params, x_shape=x.shape, x_dtype=x.dtype)
            y = self._engine.activate(call, x, out=_output_sink(tensors, response, output, x))
            tensors.put(y, output, response=response, name="output", field="output_region")
        return tensors.respond(response)

    def _gradient(self, request: pb.GradientRequest, *, streamed: bool = False) -> Response:
        function = _lookup(request.function, streamed)
        if request.HasField("output_region") and not request.return_output:
            raise InvalidArgument("output_region: is set but return_output is not")
        response = pb.GradientResponse()
        with self._payloads() as tensors:
            x = tensors.source(request, "input", "input")
            grad_input = tensors.reserve(request, "grad_input_region", x)
            output = tensors.reserve(request, "output_region", x)
            grad_output = None
            if request.HasField("grad_output"):
                grad_output = tensors.source(request, "grad_output", "grad_output")
            call = catalog.bind(
                function,
                self._params(request.params, tensors),
                x_shape=x.shape,
                x_dtype=x.dtype,
                grad_output=grad_output,
            )
            rooms = {}
            if grad_input is None and output is None and not call.tensors:
                # Results in the message, and no parameter gradients to add later:
                # laid out in the bytes sent before they are computed.
                results = {"grad_input": x, **({"output": x} if request.return_output else {})}
                rooms = tensors.prepare(response, results)
            result = self._engine.gradient(
                call,
                x,
                grad_output,
                with_output=request.return_output,
                grad_input_out=tensors.sink(grad_input, "grad_input_region")
                or rooms.get("grad_input"),
                output_out=tensors.sink(output, "output_region") or rooms.get("output"),
            )
            tensors.put(
                result.grad_input,
                grad_input,
                response=response,
                name="grad_input",
                field="grad_input_region",
            )
            if request.return_output:  # result.output is None where a sink took it
                tensors.put(
                    result.output, output, response=response, name="output", field="output_region"
                )
        for name, value in result.grad_params.items():
            encode(value, out=response.grad_params[name])
        return tensors.respond(response)

    def _softmax(self, request: pb.SoftmaxRequest) -> Response:
        params: dict[str, Any] = {"log": request.log}
        if request.HasField("axis"):
            params["axis"] = request.axis
        if request.HasField("temperature"):
            params["temperature"] = request.temperature
        response = pb.SoftmaxResponse()
        with self._payloads() as tensors:
            x = tensors.source(request, "input", "input")
            output = tensors.reserve(request, "output_region", x)
            call = catalog.bind(
                catalog.SOFTMAX,
                params,
                x_shape=x.shape,
                x_dtype=x.dtype,
                field_prefix="request",
            )
            y = self._engine.activate(call, x, out=_output_sink(tensors, response, output, x))
            tensors.put(y, output, response=response, name="output", field="output_region")
        return tensors.respond(response)

    def _dense(self, request: pb.DenseRequest) -> Response:
        if request.HasField("grad_output") and not request.gradient:
            raise InvalidArgument("grad_output: is set but gradient is not")
        response = pb.DenseResponse()
        with self._payloads() as tensors:
            x = tensors.read(request, "input", "input")
            weight = tensors.read(request, "weight", "weight")
            bias = tensors.read(request, "bias", "bias") if request.HasField("bias") else None
            grad_output = None
            if request.HasField("grad_output"):
                grad_output = tensors.read(request, "grad_output", "grad_output")
            params = self._params(request.params, tensors)
            if request.gradient:
                result = self._ops.dense_vjp(
                    x,
                    weight,
                    bias,
                    activation=request.activation,
                    params=params,
                    grad_output=grad_output,
                    return_output=request.return_output,
                )
            else:
                result = self._ops.dense(
                    x, weight, bias, activation=request.activation, params=params
                )
        results = {
            name: value
            for name in ("output", "grad_input", "grad_weight", "grad_bias")
            if (value := getattr(result, name)) is not None
        }
        if request.return_net_output and result.net_output is not None:
            results["net_output"] = result.net_output
        for name, value in result.grad_params.items():
            encode(value, out=response.grad_params[name])
        return frame_for(response, results)

    def _gradient_flow(self, request: pb.GradientFlowRequest) -> pb.GradientFlowResponse:
        with self._payloads() as tensors:
            params = self._params(request.params, tensors)
        result = self._ops.gradient_flow(
            request.function,
            params,
            depth=request.depth,
            width=request.width,
            batch=request.batch,
            init=request.init,
            init_std=request.init_std if request.HasField("init_std") else None,
            seed=request.seed,
            residual=request.residual,
            normalize=request.normalize,
            dtype=int(request.dtype),
        )
        stats = {n: getattr(result, n).tolist() for n in graphs.FLOW_OUTPUTS}
        return pb.GradientFlowResponse(**stats, ratio=result.ratio)

    @handle_errors
    def GradientFlow(
        self, request: pb.GradientFlowRequest, context: grpc.ServicerContext
    ) -> pb.GradientFlowResponse:
        return self._gradient_flow(request)

    @handle_errors
    def Dense(self, request: pb.DenseRequest, context: grpc.ServicerContext) -> Response:
        return self._dense(request)

    @handle_stream_errors
    def DenseStream(
        self, requests: Iterator[pb.DenseRequest], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        for request in requests:
            yield self._dense(request)

    @handle_errors
    def Activate(self, request: pb.ActivateRequest, context: grpc.ServicerContext) -> Response:
        return self._activate(request)

    @handle_errors
    def Gradient(self, request: pb.GradientRequest, context: grpc.ServicerContext) -> Response:
        return self._gradient(request)

    @handle_errors
    def Softmax(self, request: pb.SoftmaxRequest, context: grpc.ServicerContext) -> Response:
        return self._softmax(request)

    # Each streamed message is one chunk, handled exactly as the unary call; gRPC
    # reads chunk k+1 from the transport while chunk k is computed.
    @handle_stream_errors
    def ActivateStream(
        self, requests: Iterator[pb.ActivateRequest], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        for request in requests:
            yield self._activate(request, streamed=True)

    @handle_stream_errors
    def GradientStream(
        self, requests: Iterator[pb.GradientRequest], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        for request in requests:
            yield self._gradient(request, streamed=True)

    @handle_stream_errors
    def SoftmaxStream(
        self, requests: Iterator[pb.SoftmaxRequest], context: grpc.ServicerContext
    ) -> Iterator[Response]:
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
            shared_memory=self._shared.allowed,
        )


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_to_server(servicer: ActivationServicer, server: grpc.Server) -> None:
    """Registers the service like the generated `add_..._to_server`, with our codecs.

    Every method's messages are read and written by `actgrad.wire.frames`: large
    tensors arrive as views of the received bytes and leave copied once, straight
    into the bytes gRPC sends; everything else is protobuf's.
    """
    service = pb.DESCRIPTOR.services_by_name["ActivationService"]
    handlers = {}
    for method in service.methods:
        request = codec_for(getattr(pb, method.input_type.name))
        response = codec_for(getattr(pb, method.output_type.name))
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.parse,
            response_serializer=response.serialize,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # As the generated code does (grpcio >= 1.62): methods known up front skip the
    # generic handlers' lookup.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
