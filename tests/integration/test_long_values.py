"""No request value comes back whole in a status message.

Every string field of every request message of actgrad.v1 and of the Open Inference
Protocol (walked from the descriptors, through nested messages, map keys and map
values) is set to a huge value in an otherwise valid request, against a real server:
the caller must get the status that fits the field (INVALID_ARGUMENT, NOT_FOUND for
a name; OK where the value is only carried, the OIP request id) with a short message,
never UNKNOWN, INTERNAL or RESOURCE_EXHAUSTED (the trailer over gRPC's header limit
that an echoed value of 16 KiB caused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from _common import TEST_SETTINGS
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

import actgrad
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc, tensor_pb2
from actgrad_server.app import ActgradServer
from actgrad_server.oip import grpc_predict_v2_pb2 as oip
from actgrad_server.oip import grpc_predict_v2_pb2_grpc

# What a status message may be at most, in characters; an echoed value is a few dozen.
SHORT = 1024
# ASCII, and two bytes of UTF-8 a character (so the trailer's %-encoding triples them).
HUGE = {"ascii-20000": "x" * 20_000, "utf8-100000": "é" * 100_000}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED}
KEY, VALUE = "<key>", "<value>"


def _tensor(*shape: int) -> tensor_pb2.Tensor:
    data = np.ones(shape, dtype=np.float32).tobytes()
    return tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=list(shape), data=data)


def _approximate() -> dict[str, pb.ParamValue]:
    return {"approximate": pb.ParamValue(text="tanh")}


def _oip_approximate() -> dict[str, oip.InferParameter]:
    return {"approximate": oip.InferParameter(string_param="tanh")}


_ACTIVATE = pb.ActivateRequest(function="gelu", input=_tensor(2), params=_approximate())
# With every option that a field of the request needs (output_region, grad_output).
_GRADIENT = pb.GradientRequest(
    function="gelu",
    input=_tensor(2),
    grad_output=_tensor(2),
    params=_approximate(),
    return_output=True,
)
_SOFTMAX = pb.SoftmaxRequest(input=_tensor(2))
_DENSE = pb.DenseRequest(
    input=_tensor(1, 2),
    weight=_tensor(1, 2),
    activation="gelu",
    params=_approximate(),
    gradient=True,
    grad_output=_tensor(1, 1),
)
_FLOW = pb.GradientFlowRequest(
    function="gelu", params=_approximate(), depth=2, width=2, batch=2, init="he_normal"
)
_INFER = oip.ModelInferRequest(
    model_name="gelu",
    model_version="1",
    parameters=_oip_approximate(),
    inputs=[
        oip.ModelInferRequest.InferInputTensor(
            name="x",
            datatype="FP32",
            shape=[2],
            contents=oip.InferTensorContents(fp32_contents=[1.0, 2.0]),
            parameters={"binary_data_size": oip.InferParameter(int64_param=8)},
        )
    ],
    outputs=[
        oip.ModelInferRequest.InferRequestedOutputTensor(
            name="y", parameters={"binary_data": oip.InferParameter(bool_param=False)}
        )
    ],
)
_MODEL = {"name": "gelu", "version": "1"}

#: A valid request of each method, by the method's full name; methods whose requests
#: have no string field (ListFunctions, ServerLive, ...) have nothing to walk.
VALID: dict[str, Message] = {
    "actgrad.v1.ActivationService/Activate": _ACTIVATE,
    "actgrad.v1.ActivationService/ActivateStream": _ACTIVATE,
    "actgrad.v1.ActivationService/Gradient": _GRADIENT,
    "actgrad.v1.ActivationService/GradientStream": _GRADIENT,
    "actgrad.v1.ActivationService/Softmax": _SOFTMAX,
    "actgrad.v1.ActivationService/SoftmaxStream": _SOFTMAX,
    "actgrad.v1.ActivationService/Dense": _DENSE,
    "actgrad.v1.ActivationService/DenseStream": _DENSE,
    "actgrad.v1.ActivationService/GradientFlow": _FLOW,
    "inference.GRPCInferenceService/ModelInfer": _INFER,
    "inference.GRPCInferenceService/ModelReady": oip.ModelReadyRequest(**_MODEL),
    "inference.GRPCInferenceService/ModelMetadata": oip.ModelMetadataRequest(**_MODEL),
    "inference.GRPCInferenceService/ModelConfig": oip.ModelConfigRequest(**_MODEL),
    "inference.GRPCInferenceService/ModelStatistics": oip.ModelStatisticsRequest(**_MODEL),
    "inference.GRPCInferenceService/RepositoryIndex": oip.RepositoryIndexRequest(),
}

_SERVICES = (
    pb.DESCRIPTOR.services_by_name["ActivationService"],
    oip.DESCRIPTOR.services_by_name["GRPCInferenceService"],
)

# The code a huge value must end a call with where it is not INVALID_ARGUMENT, by
# method and path. A function or model name that long is INVALID_ARGUMENT (over the
# names' length limit) rather than NOT_FOUND, which is for a name of a sane length.
_NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXPECTED: dict[tuple[str, str], grpc.StatusCode] = {
    # OIP's request id is the caller's; it comes back in the response, as Triton does.
    ("inference.GRPCInferenceService/ModelInfer", "id"): grpc.StatusCode.OK,
    # A model version that does not exist.
    ("inference.GRPCInferenceService/ModelInfer", "model_version"): _NOT_FOUND,
    ("inference.GRPCInferenceService/ModelReady", "version"): _NOT_FOUND,
    ("inference.GRPCInferenceService/ModelMetadata", "version"): _NOT_FOUND,
    ("inference.GRPCInferenceService/ModelConfig", "version"): _NOT_FOUND,
    ("inference.GRPCInferenceService/ModelStatistics", "version"): _NOT_FOUND,
    # One repository: its name is not read, as in Triton.
    ("inference.GRPCInferenceService/RepositoryIndex", "repository_name"): grpc.StatusCode.OK,
    # OIP parameters of an input or requested output are transport hints for Triton
    # (binary_data, ...), not read here.
    ("inference.GRPCInferenceService/ModelInfer", "inputs.parameters.<key>"): grpc.StatusCode.OK,
    (
        "inference.GRPCInferenceService/ModelInfer",
        "inputs.parameters.<value>.string_param",
    ): grpc.StatusCode.OK,
    ("inference.GRPCInferenceService/ModelInfer", "outputs.parameters.<key>"): grpc.StatusCode.OK,
    (
        "inference.GRPCInferenceService/ModelInfer",
        "outputs.parameters.<value>.string_param",
    ): grpc.StatusCode.OK,
}


def string_paths(descriptor: Descriptor, seen: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every string field reachable from `descriptor`: nested messages, repeated
    ones (their first element), map keys (KEY) and values (VALUE, walked on)."""
    if descriptor.full_name in seen:  # a recursive message: once is enough
        return []
    seen = (*seen, descriptor.full_name)
    paths: list[tuple[str, ...]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field.name,))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
                if key.type == FieldDescriptor.TYPE_STRING:
                    paths.append((field.name, KEY))
                if value.type == FieldDescriptor.TYPE_STRING:
                    paths.append((field.name, VALUE))
                elif value.type == FieldDescriptor.TYPE_MESSAGE:
                    paths += [
                        (field.name, VALUE, *p) for p in string_paths(value.message_type, seen)
                    ]
            else:
                paths += [(field.name, *p) for p in string_paths(entry, seen)]
    return paths


