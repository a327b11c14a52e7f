"""sigmoid(x) = 1 / (1 + exp(-x))."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, sigmoid_parts


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return sigmoid_parts(b, x).s


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    parts = sigmoid_parts(b, x)
    return GradientOutputs(b.op("Mul", grad_output, parts.slope), parts.s if with_output else None)


SIGMOID = Activation(forward=forward, gradient=gradient)
