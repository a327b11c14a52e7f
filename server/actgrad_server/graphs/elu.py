"""elu(x) = x if x > 0 else alpha (exp(x) - 1), and celu(x) = max(0, x) +
min(0, alpha (exp(x / alpha) - 1)) (alpha > 0).

As selu: relu(x) plus the negative side evaluated at min(x, 0), where it is an exact 0
for x > 0 (no Where, see _common); expm1 without cancellation near 0. The derivative at 0
is PyTorch's negative branch: elu'(0) = alpha, celu'(0) = exp(0) = 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ELEM_TYPES, Activation, GradientOutputs, GraphBuilder, expm1_nonpositive


def _elu(b: GraphBuilder, x: str, negative: str, alpha: str) -> str:
    return b.op("Add", b.op("Relu", x), b.op("Mul", alpha, expm1_nonpositive(b, negative)))


def elu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _elu(b, x, b.op("Min", x, b.const(0.0)), params["alpha"])


def elu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    alpha = params["alpha"]
    negative = b.op("Min", x, b.const(0.0))
    # elu' = m + alpha (exp(min(x, 0)) - m), m = [x > 0]: for x > 0, exp(0) - 1 = 0
    # exactly; for x <= 0 (and at 0), m = 0. NaN comes through the exp.
    positive = b.op("Cast", b.op("Greater", x, b.const(0.0)), to=ELEM_TYPES[b.compute_dtype])
    exp_part = b.op("Sub", b.op("Exp", negative), positive)
    derivative = b.op("Add", positive, b.op("Mul", alpha, exp_part))
    y = _elu(b, x, negative, alpha) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


def _scaled_negative(b: GraphBuilder, x: str, alpha: str) -> str:
    """min(x, 0) / alpha (alpha > 0), rounded once: exact at alpha = 1."""
    return b.op("Div", b.op("Min", x, b.const(0.0)), alpha)


def _celu(b: GraphBuilder, x: str, scaled: str, alpha: str) -> str:
    return b.op("Add", b.op("Relu", x), b.op("Mul", alpha, expm1_nonpositive(b, scaled)))


def celu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    alpha = params["alpha"]
    return _celu(b, x, _scaled_negative(b, x, alpha), alpha)


def celu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    alpha = params["alpha"]
    scaled = _scaled_negative(b, x, alpha)
    # celu' = exp(min(x, 0) / alpha): 1 for x >= 0, exp(x / alpha) below.
    derivative = b.op("Exp", scaled)
    y = _celu(b, x, scaled, alpha) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


ELU = Activation(forward=elu_forward, gradient=elu_gradient)
CELU = Activation(forward=celu_forward, gradient=celu_gradient)