def with_value(valid: Message, path: tuple[str, ...], value: str) -> Message:
    """A copy of `valid` with the string at `path` set to `value` (a map's first entry,
    or a new one, stands for the map; a repeated message's first element likewise)."""
    request = type(valid)()
    request.CopyFrom(valid)
    target: Any = request
    steps = list(path)
    while steps:
        name = steps.pop(0)
        field = target.DESCRIPTOR.fields_by_name[name]
        container = getattr(target, name)
        if not steps:
            if field.is_repeated:
                container.append(value)
            else:
                setattr(target, name, value)
            break
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            marker = steps.pop(0)
            key = next(iter(container), "approximate")
            message_values = field.message_type.fields_by_name["value"].message_type is not None
            if marker == KEY:
                if message_values:
                    old = type(container[key])()
                    old.CopyFrom(container[key])
                    del container[key]
                    container[value].CopyFrom(old)
                else:
                    old_text = container.pop(key, "")
                    container[value] = old_text
                break
            if not steps:
                container[key] = value
                break
            target = container[key]
        elif field.is_repeated:
            target = container[0] if len(container) else container.add()
        else:
            target = container
    return request


def _cases() -> list[Any]:
    cases = []
    for service in _SERVICES:
        for method in service.methods:
            rpc = f"{service.full_name}/{method.name}"
            paths = string_paths(method.input_type)
            if paths:
                assert rpc in VALID, f"{rpc} has string fields: give it a valid request"
            for path in paths:
                for size in HUGE:
                    shown = ".".join(path)
                    cases.append(
                        pytest.param(method, path, size, id=f"{method.name}-{shown}-{size}")
                    )
    return cases


