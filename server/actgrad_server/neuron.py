"""The neuron layer and the deep-network probe: what a request must satisfy, and the
probe's weights.

Dense: x [..., in], weight [out, in], bias [out], grad_output [..., out], all of x's
dtype; the net output [..., out] within the element limit, as every tensor of a request
is. Gradient flow: sizes within the limits, an initialisation scheme, and the weights,
input and upstream gradient drawn exactly as documented (docs/vanishing-gradients.md).
Errors are InvalidArgument naming the field. Nothing here imports grpc or onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actgrad.wire import dtype_info
from actgrad_server.errors import InvalidArgument, OverLimit, shown

__all__ = [
    "FLOW_DEFAULTS",
    "INITS",
    "MAX_DEPTH",
    "FlowInputs",
    "check_flow",
    "dense_shape",
    "flow_dtype",
    "flow_inputs",
]


def _same_dtype(array: npt.NDArray[Any], like: npt.NDArray[Any], field: str) -> None:
    if array.dtype != like.dtype:
        raise InvalidArgument(f"{field}: dtype {array.dtype} differs from the input's {like.dtype}")


def dense_shape(
    x: npt.NDArray[Any],
    weight: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
    grad_output: npt.NDArray[Any] | None,
    *,
    max_elements: int,
    input_field: str = "input",
) -> tuple[int, ...]:
    """The net output's shape [..., out], or InvalidArgument naming the field that does not fit
    (the input as `input_field`: each front end names it as its wire does)."""
    if x.ndim < 1:
        raise InvalidArgument(
            f"{input_field}: must have at least one dimension ([..., in]), got a 0-d tensor"
        )
    _same_dtype(weight, x, "weight")
    if weight.ndim != 2:
        raise InvalidArgument(f"weight: must be [out, in], got shape {list(weight.shape)}")
    out_features, in_features = weight.shape
    if in_features != x.shape[-1]:
        raise InvalidArgument(
            f"weight: shape {list(weight.shape)} takes {in_features} inputs, but the input's "
            f"last dimension is {x.shape[-1]} (input shape {list(x.shape)})"
        )
    if out_features == 0 or in_features == 0:
        raise InvalidArgument(f"weight: dimensions must be > 0, got shape {list(weight.shape)}")
    if bias is not None:
        _same_dtype(bias, x, "bias")
        if bias.shape != (out_features,):
            raise InvalidArgument(
                f"bias: must be [{out_features}] (weight's first dimension), got shape "
                f"{list(bias.shape)}"
            )
    z_shape = (*x.shape[:-1], out_features)
    if math.prod(z_shape) > max_elements:
        raise OverLimit(
            f"output: shape {list(z_shape)} has {math.prod(z_shape)} elements, over the limit "
            f"of {max_elements} per tensor"
        )
    if grad_output is not None:
        _same_dtype(grad_output, x, "grad_output")
        if grad_output.shape != z_shape:
            raise InvalidArgument(
                f"grad_output: shape {list(grad_output.shape)} differs from the output's "
                f"{list(z_shape)}"
            )
    return z_shape


#: Weight initialisations of the gradient-flow probe: name -> (std for fan n, uniform?).
INITS: dict[str, tuple[Callable[[int, float | None], float], bool]] = {
    "xavier_normal": (lambda n, std: math.sqrt(2.0 / (n + n)), False),
    "xavier_uniform": (lambda n, std: math.sqrt(2.0 / (n + n)), True),
    "he_normal": (lambda n, std: math.sqrt(2.0 / n), False),
    "he_uniform": (lambda n, std: math.sqrt(2.0 / n), True),
    "lecun_normal": (lambda n, std: math.sqrt(1.0 / n), False),
    "normal": (lambda n, std: float(std or 0.0), False),
}
#: The deepest probe: one graph holds some 40 nodes per layer.
MAX_DEPTH = 1000
#: The probe's sizes and scheme where a caller names none (the SDK's keyword defaults and
#: the HTTP front end's; gRPC's request has no "absent" for them and needs every one).
FLOW_DEFAULTS: dict[str, Any] = {
    "depth": 30,
    "width": 256,
    "batch": 128,
    "init": "xavier_normal",
    "seed": 0,
    "residual": False,
    "normalize": False,
    "dtype": "float64",
}


@dataclass(frozen=True)
class FlowInputs:
    """The probe's float64 tensors, drawn in the documented order."""

    weights: list[npt.NDArray[np.float64]]
    x: npt.NDArray[np.float64]
    g: npt.NDArray[np.float64]


#: The probe's dtypes: the graph runs in exactly this precision.
FLOW_DTYPES = ("float32", "float64")


def flow_dtype(value: int | str) -> np.dtype[Any]:
    """The numpy dtype of a request's DType value or dtype name (0 or "": float64)."""
    if value in (0, ""):
        return np.dtype(np.float64)
    try:
        name = dtype_info(value).name
    except KeyError:
        name = f"unknown DType {value}" if isinstance(value, int) else shown(value)
    if name not in FLOW_DTYPES:
        raise InvalidArgument(f"dtype: must be float32 or float64, got {name}")
    return np.dtype(name)


def check_flow(
    *,
    depth: int,
    width: int,
    batch: int,
    init: str,
    init_std: float | None,
    max_elements: int,
) -> None:
    """InvalidArgument naming the field for sizes or an initialisation the probe refuses."""
    for name, value in (("depth", depth), ("width", width), ("batch", batch)):
        if value < 1:
            raise InvalidArgument(f"{name}: must be >= 1, got {value}")
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"depth: must be <= {MAX_DEPTH}, got {depth}")
    for what, count in (
        ("depth * batch * width (activations)", depth * batch * width),
        ("depth * width * width (weights)", depth * width * width),
    ):
        if count > max_elements:
            raise OverLimit(f"depth: {what} = {count} exceeds the limit of {max_elements} elements")
    if init not in INITS:
        raise InvalidArgument(
            f"init: must be one of {', '.join(map(repr, INITS))}, got {shown(init)}"
        )
    if init == "normal":
        if init_std is None or not math.isfinite(init_std) or init_std <= 0:
            raise InvalidArgument(f"init_std: init 'normal' needs a finite std > 0, got {init_std}")
    elif init_std is not None:
        raise InvalidArgument(f"init_std: is only for init 'normal', not {shown(init)}")


def flow_inputs(
    *, depth: int, width: int, batch: int, init: str, init_std: float | None, seed: int
) -> FlowInputs:
    """rng = numpy.random.default_rng(seed); W_1..W_L (n x n) in order, then x, then g.

    Normal schemes draw ``rng.standard_normal((n, n)) * std``, uniform ones
    ``rng.uniform(-a, a, (n, n))`` with ``a = sqrt(3) * std``.
    """
    std_of, uniform = INITS[init]
    std = std_of(width, init_std)
    rng = np.random.default_rng(seed)
    weights = []
    for _ in range(depth):
        if uniform:
            a = math.sqrt(3.0) * std
            weights.append(rng.uniform(-a, a, (width, width)))
        else:
            weights.append(rng.standard_normal((width, width)) * std)
    x = rng.standard_normal((batch, width))
    g = rng.standard_normal((batch, width))
    return FlowInputs(weights, x, g)
