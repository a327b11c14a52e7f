"""selu(x) = gamma * (x if x > 0 else alpha * (exp(x) - 1)).

The Selu op takes alpha and gamma as attributes and has no float64 kernel, so the graph
is built from primitives; the float64 defaults cast to float32 are exactly the ONNX
Selu defaults. The derivative at 0 is gamma * alpha (PyTorch's negative branch, x <= 0).
Both sides are computed and added, one of the two terms an exact 0 (no Where, see
_common).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ELEM_TYPES, Activation, GradientOutputs, GraphBuilder


def _half_expm1(b: GraphBuilder, negative: str) -> str:
    """expm1(z) / 2 for z = min(x, 0), accurate near 0 and in the tail.

    exp(z) - 1 loses all digits as z -> 0. expm1(z) = 2t / (1 - t) with t = tanh(z / 2)
    has no cancellation for z <= 0 (1 - t is in [1, 2]) and is a few ulps from exact
    with onnxruntime's Tanh (<= 2 ulp float32, <= 4 ulp float64); it is -1 at -inf.
    """
    t = b.op("Tanh", b.op("Mul", negative, b.const(0.5)))
    return b.op("Div", t, b.op("Sub", b.const(1.0), t))


def _selu(b: GraphBuilder, x: str, negative: str, gamma: str, gamma_alpha: str) -> str:
    """gamma * relu(x) + 2 gamma alpha * expm1(min(x, 0)) / 2: one term is 0 on each side."""
    tail = b.op("Mul", _half_expm1(b, negative), b.op("Mul", gamma_alpha, b.const(2.0)))
    return b.op("Add", b.op("Mul", b.op("Relu", x), gamma), tail)


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    gamma = params["gamma"]
    negative = b.op("Min", x, b.const(0.0))
    return _selu(b, x, negative, gamma, b.op("Mul", gamma, params["alpha"]))


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    gamma = params["gamma"]
    gamma_alpha = b.op("Mul", gamma, params["alpha"])
    negative = b.op("Min", x, b.const(0.0))
    # selu' = gamma * m + gamma * alpha * (exp(min(x, 0)) - m), m = [x > 0]: for x > 0,
    # exp(0) - 1 = 0 exactly; for x <= 0 (and at 0), m = 0. NaN comes through the exp.
    positive = b.op("Cast", b.op("Greater", x, b.const(0.0)), to=ELEM_TYPES[b.compute_dtype])
    exp_part = b.op("Sub", b.op("Exp", negative), positive)
    derivative = b.op(
        "Add",
        b.op("Mul", positive, gamma),
        b.op("Mul", exp_part, gamma_alpha),
    )
    y = _selu(b, x, negative, gamma, gamma_alpha) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


SELU = Activation(forward=forward, gradient=gradient)
