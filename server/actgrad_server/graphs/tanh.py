"""tanh(x), and x * tanh(x)."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, finite, sech2

# onnxruntime's Tanh kernel is accurate (measured <= 2 ulp float32, <= 4 ulp float64 over
# [-60, 60] and down to 1e-30), so it is used directly; only the derivative is built here.


def tanh_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Tanh", x)


def tanh_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    grad_input = b.op("Mul", grad_output, sech2(b, x))
    return GradientOutputs(grad_input, b.op("Tanh", x) if with_output else None)


def xtanh_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Mul", x, b.op("Tanh", x))


def xtanh_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    t = b.op("Tanh", x)
    # finite(x): at x = +-inf the x * sech^2 term is 0, not inf * 0.
    derivative = b.op("Add", t, b.op("Mul", finite(b, x), sech2(b, x)))
    y = b.op("Mul", x, t) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


TANH = Activation(forward=tanh_forward, gradient=tanh_gradient)
XTANH = Activation(forward=xtanh_forward, gradient=xtanh_gradient)
