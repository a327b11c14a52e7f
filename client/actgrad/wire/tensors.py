"""numpy <-> wire `Tensor`, and the shape checks.

Shared by the SDK and the server; dtype facts come from `actgrad.wire.dtypes`.
Decoding never allocates from an unchecked shape: dimensions, rank, element count
and byte length are all validated with Python integers before `np.frombuffer`
makes a zero-copy view of the bytes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from actgrad.v1 import tensor_pb2
from actgrad.wire.dtypes import DTypeInfo, dtype_info

__all__ = [
    "TensorError",
    "check_shape",
    "decode",
    "encode",
    "to_float_array",
    "wire_dtype",
]


class TensorError(ValueError):
    """A tensor that cannot be encoded or decoded; `field` names where it is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def to_float_array(value: Any, *, name: str = "x") -> npt.NDArray[Any]:
    """Returns `value` as a C-contiguous little-endian array of a served dtype.

    Lists and scalars become float64 unless they already are float32/16/bf16
    numpy values; non-contiguous and big-endian arrays are copied. Integer,
    boolean, complex and object arrays raise TypeError: converting them
    silently would hide a caller's mistake; so do text and a list holding
    anything but numbers (`check_numbers`).
    """
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
    else:
        array = np.asarray(value)
        if array.dtype.kind in "iu" and array.size > 0:
            raise TypeError(
                f"{name}: integer values are not served; pass floats "
                f"(e.g. np.asarray(...), dtype=np.float32)"
            )
        if array.dtype.kind in "iub" and array.size == 0:
            array = array.astype(np.float64)
    check_numbers(value, array, name=name)
    try:
        info = dtype_info(array.dtype)
    except KeyError:
        raise TypeError(
            f"{name}: dtype {array.dtype} is not served; use float32, float64, float16 or bfloat16"
        ) from None
    if array.dtype != info.numpy or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=info.numpy)
    return array


_SHOWN = 40


def check_numbers(value: Any, array: npt.NDArray[Any], *, name: str) -> None:
    """TypeError naming the first item of `value` that is not a number, where numpy made
    `array` of text, bytes or Python objects.

    Example: ``[1.0, "2"]`` (an array of dtype <U32 to numpy) gives ``x: expected
    numbers, got str '2'``.
    """
    if array.dtype.kind not in "USO":
        return
    if isinstance(value, np.ndarray | np.generic):
        raise TypeError(f"{name}: expected numbers, got an array of dtype {array.dtype}")
    found = _non_number(value)
    if found is None or found[0] is None:
        raise TypeError(
            f"{name}: expected numbers, got {'None' if found else type(value).__name__}"
        )
    text = repr(found[0])
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    raise TypeError(f"{name}: expected numbers, got {type(found[0]).__name__} {text}")


def _non_number(value: Any) -> tuple[Any] | None:
    """(the first item of `value`, nested lists walked, that is not a number,) or None."""
    if isinstance(value, list | tuple):
        for item in value:
            found = _non_number(item)
            if found is not None:
                return found
        return None
    if isinstance(value, int | float | complex | np.number | np.bool_):
        return None
    return (value,)


def wire_dtype(value: int, *, field: str) -> DTypeInfo:
    """The table row of a wire dtype enum; TensorError naming `field` when there is none."""
    try:
        return dtype_info(int(value))
    except KeyError:
        if value == tensor_pb2.DTYPE_UNSPECIFIED:
            raise TensorError(field, "is unspecified") from None
        raise TensorError(field, f"unknown dtype enum value {value}") from None


def encode(array: npt.NDArray[Any], out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encodes a served-dtype array (see `to_float_array`) into a wire Tensor."""
    array = to_float_array(array)
    tensor = tensor_pb2.Tensor() if out is None else out
    tensor.dtype = dtype_info(array.dtype).wire  # type: ignore[assignment]
    tensor.shape[:] = array.shape
    tensor.data = array.tobytes()
    return tensor


def check_shape(
    shape: list[int] | tuple[int, ...],
    *,
    field: str,
    max_rank: int | None = None,
    max_elements: int | None = None,
) -> int:
    """Validates a shape with Python integers and returns its element count."""
    if max_rank is not None and len(shape) > max_rank:
        raise TensorError(field, f"rank {len(shape)} exceeds the limit of {max_rank}")
    for axis, dim in enumerate(shape):
        if dim < 0:
            raise TensorError(field, f"shape[{axis}] is negative ({dim})")
    count = math.prod(shape)
    if max_elements is not None:
        if count > max_elements:
            raise TensorError(
                field, f"{count} elements exceed the limit of {max_elements} per tensor"
            )
        # Each dimension on its own too: [0, 2**62] has no elements, but numpy
        # cannot even describe it.
        for axis, dim in enumerate(shape):
            if dim > max_elements:
                raise TensorError(
                    field, f"shape[{axis}] = {dim} exceeds the limit of {max_elements} elements"
                )
    return count


def decode(
    tensor: tensor_pb2.Tensor,
    *,
    field: str = "input",
    max_rank: int | None = None,
    max_elements: int | None = None,
) -> npt.NDArray[Any]:
    """Decodes a wire Tensor into a read-only numpy view of its bytes."""
    info = wire_dtype(tensor.dtype, field=f"{field}.dtype")
    shape = tuple(tensor.shape)
    count = check_shape(shape, field=f"{field}.shape", max_rank=max_rank, max_elements=max_elements)
    expected = count * info.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"{field}.data",
            f"has {len(tensor.data)} bytes but shape {list(shape)} of {info.name} needs {expected}",
        )
    return np.frombuffer(tensor.data, dtype=info.numpy).reshape(shape)
