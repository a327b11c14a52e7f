"""softplus(x) = log(1 + exp(beta x)) / beta and logsigmoid(x) = -softplus(-x) (beta = 1).

Both from _common.softplus: max(v, 0) + log1p(exp(-|v|)), exact in both tails, with no
threshold switch (PyTorch's softplus returns x above beta x > 20; here the value is
log(1 + exp(beta x)) / beta everywhere, which differs from x by less than an ulp there).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, Logistic, softplus


def softplus_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    beta = params["beta"]
    return b.op("Div", softplus(b, b.op("Mul", beta, x)), beta)


def softplus_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    beta = params["beta"]
    v = b.op("Mul", beta, x)
    # softplus' = sigmoid(beta x)
    grad_input = b.op("Mul", grad_output, Logistic(b, v).s)
    y = b.op("Div", softplus(b, v), beta) if with_output else None
    return GradientOutputs(grad_input, y)


def logsigmoid_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Neg", softplus(b, b.op("Neg", x)))


def logsigmoid_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    negated = b.op("Neg", x)
    # logsigmoid' = sigmoid(-x), relatively accurate where it vanishes (x -> +inf)
    grad_input = b.op("Mul", grad_output, Logistic(b, negated).s)
    y = b.op("Neg", softplus(b, negated)) if with_output else None
    return GradientOutputs(grad_input, y)


SOFTPLUS = Activation(forward=softplus_forward, gradient=softplus_gradient)
LOGSIGMOID = Activation(forward=logsigmoid_forward, gradient=logsigmoid_gradient)
