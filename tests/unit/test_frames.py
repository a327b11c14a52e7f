"""actgrad.wire.frames against protobuf: the hand-read and hand-written tensor fields.

Differential: every byte string is parsed by protobuf and by `Codec.parse` (with its
fast path forced on for any size), and the two must agree: both refuse it, or both
give the same message once the views are put back as `data`. The byte strings are
protobuf's own serialization, then the same fields reordered, repeated, with unknown
fields between them, split into several occurrences of a tensor field, truncated at
every length, and random bytes. Writing: `Outgoing` and `Frame` bytes must parse, by
protobuf, into the message `actgrad.wire.encode` builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad.wire import encode, frames

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Every message type that has top-level tensor fields, both directions.
TYPES = [
    pb.ActivateRequest,
    pb.ActivateResponse,
    pb.GradientRequest,
    pb.GradientResponse,
    pb.SoftmaxRequest,
    pb.SoftmaxResponse,
    pb.DenseRequest,
    pb.DenseResponse,
]


@pytest.fixture(autouse=True)
def always_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk is taken for every size, so that small examples exercise it.
    monkeypatch.setattr(frames, "SMALL_BYTES", 0)


# -- building wire bytes by hand ---------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    frames._put_varint(value, out)
    return bytes(out)


def entry(number: int, wire_type: int, value: bytes) -> bytes:
    """One field entry: tag, then the value as given (LEN values get their length)."""
    tag = varint((number << 3) | wire_type)
    if wire_type == 2:
        return tag + varint(len(value)) + value
    return tag + value


def unknown_fields() -> st.SearchStrategy[bytes]:
    number = st.integers(min_value=20, max_value=5000)
    return st.one_of(
        st.builds(lambda n, v: entry(n, 0, varint(v)), number, st.integers(0, 2**64 - 1)),
        st.builds(lambda n, v: entry(n, 1, v), number, st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, v: entry(n, 5, v), number, st.binary(min_size=4, max_size=4)),
        st.builds(lambda n, v: entry(n, 2, v), number, st.binary(max_size=12)),
    )


def tensor_entries() -> st.SearchStrategy[list[bytes]]:
    """A Tensor's entries in any order, any repeated: dtype, shape, data, region, unknown."""
    dtype = st.builds(lambda v: entry(1, 0, varint(v)), st.integers(0, 6))
    packed = st.builds(
        lambda dims: entry(2, 2, b"".join(varint(d) for d in dims)),
        st.lists(st.integers(0, 70), max_size=3),
    )
    unpacked = st.builds(lambda d: entry(2, 0, varint(d)), st.integers(0, 70))
    data = st.builds(lambda v: entry(3, 2, v), st.binary(max_size=64))
    region = st.builds(
        lambda s, o: entry(4, 2, entry(1, 2, s.encode()) + entry(2, 0, varint(o))),
        st.text(max_size=6),
        st.integers(0, 1000),
    )
    one = st.one_of(dtype, packed, unpacked, data, data, data, region, unknown_fields())
    return st.lists(one, min_size=1, max_size=7)


def scalar_entries(message: type[Message]) -> list[st.SearchStrategy[bytes]]:
    """Entries for the message's non-tensor fields, built by protobuf itself."""
    strategies: list[st.SearchStrategy[bytes]] = []
    fields = message.DESCRIPTOR.fields_by_name
    for name in ("function", "activation"):
        if name in fields:
            strategies.append(
                st.builds(lambda v, n=name: message(**{n: v}).SerializeToString(), st.text())
            )
    for name in ("return_output", "gradient", "log", "return_net_output"):
        if name in fields:
            strategies.append(st.just(message(**{name: True}).SerializeToString()))
    if "params" in fields:
        value = st.one_of(
            st.builds(lambda v: pb.ParamValue(number=v), st.floats(allow_nan=False)),
            st.builds(lambda v: pb.ParamValue(text=v), st.text(max_size=5)),
            st.builds(
                lambda v: pb.ParamValue(tensor=encode(np.float32(v))), st.lists(st.floats(width=32))
            ),
        )
        strategies.append(
            st.builds(
                lambda k, v: message(params={k: v}).SerializeToString(), st.text(max_size=4), value
            )
        )
    if "axis" in fields:
        strategies.append(
            st.builds(lambda v: message(axis=v).SerializeToString(), st.integers(-5, 5))
        )
    return strategies


