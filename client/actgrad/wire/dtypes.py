"""The one dtype table: every fact about a served element type, in one row.

Everything that needs a dtype fact reads it here: the codec (wire enum <-> numpy),
the graph builders (ONNX element type, which graph computes it), the Open Inference
Protocol front end and the Triton export (OIP datatype names). Nothing here imports
grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from actgrad.v1 import tensor_pb2

__all__ = ["BFLOAT16", "DTYPES", "DTypeInfo", "dtype_info", "oip_dtype"]

BFLOAT16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)


@dataclass(frozen=True)
class DTypeInfo:
    """One served dtype.

    `graph` is the dtype of the ONNX graph that computes it: its own for float32,
    float64 and float16; float32 for bfloat16, which onnxruntime's Python API cannot
    return and whose CPU kernels are few, so it is widened exactly to float32 and
    rounded back (round-to-nearest-even) by ml_dtypes.
    """

    name: str
    wire: int  # actgrad.v1.DType
    numpy: np.dtype[Any]  # little-endian, as the wire is
    onnx: int  # onnx.TensorProto.DataType value (a fact of the ONNX spec)
    oip: str  # Open Inference Protocol datatype name (a fact of the KServe v2 spec)
    graph: str

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def has_graph(self) -> bool:
        """True when an ONNX graph of this very dtype exists (exportable to Triton)."""
        return self.graph == self.name


DTYPES: tuple[DTypeInfo, ...] = (
    DTypeInfo("float32", tensor_pb2.DTYPE_FLOAT32, np.dtype("<f4"), 1, "FP32", "float32"),
    DTypeInfo("float64", tensor_pb2.DTYPE_FLOAT64, np.dtype("<f8"), 11, "FP64", "float64"),
    DTypeInfo("float16", tensor_pb2.DTYPE_FLOAT16, np.dtype("<f2"), 10, "FP16", "float16"),
    DTypeInfo("bfloat16", tensor_pb2.DTYPE_BFLOAT16, BFLOAT16, 16, "BF16", "float32"),
)
_BY_WIRE = {info.wire: info for info in DTYPES}
_BY_NAME = {info.name: info for info in DTYPES}
_BY_OIP = {info.oip: info for info in DTYPES}
# The served numpy dtypes themselves: one dict lookup on every call's hot path.
_BY_NUMPY: dict[Any, DTypeInfo] = {info.numpy: info for info in DTYPES}


def dtype_info(key: int | str | np.dtype[Any] | type) -> DTypeInfo:
    """Looks up a row by wire enum, name or numpy dtype; KeyError when not served."""
    if isinstance(key, int):
        return _BY_WIRE[key]
    if isinstance(key, str):
        return _BY_NAME[key]
    found = _BY_NUMPY.get(key)
    if found is not None:
        return found
    dtype = np.dtype(key)
    if dtype == BFLOAT16:
        return _BY_NAME["bfloat16"]
    name = dtype.newbyteorder("=").name if dtype.kind == "f" else dtype.name
    if name not in _BY_NAME:
        raise KeyError(name)
    return _BY_NAME[name]


def oip_dtype(datatype: str) -> DTypeInfo | None:
    """The row of an Open Inference Protocol datatype name ("FP32"), None when not served."""
    return _BY_OIP.get(datatype)