CASES = _cases()


@pytest.fixture(scope="module", params=["no-shm", "shm"])
def any_server(request: pytest.FixtureRequest, server: ActgradServer) -> Iterator[ActgradServer]:
    """The session's server, and one that reads shared-memory regions (their segment
    names are then looked at)."""
    if request.param == "no-shm":
        yield server
        return
    srv = ActgradServer(dataclasses.replace(TEST_SETTINGS, allow_shared_memory=True))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0).wait(10)


@pytest.fixture(scope="module")
def channel(any_server: ActgradServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{any_server.port}") as opened:
        yield opened


def expected_code(rpc: str, path: tuple[str, ...], server: ActgradServer) -> grpc.StatusCode:
    if path[-1] == "segment" and not server.settings.allow_shared_memory:
        # A region, whatever its name, where shared memory is not allowed.
        return grpc.StatusCode.FAILED_PRECONDITION
    return EXPECTED.get((rpc, ".".join(path)), grpc.StatusCode.INVALID_ARGUMENT)


def _callable(channel: grpc.Channel, method: Any) -> Callable[[Message], Any]:
    """The method on `channel` as a function of one request; a stream gets it alone."""
    if method.containing_service.full_name == "inference.GRPCInferenceService":
        stub: Any = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    else:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
    call = getattr(stub, method.name)
    if method.client_streaming:
        return lambda request: list(call(iter([request]), timeout=30))
    return lambda request: call(request, timeout=30)


def test_every_request_message_has_string_fields_walked() -> None:
    # The walk reaches the fields the defect report named.
    walked = {(p.values[0].name, ".".join(p.values[1])) for p in CASES}
    for expected in [
        ("Activate", "params.<value>.text"),
        ("Gradient", "params.<value>.text"),
        ("Dense", "params.<value>.text"),
        ("GradientFlow", "init"),
        ("GradientFlow", "function"),
        ("ModelInfer", "parameters.<value>.string_param"),
        ("ModelInfer", "inputs.parameters.<key>"),
        ("Activate", "input.region.segment"),
        ("Activate", "params.<value>.tensor.region.segment"),
    ]:
        assert expected in walked


def test_the_valid_requests_are_answered(channel: grpc.Channel) -> None:
    # Each base request is valid: the huge value is the only thing wrong with a case.
    for service in _SERVICES:
        for method in service.methods:
            rpc = f"{service.full_name}/{method.name}"
            if rpc in VALID:
                _callable(channel, method)(VALID[rpc])


@pytest.mark.parametrize(("method", "path", "size"), CASES)
def test_a_huge_value_is_never_echoed_whole(
    any_server: ActgradServer,
    channel: grpc.Channel,
    method: Any,
    path: tuple[str, ...],
    size: str,
) -> None:
    rpc = f"{method.containing_service.full_name}/{method.name}"
    request = with_value(VALID[rpc], path, HUGE[size])
    expected = expected_code(rpc, path, any_server)
    try:
        _callable(channel, method)(request)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    else:
        code, details = grpc.StatusCode.OK, ""
    assert code not in NEVER, (code, details[:200], len(details))
    assert code == expected, (code, details[:200])
    assert len(details) < SHORT, (len(details), details[:200])


@pytest.mark.parametrize("size", HUGE)
def test_the_sdk_gets_short_messages_for_huge_values(client: Any, size: str) -> None:
    huge = HUGE[size]
    x = np.ones(3, dtype=np.float32)
    calls: list[tuple[Callable[[], Any], type[actgrad.ActgradError]]] = [
        (lambda: client.activate(x, "gelu", approximate=huge), actgrad.InvalidArgumentError),
        (lambda: client.gradient(x, "gelu", approximate=huge), actgrad.InvalidArgumentError),
        (lambda: client.activate(x, huge), actgrad.InvalidArgumentError),
        (
            lambda: client.gradient_flow("relu", depth=2, width=2, batch=2, init=huge),
            actgrad.InvalidArgumentError,
        ),
    ]
    for call, error in calls:
        with pytest.raises(error) as info:
            call()
        assert len(info.value.details) < SHORT, len(info.value.details)
