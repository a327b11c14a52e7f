"""swish(x) = x * sigmoid(beta * x) (SiLU for beta = 1)."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, SigmoidParts, finite, sigmoid_parts


def _swish(b: GraphBuilder, x: str, parts: SigmoidParts) -> str:
    # x * e / (1 + e) on the negative side with x made finite, so that swish(-inf) = 0
    # instead of -inf * 0.
    vanishing = b.op("Mul", finite(b, x), parts.e)
    return b.op("Mul", b.op("Where", parts.nonneg, x, vanishing), parts.r)


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _swish(b, x, sigmoid_parts(b, b.op("Mul", params["beta"], x)))


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    v = b.op("Mul", params["beta"], x)
    parts = sigmoid_parts(b, v)
    # swish' = s + v s (1 - s) = s (1 + v (1 - s)); finite(v) makes the v = +-inf limits 1, 0.
    inner = b.op("Add", b.const(1.0), b.op("Mul", finite(b, v), parts.one_minus_s))
    derivative = b.op("Mul", parts.s, inner)
    y = _swish(b, x, parts) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


SWISH = Activation(forward=forward, gradient=gradient)
