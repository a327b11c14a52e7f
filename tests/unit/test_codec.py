"""The dtype table and the wire codec: round trips and refusals before allocation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from actgrad.v1 import tensor_pb2
from actgrad.wire import DTYPES, TensorError, decode, dtype_info, encode, to_float_array


@pytest.mark.parametrize("info", DTYPES, ids=lambda i: i.name)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 5), (2, 3), (1, 1, 1, 4)])
def test_round_trip_keeps_dtype_shape_and_bits(info: object, shape: tuple[int, ...]) -> None:
    row = dtype_info(info.name)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(row.numpy)
    tensor = encode(x)
    assert tensor.dtype == row.wire
    assert list(tensor.shape) == list(shape)
    assert len(tensor.data) == x.size * row.itemsize
    back = decode(tensor)
    assert back.dtype == row.numpy and back.shape == shape
    assert back.tobytes() == x.tobytes()


def test_wire_is_little_endian() -> None:
    tensor = encode(np.array([1.0], dtype=">f4"))
    assert tensor.data == np.array([1.0], dtype="<f4").tobytes() == b"\x00\x00\x80\x3f"
    assert encode(np.array([1.0], dtype=ml_dtypes.bfloat16)).data == b"\x80\x3f"


def test_onnx_type_numbers_match_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    assert dtype_info("float32").onnx == onnx.TensorProto.FLOAT
    assert dtype_info("float64").onnx == onnx.TensorProto.DOUBLE
    assert dtype_info("float16").onnx == onnx.TensorProto.FLOAT16
    assert dtype_info("bfloat16").onnx == onnx.TensorProto.BFLOAT16


def test_non_contiguous_input_is_encoded_in_c_order() -> None:
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = encode(base.T)
    np.testing.assert_array_equal(decode(tensor), base.T)


@pytest.mark.parametrize("value", [np.arange(3), [1, 2, 3], np.array([True]), np.array([1j])])
def test_non_float_input_raises_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        to_float_array(value)


def test_lists_become_float64() -> None:
    assert to_float_array([1.5, 2.0]).dtype == np.float64


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0, "2"], "x: expected numbers, got str '2'"),
        ([[1.0], [None]], "x: expected numbers, got None"),
        ([1.0, b"2"], "x: expected numbers, got bytes b'2'"),
        ("abc", "x: expected numbers, got str 'abc'"),
        ([1.0, "y" * 100], "x: expected numbers, got str '" + "y" * 39 + "..."),
        (np.array(["1.5"]), "x: expected numbers, got an array of dtype <U3"),
    ],
)
def test_text_and_objects_are_refused_as_not_numbers(value: object, message: str) -> None:
    """numpy makes an array of strings (dtype <U32) of a list holding one string: the
    message names what is not a number instead."""
    with pytest.raises(TypeError) as info:
        to_float_array(value)
    assert str(info.value) == message


def _raw(dtype: int, shape: list[int], data: bytes) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        (_raw(0, [1], b"\0" * 4), "input.dtype"),
        (_raw(1, [-1], b""), "input.shape"),
        (_raw(1, [3], b"\0" * 11), "input.data"),
        (_raw(1, [2**40, 2**40], b""), "input.shape"),
        (_raw(1, [1] * 5, b"\0" * 4), "input.shape"),
    ],
)
def test_decode_refuses(tensor: tensor_pb2.Tensor, field: str) -> None:
    with pytest.raises(TensorError) as info:
        decode(tensor, field="input", max_rank=4, max_elements=1 << 20)
    assert info.value.field == field


def test_decoded_array_is_a_view_of_the_message_bytes() -> None:
    tensor = encode(np.ones(4, dtype=np.float32))
    array = decode(tensor)
    assert not array.flags.writeable  # np.frombuffer: no copy of the payload