@st.composite
def wire_messages(draw: st.DrawFn, message: type[Message]) -> bytes:
    codec = frames.codec_for(message)
    tensor = st.builds(
        lambda number, parts: entry(number, 2, b"".join(parts)),
        st.sampled_from(sorted(codec.tensors)),
        tensor_entries(),
    )
    pieces = st.one_of(tensor, tensor, tensor, unknown_fields(), *scalar_entries(message))
    drawn = draw(st.lists(pieces, min_size=1, max_size=8))
    # Most examples also get a tensor with data, where the walk does its work.
    if draw(st.integers(0, 3)):
        parts = draw(tensor_entries())
        parts.insert(draw(st.integers(0, len(parts))), entry(3, 2, draw(st.binary(max_size=40))))
        number = draw(st.sampled_from(sorted(codec.tensors)))
        drawn.insert(draw(st.integers(0, len(drawn))), entry(number, 2, b"".join(parts)))
    return b"".join(drawn)


# -- comparing ---------------------------------------------------------------------------


def materialize(parsed: Message | frames.Parsed, message: type[Message]) -> Message:
    """A parse result as one protobuf message, the views put back as `data`."""
    if not isinstance(parsed, frames.Parsed):
        assert isinstance(parsed, message)
        return parsed
    whole = message()
    whole.CopyFrom(parsed.message)
    for name in frames.codec_for(message).tensors.values():
        tensor = getattr(parsed, name)
        if isinstance(tensor, frames.TensorView):
            assert tensor.WhichOneof("payload") == "data"
            getattr(whole, name).data = bytes(tensor.data)
    return whole


def outcome(message: type[Message], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", message.FromString(data)
    except DecodeError:
        return "refused", None


def assert_agrees(message: type[Message], data: bytes) -> None:
    expected_kind, expected = outcome(message, data)
    try:
        parsed = frames.codec_for(message).parse(data)
    except DecodeError:
        assert expected_kind == "refused", f"codec refused what protobuf parses: {data!r}"
        return
    assert expected_kind == "ok", f"codec parsed what protobuf refuses: {data!r}"
    got = materialize(parsed, message)
    assert got == expected
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


# -- reading -------------------------------------------------------------------------


@pytest.mark.parametrize("message", TYPES, ids=lambda m: m.__name__)
@EXAMPLES
@given(data=st.data())
def test_parse_agrees_with_protobuf(message: type[Message], data: st.DataObject) -> None:
    assert_agrees(message, data.draw(wire_messages(message)))


@pytest.mark.parametrize("message", TYPES, ids=lambda m: m.__name__)
@EXAMPLES
@given(data=st.data())
def test_truncated_bytes_agree_with_protobuf(message: type[Message], data: st.DataObject) -> None:
    wire = data.draw(wire_messages(message))
    for end in range(len(wire)):
        assert_agrees(message, wire[:end])


@pytest.mark.parametrize("message", [pb.ActivateRequest, pb.GradientResponse])
@EXAMPLES
@given(noise=st.binary(max_size=80))
def test_random_bytes_agree_with_protobuf(message: type[Message], noise: bytes) -> None:
    assert_agrees(message, noise)


def test_canonical_messages_of_every_type_agree() -> None:
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    for message in TYPES:
        built = message()
        for name in frames.codec_for(message).tensors.values():
            encode(x, out=getattr(built, name))
        assert_agrees(message, built.SerializeToString())


def test_a_large_tensor_is_a_view_of_the_received_bytes() -> None:
    x = np.arange(1 << 16, dtype=np.float32)
    request = pb.ActivateRequest(function="sigmoid")
    encode(x, out=request.input)
    request.params["alpha"].number = 0.5
    wire = request.SerializeToString()
    parsed = frames.codec_for(pb.ActivateRequest).parse(wire)
    assert isinstance(parsed, frames.Parsed)
    view = parsed.input.data
    assert isinstance(view, memoryview) and view.readonly and view.obj is wire
    assert parsed.function == "sigmoid" and parsed.params["alpha"].number == 0.5
    assert parsed.HasField("input") and parsed.input.WhichOneof("payload") == "data"
    assert list(parsed.input.shape) == [1 << 16]
    assert np.array_equal(np.frombuffer(view, dtype=np.float32), x)
    # The message itself carries no payload: nothing was copied into it.
    assert len(parsed.message.input.data) == 0


def test_region_payloads_stay_with_protobuf() -> None:
    request = pb.GradientRequest(function="relu")
    request.input.dtype = tensor_pb2.DTYPE_FLOAT32
    request.input.shape[:] = [4]
    request.input.region.segment = "/seg"
    encode(np.ones(4, dtype=np.float32), out=request.grad_output)
    parsed = frames.codec_for(pb.GradientRequest).parse(request.SerializeToString())
    assert parsed.input.WhichOneof("payload") == "region"
    assert parsed.input.region.segment == "/seg"
    assert parsed.grad_output.WhichOneof("payload") == "data"


def test_data_then_region_keeps_the_region_and_region_then_data_the_data() -> None:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1])
    head = tensor.SerializeToString()
    data = entry(3, 2, b"\x00\x00\x80\x3f")
    region = entry(4, 2, entry(1, 2, b"/s"))
    for body in (head + data + region, head + region + data, data + head + data):
        assert_agrees(pb.ActivateRequest, entry(2, 2, body))


