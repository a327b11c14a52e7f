"""ONNX graphs for every served activation function and its vector-Jacobian product.

Each graph takes ``x`` (and ``grad_output`` for gradients) of the served dtype and any
shape, plus one 0-d float64 input per runtime parameter (:func:`runtime_inputs`), and is
built for opset :data:`OPSET`. float16 is computed in float32 inside the graph.

Every function also takes the optional static ``x_rank`` (required by the prelu
gradient): with it, inputs and outputs are declared with that rank and symbolic dims and
the model passes ``onnx.checker.check_model(full_check=True)``; without it they carry no
shape (onnxruntime then accepts any rank), which the checker's main-graph rule refuses.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from ._common import IR_VERSION, OPSET, Activation, GraphBuilder
from .gelu import GELU
from .prelu import PRELU
from .relu import LEAKY_RELU, RELU
from .selu import SELU
from .sigmoid import SIGMOID
from .softmax import SOFTMAX
from .swish import SWISH
from .tanh import TANH, XTANH
from .xsin import XSIN

__all__ = [
    "FUNCTIONS",
    "IR_VERSION",
    "OPSET",
    "build_forward",
    "build_gradient",
    "runtime_inputs",
]

_ACTIVATIONS: Mapping[str, Activation] = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "prelu": PRELU,
    "softmax": SOFTMAX,
    "swish": SWISH,
    "gelu": GELU,
    "selu": SELU,
    "xtanh": XTANH,
    "xsin": XSIN,
}
FUNCTIONS: tuple[str, ...] = tuple(_ACTIVATIONS)


def _activation(function: str) -> Activation:
    try:
        return _ACTIVATIONS[function]
    except KeyError:
        raise ValueError(f"unknown function {function!r}") from None


def runtime_inputs(function: str) -> tuple[str, ...]:
    """Names of the 0-d float64 parameter inputs of ``function``'s graphs, in order."""
    return _activation(function).params


def _rank(static: dict[str, object]) -> int | None:
    x_rank = static.pop("x_rank", None)
    if x_rank is None or (isinstance(x_rank, int) and not isinstance(x_rank, bool)):
        return x_rank
    raise ValueError(f"x_rank must be an int, got {x_rank!r}")


def build_forward(function: str, dtype: str, **static: object) -> onnx.ModelProto:
    """Graph ``x (+ parameters) -> y``."""
    activation = _activation(function)
    b = GraphBuilder(dtype, f"{function}_forward", _rank(static))
    x = b.input("x")
    params = {name: b.scalar_input(name) for name in activation.params}
    b.output("y", activation.forward(b, x, params, **static))
    return b.model()


def build_gradient(
    function: str, dtype: str, *, with_output: bool, **static: object
) -> onnx.ModelProto:
    """Graph ``x, grad_output (+ parameters) -> grad_input [, grad_slope] [, y]``."""
    activation = _activation(function)
    compute_dtype = "float64" if activation.gradient_in_float64 else None
    b = GraphBuilder(dtype, f"{function}_gradient", _rank(static), compute_dtype)
    x = b.input("x")
    params = {name: b.scalar_input(name) for name in activation.params}
    grad_output = b.input("grad_output")
    outputs = activation.gradient(b, x, grad_output, params, with_output=with_output, **static)
    b.output("grad_input", outputs.grad_input)
    for name, value, shape in outputs.extra:
        b.output(name, value, shape)
    if with_output:
        if outputs.y is None:
            raise AssertionError(f"{function} gradient did not produce y")
        b.output("y", outputs.y)
    return b.model()
