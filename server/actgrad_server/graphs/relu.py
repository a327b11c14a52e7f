"""relu(x) = max(x, 0) and leaky_relu(x) = x if x > 0 else alpha * x.

At the kink the derivative follows PyTorch: relu'(0) = 0, leaky_relu'(0) = alpha.
Branches are arithmetic, not Where (see _common): relu(x) + alpha * min(x, 0), and slopes
from the 0/1 `step` of x, which carries x's NaN. A non-finite grad_output where the slope
is 0 (relu, x <= 0) gives NaN, as inf * 0 does (PyTorch gives 0 there).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import (
    Activation,
    GradientOutputs,
    GraphBuilder,
    if_else,
    piecewise_linear,
    step,
    step_slope,
)


def relu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Relu", x)


def relu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    grad_input = b.op("Mul", grad_output, step(b, x))
    return GradientOutputs(grad_input, b.op("Relu", x) if with_output else None)


def leaky_relu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    alpha = params["alpha"]
    # The usual slopes, 0 < alpha <= 1: max(x, alpha x), exact in two kernels (about 2.4x
    # onnxruntime's LeakyRelu against 3.6-4x for the general four); others take those four.
    usual = b.op(
        "And",
        b.op("Greater", alpha, b.const(0.0)),
        b.op("LessOrEqual", alpha, b.const(1.0)),
    )
    return if_else(
        b,
        usual,
        lambda: b.op("Max", x, b.op("Mul", x, alpha)),
        lambda: piecewise_linear(b, x, alpha),
    )


def leaky_relu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    slope = step_slope(b, x, params["alpha"])
    y = b.op("Mul", x, slope) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, slope), y)


RELU = Activation(forward=relu_forward, gradient=relu_gradient)
LEAKY_RELU = Activation(forward=leaky_relu_forward, gradient=leaky_relu_gradient)