def test_parsed_refuses_whole_message_methods() -> None:
    x = np.zeros(8, dtype=np.float64)
    request = pb.ActivateRequest(function="tanh")
    encode(x, out=request.input)
    parsed = frames.codec_for(pb.ActivateRequest).parse(request.SerializeToString())
    with pytest.raises(AttributeError, match="SerializeToString"):
        parsed.SerializeToString()


# -- writing -------------------------------------------------------------------------


def arrays() -> st.SearchStrategy[np.ndarray[Any, Any]]:
    shape = st.lists(st.integers(0, 5), max_size=3)
    dtype = st.sampled_from(["float32", "float64", "float16"])
    return st.builds(
        lambda s, d, seed: np.random.default_rng(seed).standard_normal(s).astype(d),
        shape,
        dtype,
        st.integers(0, 1000),
    )


@EXAMPLES
@given(x=arrays(), g=st.none() | arrays(), function=st.text(max_size=8))
def test_outgoing_bytes_parse_into_the_encoded_message(
    x: np.ndarray[Any, Any], g: np.ndarray[Any, Any] | None, function: str
) -> None:
    tensors = {"input": x} if g is None else {"input": x, "grad_output": g}
    rest = pb.GradientRequest(function=function, return_output=True)
    rest.params["alpha"].number = 0.25
    outgoing = frames.Outgoing(frames.codec_for(pb.GradientRequest), rest, tensors)
    expected = pb.GradientRequest()
    expected.CopyFrom(rest)
    for name, array in tensors.items():
        encode(array, out=getattr(expected, name))
    wire = frames.codec_for(pb.GradientRequest).serialize(outgoing)
    assert pb.GradientRequest.FromString(wire) == expected
    assert outgoing.ByteSize() == len(wire) == expected.ByteSize()
    assert outgoing.SerializeToString() == wire  # serializable again: a retried call
    # Read back by the codec too, views and all.
    assert materialize(frames.codec_for(pb.GradientRequest).parse(wire), pb.GradientRequest) == (
        expected
    )


