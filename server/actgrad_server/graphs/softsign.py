"""softsign(x) = x / (1 + |x|)."""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, finite


def _denominator(b: GraphBuilder, x: str) -> str:
    """1 + |x| of x made finite: +-max / (1 + max) is +-1 where x = +-inf, not inf / inf."""
    return b.op("Add", b.op("Abs", x), b.const(1.0))


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    x = finite(b, x)
    return b.op("Div", x, _denominator(b, x))


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    x = finite(b, x)
    denominator = _denominator(b, x)
    # softsign' = 1 / (1 + |x|)^2, squared after the reciprocal so that nothing overflows.
    r = b.op("Reciprocal", denominator)
    y = b.op("Div", x, denominator) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, b.op("Mul", r, r)), y)


SOFTSIGN = Activation(forward=forward, gradient=gradient)
