"""The catalog as Open Inference Protocol (KServe v2 / Triton) models.

The models and their names are `actgrad_server.models`' (re-exported here for the
OIP's readers); this module adds the protocol's datatypes and each model's Triton
configuration. The OIP core (`oip/dataplane.py`) and the Triton exporter
(`triton_export.py`) both read this table; it knows nothing of gRPC (`to_proto` writes
the generated `ModelConfig` message, for config.pbtxt and the gRPC front end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actgrad.wire.dtypes import DTYPES
from actgrad_server.models import GRADIENT_SUFFIX, MODELS, VERSION, Model, find_model, lookup_model
from actgrad_server.oip import model_config_pb2 as mc

__all__ = [
    "DATATYPES",
    "GRADIENT_SUFFIX",
    "MODELS",
    "PLATFORM",
    "VERSION",
    "Model",
    "ModelConfig",
    "TensorConfig",
    "config_of",
    "datatype_of",
    "find_model",
    "lookup_model",
    "model_config",
    "to_proto",
]

PLATFORM = "onnxruntime_onnx"

# The served dtypes by OIP datatype name, from the codec's one table (a dtype added
# there is served here too).
DATATYPES: Mapping[str, np.dtype[Any]] = {info.oip: info.numpy for info in DTYPES}
# Triton's model configuration names each datatype TYPE_<OIP name> (TYPE_FP32, ...).
_CONFIG_TYPES: Mapping[str, int] = {
    info.oip: mc.DataType.Value(f"TYPE_{info.oip}") for info in DTYPES
}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype name of a served numpy dtype (float32 -> "FP32")."""
    for name, known in DATATYPES.items():
        if known == dtype:
            return name
    raise KeyError(str(dtype))


@dataclass(frozen=True)
class TensorConfig:
    """One input or output of a model's configuration (`dims` -1: variable)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """A model's Triton configuration as plain values; `to_proto` writes Triton's message."""

    name: str
    backend: str
    max_batch_size: int
    default_model_filename: str
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)


def config_of(
    model: Model,
    *,
    datatype: str = "FP32",
    rank: int | None = None,
    tensor_shapes: Mapping[str, Sequence[int]] | None = None,
    served: bool = True,
) -> ModelConfig:
    """The Triton configuration of `model` for the onnxruntime backend, as plain values.

    `rank` None (the served model, any rank) declares x-shaped tensors as [-1]; an int
    declares that many variable dims. `tensor_shapes` fixes tensor parameters' dims
    (e.g. {"slope": (1,)}); otherwise they are [-1]. `served` marks grad_output optional,
    as the service defaults it to ones; an exported graph needs it.
    """
    if datatype not in _CONFIG_TYPES:
        raise KeyError(datatype)
    x_dims = (-1,) if rank is None else (-1,) * rank
    shapes = tensor_shapes or {}

    def dims(name: str) -> tuple[int, ...]:
        param = name.removeprefix("grad_")
        if param in model.tensor_params:
            return tuple(int(d) for d in shapes.get(param, (-1,)))
        return x_dims

    return ModelConfig(
        name=model.name,
        backend="onnxruntime",
        max_batch_size=0,
        default_model_filename="model.onnx",
        inputs=tuple(
            TensorConfig(
                name, datatype, dims(name), optional=served and name in model.optional_inputs
            )
            for name in model.inputs
        ),
        outputs=tuple(TensorConfig(name, datatype, dims(name)) for name in model.outputs),
    )


def to_proto(config: ModelConfig) -> mc.ModelConfig:
    """Triton's `ModelConfig` message of a plain configuration (config.pbtxt, gRPC)."""
    message = mc.ModelConfig(
        name=config.name,
        backend=config.backend,
        max_batch_size=config.max_batch_size,
        default_model_filename=config.default_model_filename,
    )
    for tensor in config.inputs:
        message.input.add(
            name=tensor.name,
            data_type=_CONFIG_TYPES[tensor.datatype],
            dims=tensor.dims,
            optional=tensor.optional,
        )
    for tensor in config.outputs:
        message.output.add(
            name=tensor.name, data_type=_CONFIG_TYPES[tensor.datatype], dims=tensor.dims
        )
    for key, value in config.parameters.items():
        message.parameters[key].string_value = value
    return message


def model_config(
    model: Model,
    *,
    datatype: str = "FP32",
    rank: int | None = None,
    tensor_shapes: Mapping[str, Sequence[int]] | None = None,
    served: bool = True,
) -> mc.ModelConfig:
    """`config_of` as Triton's message (the Triton export writes it as config.pbtxt)."""
    return to_proto(
        config_of(model, datatype=datatype, rank=rank, tensor_shapes=tensor_shapes, served=served)
    )
