"""x * sin(x)."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Mul", x, b.op("Sin", x))


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    sin = b.op("Sin", x)
    derivative = b.op("Add", sin, b.op("Mul", x, b.op("Cos", x)))
    y = b.op("Mul", x, sin) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


XSIN = Activation(forward=forward, gradient=gradient)
