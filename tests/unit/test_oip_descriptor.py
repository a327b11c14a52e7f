"""Our OIP protos against the descriptors Triton's Python client was generated from.

Every message, field, enum value and RPC in proto/oip/v2 must exist in tritonclient's
`service_pb2` / `model_config_pb2` with the same name, number, type, cardinality and
referenced type: that is what makes the bytes interchangeable. Also checks that the
stubs registered in their private pool, so that both import in one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from actgrad_server.oip import _pool
from actgrad_server.oip import grpc_predict_v2_pb2 as ours
from actgrad_server.oip import model_config_pb2 as ours_config


def _messages(file: FileDescriptor) -> Iterator[Descriptor]:
    def walk(message: Descriptor) -> Iterator[Descriptor]:
        if message.GetOptions().map_entry:
            return
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for message in file.message_types_by_name.values():
        yield from walk(message)


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    for message in _messages(file):
        yield from message.enum_types


def _field_signature(field: FieldDescriptor) -> tuple[object, ...]:
    referenced = field.message_type or field.enum_type
    is_map = bool(field.message_type and field.message_type.GetOptions().map_entry)
    if is_map:
        assert field.message_type is not None
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        referenced_name: object = ("map", key.type, value.type, _type_name(value))
    else:
        referenced_name = referenced.full_name if referenced else None
    return (
        field.number,
        field.type,
        field.is_repeated,
        referenced_name,
        field.containing_oneof.name if field.containing_oneof else None,
    )


def _type_name(field: FieldDescriptor) -> str | None:
    referenced = field.message_type or field.enum_type
    return referenced.full_name if referenced else None


_TRITON_POOL = triton_service.DESCRIPTOR.pool
_OUR_FILES = [ours.DESCRIPTOR, ours_config.DESCRIPTOR]
_OUR_MESSAGES = [m for f in _OUR_FILES for m in _messages(f)]
_OUR_ENUMS = [e for f in _OUR_FILES for e in _enums(f)]


def test_the_protos_keep_the_protocol_package() -> None:
    assert ours.DESCRIPTOR.package == "inference"
    assert ours_config.DESCRIPTOR.package == "inference"
    assert ours.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == (
        "inference.GRPCInferenceService"
    )


@pytest.mark.parametrize("message", _OUR_MESSAGES, ids=lambda m: m.full_name)
def test_message_fields_match_triton(message: Descriptor) -> None:
    theirs = _TRITON_POOL.FindMessageTypeByName(message.full_name)
    for field in message.fields:
        assert field.name in theirs.fields_by_name, f"{message.full_name}.{field.name}"
        their_field = theirs.fields_by_name[field.name]
        assert _field_signature(field) == _field_signature(their_field), (
            f"{message.full_name}.{field.name}"
        )


@pytest.mark.parametrize("enum", _OUR_ENUMS, ids=lambda e: e.full_name)
def test_enum_values_match_triton(enum: EnumDescriptor) -> None:
    theirs = _TRITON_POOL.FindEnumTypeByName(enum.full_name)
    ours_values = {value.name: value.number for value in enum.values}
    their_values = {value.name: value.number for value in theirs.values}
    assert ours_values.items() <= their_values.items()


def test_rpcs_match_triton() -> None:
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = _TRITON_POOL.FindServiceByName("inference.GRPCInferenceService")
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
    }
    for method in service.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name
        assert not method.client_streaming and not their_method.client_streaming
        assert not method.server_streaming and not their_method.server_streaming


def test_stubs_live_in_a_private_pool_next_to_tritons() -> None:
    assert ours.DESCRIPTOR.pool is _pool.POOL
    assert triton_config.DESCRIPTOR.pool is descriptor_pool.Default()
    assert ours.DESCRIPTOR.pool is not descriptor_pool.Default()


def test_a_request_round_trips_through_tritons_message() -> None:
    request = ours.ModelInferRequest(model_name="gelu", id="r1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tensor.contents.fp32_contents.extend([1.0] * 6)
    request.parameters["approximate"].string_param = "tanh"
    request.raw_input_contents.append(b"\x00" * 4)
    theirs = triton_service.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.model_name == "gelu" and theirs.id == "r1"
    assert list(theirs.inputs[0].shape) == [2, 3]
    assert list(theirs.inputs[0].contents.fp32_contents) == [1.0] * 6
    assert theirs.parameters["approximate"].string_param == "tanh"
    assert theirs.raw_input_contents[0] == b"\x00" * 4
    back = ours.ModelInferRequest.FromString(theirs.SerializeToString())
    assert back == request
