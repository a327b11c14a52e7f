"""swish(x) = x * sigmoid(beta * x) (SiLU for beta = 1)."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ELEM_TYPES, Activation, GradientOutputs, GraphBuilder, Logistic, finite


def _swish(b: GraphBuilder, x: str, beta: str, s: str) -> str:
    """x * s with x made finite on the side where s vanishes (beta x -> -inf), so that
    swish(-inf) = 0 (beta > 0) instead of -inf * 0, while swish(+inf) stays +inf.

    That side depends on beta's sign, a runtime input, so the clip bounds are computed
    from it on 0-d values: -max / [beta > 0] is -max for beta > 0 and -inf otherwise.
    """
    big, zero, elem_type = b.max_finite, b.const(0.0), ELEM_TYPES[b.compute_dtype]
    low = b.op("Div", b.const(-big), b.op("Cast", b.op("Greater", beta, zero), to=elem_type))
    high = b.op("Div", b.const(big), b.op("Cast", b.op("Less", beta, zero), to=elem_type))
    return b.op("Mul", b.op("Clip", x, low, high), s)


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    beta = params["beta"]
    return _swish(b, x, beta, Logistic(b, b.op("Mul", beta, x)).s)


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    beta = params["beta"]
    # v made finite: at v = +-inf (now +-max) s is still 1 or 0 and the slope 0, and
    # v * slope is 0 instead of inf * 0.
    v = finite(b, b.op("Mul", beta, x))
    logistic = Logistic(b, v)
    # swish' = s + v s (1 - s) = s + v sigmoid'(v)
    derivative = b.op("Add", logistic.s, b.op("Mul", v, logistic.slope))
    y = _swish(b, x, beta, logistic.s) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


SWISH = Activation(forward=forward, gradient=gradient)
