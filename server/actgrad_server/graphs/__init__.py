"""ONNX graphs for every served activation function and its vector-Jacobian product.

One module per function (or family) holds its two graph bodies, an `Activation`;
the catalog (`actgrad_server.catalog`) names each one in its function's entry, and
these builders take that entry, typed by what they read of it (`Entry`), so that the
graphs never import the catalog. Each graph takes ``x`` (and ``grad_output`` for
gradients) of the served dtype and any shape, plus one 0-d float64 input per runtime
parameter (the catalog's ``Function.runtime_params``), and is built for opset
:data:`OPSET`. float16 is computed in float32 inside the graph.

Every function also takes the optional static ``x_rank`` (required by the prelu
gradient): with it, inputs and outputs are declared with that rank and symbolic dims and
the model passes ``onnx.checker.check_model(full_check=True)``; without it they carry no
shape (onnxruntime then accepts any rank), which the checker's main-graph rule refuses.
"""

from __future__ import annotations

import onnx

from ._common import IR_VERSION, OPSET, Activation, Entry, GraphBuilder
from .dense import build_dense
from .flow import FLOW_OUTPUTS, build_flow

__all__ = [
    "FLOW_OUTPUTS",
    "IR_VERSION",
    "OPSET",
    "Activation",
    "Entry",
    "build_dense",
    "build_flow",
    "build_forward",
    "build_gradient",
]


def _rank(static: dict[str, object]) -> int | None:
    x_rank = static.pop("x_rank", None)
    if x_rank is None or (isinstance(x_rank, int) and not isinstance(x_rank, bool)):
        return x_rank
    raise ValueError(f"x_rank must be an int, got {x_rank!r}")


def build_forward(function: Entry, dtype: str, **static: object) -> onnx.ModelProto:
    """Graph ``x (+ parameters) -> y`` of a catalog function."""
    b = GraphBuilder(dtype, f"{function.name}_forward", _rank(static))
    x = b.input("x")
    params = {name: b.scalar_input(name) for name in function.runtime_params}
    b.output("y", function.graph.forward(b, x, params, **static))
    return b.model()


def build_gradient(
    function: Entry, dtype: str, *, with_output: bool, **static: object
) -> onnx.ModelProto:
    """Graph ``x, grad_output (+ parameters) -> grad_input [, grad_<tensor>] [, y]``."""
    activation = function.graph
    compute_dtype = "float64" if activation.gradient_in_float64 else None
    b = GraphBuilder(dtype, f"{function.name}_gradient", _rank(static), compute_dtype)
    x = b.input("x")
    params = {name: b.scalar_input(name) for name in function.runtime_params}
    grad_output = b.input("grad_output")
    outputs = activation.gradient(b, x, grad_output, params, with_output=with_output, **static)
    b.output("grad_input", outputs.grad_input)
    for name, value, shape in outputs.extra:
        b.output(name, value, shape)
    if with_output:
        if outputs.y is None:
            raise AssertionError(f"{function.name} gradient did not produce y")
        b.output("y", outputs.y)
    return b.model()
