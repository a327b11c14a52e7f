"""What both ends of actgrad share, without grpc: dtypes, tensors, chunks, parameter text.

`import actgrad.wire` loads numpy, ml_dtypes and the protobuf messages, but neither
grpc nor the client; the server's engine and catalog use it, and so does the SDK.

- `actgrad.wire.dtypes`: the one dtype table (wire enum, numpy, ONNX, OIP, graph dtype);
- `actgrad.wire.tensors`: numpy <-> wire `Tensor`, with every shape check;
- `actgrad.wire.chunks`: splitting tensors larger than one message, and reassembly;
- `actgrad.wire.params`: parameter values written as text;
- `actgrad.wire.frames`: the tensor-bearing messages read and written without copying
  their payloads (`codec_for`, `frame_for`), the (de)serializers of both ends.
"""

from actgrad.wire.chunks import ChunkPlan, plan_chunks
from actgrad.wire.dtypes import BFLOAT16, DTYPES, DTypeInfo, dtype_info, oip_dtype
from actgrad.wire.frames import Codec, Frame, Outgoing, Parsed, Prepared, codec_for, frame_for
from actgrad.wire.params import parse_param_value
from actgrad.wire.tensors import (
    TensorError,
    check_numbers,
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
    "Codec",
    "DTypeInfo",
    "Frame",
    "Outgoing",
    "Parsed",
    "Prepared",
    "TensorError",
    "check_numbers",
    "check_shape",
    "codec_for",
    "decode",
    "dtype_info",
    "encode",
    "frame_for",
    "oip_dtype",
    "parse_param_value",
    "plan_chunks",
    "to_float_array",
    "wire_dtype",
]
