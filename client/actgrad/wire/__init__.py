"""What both ends of actgrad share, without grpc: dtypes, tensors, chunks, parameter text.

`import actgrad.wire` loads numpy, ml_dtypes and the protobuf messages, but neither
grpc nor the client; the server's engine and catalog use it, and so does the SDK.

- `actgrad.wire.dtypes`: the one dtype table (wire enum, numpy, ONNX, OIP, graph dtype);
- `actgrad.wire.tensors`: numpy <-> wire `Tensor`, with every shape check;
- `actgrad.wire.chunks`: splitting tensors larger than one message, and reassembly;
- `actgrad.wire.params`: parameter values written as text.
"""

from actgrad.wire.chunks import ChunkPlan, plan_chunks
from actgrad.wire.dtypes import BFLOAT16, DTYPES, DTypeInfo, dtype_info, oip_dtype
from actgrad.wire.params import parse_param_value
from actgrad.wire.tensors import (
    TensorError,
    check_shape,
    decode,
    encode,
    to_float_array,
    wire_dtype,
)

__all__ = [
    "BFLOAT16",
    "DTYPES",
    "ChunkPlan",
    "DTypeInfo",
    "TensorError",
    "check_shape",
    "decode",
    "dtype_info",
    "encode",
    "oip_dtype",
    "parse_param_value",
    "plan_chunks",
    "to_float_array",
    "wire_dtype",
]
