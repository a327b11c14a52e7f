"""The actgrad.v1 front end: decode -> catalog -> engine -> encode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from google.protobuf.message import Message

from actgrad import __version__
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
from actgrad.wire import DTYPES, codec_for, encode, frame_for
from actgrad_server import catalog, graphs
from actgrad_server.api._payloads import Payloads
from actgrad_server.config import Limits
from actgrad_server.engine import Engine, Sink
from actgrad_server.errors import InvalidArgument
from actgrad_server.neuron import check_flow, dense_shape, flow_dtype, flow_inputs
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
        props = function.properties
        properties = pb.FunctionProperties(
            output_min=props.output_range[0],
            output_max=props.output_range[1],
            monotonic=props.monotonic,
            smooth=props.smooth,
            zero_centred=props.zero_centred,
            bounded_below=props.bounded_below,
            bounded_above=props.bounded_above,
            saturating_left=props.saturating_left,
            saturating_right=props.saturating_right,
            condition=props.condition,
        )
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
                properties=properties,
            )
        )
    return infos


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

    def _dense_call(
        self, request: pb.DenseRequest, tensors: Payloads, z_shape: tuple[int, ...], dtype: Any
    ) -> catalog.Call | None:
        params = self._params(request.params, tensors)
        if not request.activation:
            if params:
                name = catalog.shown(next(iter(params)))
                raise InvalidArgument(f"params[{name}]: no activation is given to take parameters")
            return None
        function = catalog.lookup(request.activation, field="activation")
        call = catalog.bind(function, params, x_shape=z_shape, x_dtype=dtype)
        axis = call.mixing_axis
        if axis is not None and axis != len(z_shape) - 1:
            raise InvalidArgument(
                f"params[{function.axis_param!r}]: a dense layer's {function.name} is along "
                f"the last axis (-1 or {len(z_shape) - 1}), got {axis}"
            )
        return call

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
            z_shape = dense_shape(
                x, weight, bias, grad_output, max_elements=self._limits.max_elements
            )
            call = self._dense_call(request, tensors, z_shape, x.dtype)
            result = self._engine.dense(
                call,
                x,
                weight,
                bias,
                grad_output,
                gradient=request.gradient,
                with_output=request.return_output,
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
        function = catalog.lookup(request.function)
        if not function.elementwise or function.tensor_params:
            raise InvalidArgument(
                f"function: the probe takes elementwise functions without tensor parameters; "
                f"{function.name} is not one"
            )
        dtype = flow_dtype(int(request.dtype))
        sizes = {"depth": request.depth, "width": request.width, "batch": request.batch}
        init_std = request.init_std if request.HasField("init_std") else None
        check_flow(
            **sizes, init=request.init, init_std=init_std, max_elements=self._limits.max_elements
        )
        with self._payloads() as tensors:
            params = self._params(request.params, tensors)
        call = catalog.bind(function, params, x_shape=(request.batch, request.width), x_dtype=dtype)
        drawn = flow_inputs(**sizes, init=request.init, init_std=init_std, seed=request.seed)
        stats = self._engine.gradient_flow(
            call,
            [w.astype(dtype) for w in drawn.weights],
            drawn.x.astype(dtype),
            drawn.g.astype(dtype),
            residual=request.residual,
            normalize=request.normalize,
        )
        grad_rms = stats["grad_rms"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(grad_rms[0] / grad_rms[-1])
        return pb.GradientFlowResponse(**{n: v.tolist() for n, v in stats.items()}, ratio=ratio)

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
