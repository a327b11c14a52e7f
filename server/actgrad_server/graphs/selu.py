"""selu(x) = gamma * (x if x > 0 else alpha * (exp(x) - 1)).

The Selu op takes alpha and gamma as attributes and has no float64 kernel, so the graph
is built from primitives; the float64 defaults cast to float32 are exactly the ONNX
Selu defaults. The derivative at 0 is gamma * alpha (PyTorch's negative branch, x <= 0).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder

# expm1(x) = -1 in every served precision for x <= -40 (float64 ulp(1) / 2 > exp(-40)).
_EXPM1_SATURATION = -40.0


def _expm1_negative(b: GraphBuilder, x: str) -> str:
    """expm1(min(x, 0)), accurate near 0.

    exp(x) - 1 loses all digits as x -> 0; Kahan's trick (u - 1) * x / log(u), u = exp(x),
    cancels the rounding error of u and is accurate to a few ulps. x is clipped so that
    u never reaches 0 (log(0) would turn -1 into 0 or NaN).
    """
    xn = b.op("Clip", x, b.const(_EXPM1_SATURATION), b.const(0.0))
    u = b.op("Exp", xn)
    u_minus_1 = b.op("Sub", u, b.const(1.0))
    kahan = b.op("Div", b.op("Mul", u_minus_1, xn), b.op("Log", u))
    expm1 = b.op("Where", b.op("Equal", u, b.const(1.0)), xn, kahan)
    return expm1


def _selu(b: GraphBuilder, x: str, positive: str, alpha: str, gamma: str, expm1: str) -> str:
    inner = b.op("Where", positive, x, b.op("Mul", alpha, expm1))
    return b.op("Mul", gamma, inner)


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    positive = b.op("Greater", x, b.const(0.0))
    expm1 = _expm1_negative(b, x)
    return _selu(b, x, positive, params["alpha"], params["gamma"], expm1)


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    alpha, gamma = params["alpha"], params["gamma"]
    positive = b.op("Greater", x, b.const(0.0))
    exp = b.op("Exp", b.op("Min", x, b.const(0.0)))
    negative_slope = b.op("Mul", b.op("Mul", gamma, alpha), exp)
    derivative = b.op("Where", positive, gamma, negative_slope)
    y = _selu(b, x, positive, alpha, gamma, _expm1_negative(b, x)) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


SELU = Activation(forward=forward, gradient=gradient)
