"""sigmoid(x) = 1 / (1 + exp(-x))."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, Logistic, sigmoid


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return sigmoid(b, x)


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    logistic = Logistic(b, x)
    grad_input = b.op("Mul", grad_output, logistic.slope)
    return GradientOutputs(grad_input, logistic.s if with_output else None)


SIGMOID = Activation(forward=forward, gradient=gradient)
