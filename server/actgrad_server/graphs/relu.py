"""relu(x) = max(x, 0) and leaky_relu(x) = x if x > 0 else alpha * x.

At the kink the derivative follows PyTorch: relu'(0) = 0, leaky_relu'(0) = alpha.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, propagate_nan


def relu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Relu", x)


def relu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    positive = b.op("Greater", x, b.const(0.0))
    grad_input = propagate_nan(b, x, b.op("Where", positive, grad_output, b.const(0.0)))
    return GradientOutputs(grad_input, b.op("Relu", x) if with_output else None)


def leaky_relu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    # LeakyRelu takes alpha as an attribute (and has no float64 kernel); alpha is an input.
    positive = b.op("Greater", x, b.const(0.0))
    return b.op("Where", positive, x, b.op("Mul", params["alpha"], x))


def leaky_relu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    alpha = params["alpha"]
    positive = b.op("Greater", x, b.const(0.0))
    scaled = b.op("Where", positive, grad_output, b.op("Mul", alpha, grad_output))
    y = b.op("Where", positive, x, b.op("Mul", alpha, x)) if with_output else None
    return GradientOutputs(propagate_nan(b, x, scaled), y)


RELU = Activation(forward=relu_forward, gradient=relu_gradient)
LEAKY_RELU = Activation(forward=leaky_relu_forward, gradient=leaky_relu_gradient)