def test_outgoing_copies_strided_and_other_dtypes() -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    strided = base[:, ::2]
    listed = [[1.0, 2.0]]
    outgoing = frames.Outgoing(
        frames.codec_for(pb.DenseRequest),
        pb.DenseRequest(activation="relu"),
        {"input": strided, "weight": np.asarray(listed)},
    )
    got = pb.DenseRequest.FromString(outgoing.SerializeToString())
    assert got.input == encode(np.ascontiguousarray(strided))
    assert got.weight == encode(np.asarray(listed, dtype=np.float64))
    assert got.activation == "relu"


def test_frame_arrays_write_in_place_and_end_with_finish() -> None:
    codec = frames.codec_for(pb.GradientResponse)
    response = pb.GradientResponse()
    encode(np.float32([2.0]), out=response.grad_params["slope"])
    shape = (3, 5)
    frame = frames.Frame(
        codec,
        response,
        {"grad_input": (np.dtype("float32"), shape), "output": (np.dtype("float64"), shape)},
    )
    x = np.arange(15, dtype=np.float64).reshape(shape)
    frame.array("grad_input")[...] = x
    frame.array("output")[...] = -x
    wire = frame.finish()
    assert isinstance(wire, bytes)
    got = pb.GradientResponse.FromString(wire)
    assert got.grad_input == encode(x.astype(np.float32))
    assert got.output == encode(-x)
    assert got.grad_params["slope"] == encode(np.float32([2.0]))
    with pytest.raises(RuntimeError, match="finished"):
        frame.array("output")


@EXAMPLES
@given(x=arrays(), with_output=st.booleans())
def test_prepared_bytes_equal_the_outgoing_bytes_of_the_same_results(
    x: np.ndarray[Any, Any], with_output: bool
) -> None:
    codec = frames.codec_for(pb.GradientResponse)
    results = {"grad_input": x, **({"output": -x} if with_output else {})}
    prepared = frames.Prepared(
        codec, pb.GradientResponse(), {n: (a.dtype, a.shape) for n, a in results.items()}
    )
    for name, array in results.items():
        prepared.array(name)[...] = array
    size = prepared.ByteSize()
    wire = codec.serialize(prepared)
    assert wire == frames.Outgoing(codec, pb.GradientResponse(), results).serialize()
    assert size == len(wire) == prepared.ByteSize()
    assert prepared.serialize() is wire  # once made, the same bytes
    assert prepared.HasField("grad_input") and prepared.HasField("output") is with_output
    # Read as the message would be, from the bytes sent; the rooms are gone.
    assert prepared.grad_input == encode(x)
    with pytest.raises(RuntimeError, match="serialized"):
        prepared.array("grad_input")


def test_frame_refuses_a_tensor_set_in_the_message_too() -> None:
    response = pb.ActivateResponse()
    encode(np.float32([1.0]), out=response.output)
    with pytest.raises(ValueError, match="output"):
        frames.Frame(
            frames.codec_for(pb.ActivateResponse), response, {"output": (np.dtype("f4"), (1,))}
        )


def test_frame_for_keeps_small_tensors_in_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "SMALL_BYTES", 1024)
    x = np.ones(4, dtype=np.float32)
    small = frames.frame_for(pb.ActivateRequest(function="relu"), {"input": x})
    assert isinstance(small, pb.ActivateRequest) and small.input == encode(x)


def test_frame_for_frames_large_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "SMALL_BYTES", 1024)
    x = np.ones(1024, dtype=np.float32)
    large = frames.frame_for(pb.ActivateRequest(function="relu"), {"input": x})
    assert isinstance(large, frames.Outgoing)
    assert large.input == encode(x) and large.function == "relu"


def _chunks() -> Iterator[int]:
    yield from (0, 1, 127, 128, 16383, 16384, 2**32, 2**63)


def test_varints_round_trip() -> None:
    for value in _chunks():
        wire = varint(value)
        assert frames._varint(wire, 0, len(wire)) == (value, len(wire))
