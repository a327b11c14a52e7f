"""mish(x) = x tanh(softplus(x)).

tanh(softplus(x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1) is rational in e^x; written with
p = exp(min(x, 0)) and q = exp(-max(x, 0)) (one of them is exp(-|x|), the other 1) it is
N / D with N = p (p + 2q) and D = N + 2 q^2: every term is positive and in [0, 5], so no
cancellation, no overflow, and both tails are relatively accurate (no Tanh, no log1p).
The derivative has the same parts: 1 - tanh^2 = (D - N)(D + N) / D^2 = 4 q^2 (N + q^2) / D^2
and sigmoid(x) = p / (p + q).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, finite


class _Parts:
    def __init__(self, b: GraphBuilder, x: str) -> None:
        self._b = b
        self.x = x
        zero = b.const(0.0)
        self.p = b.op("Exp", b.op("Min", x, zero))
        self.q = b.op("Exp", b.op("Neg", b.op("Relu", x)))
        self.q2 = b.op("Mul", self.q, self.q)
        self.n = b.op("Mul", self.p, b.op("Add", self.p, b.op("Add", self.q, self.q)))
        self.d = b.op("Add", self.n, b.op("Add", self.q2, self.q2))

    @functools.cached_property
    def tanh_softplus(self) -> str:
        return self._b.op("Div", self.n, self.d)

    @functools.cached_property
    def y(self) -> str:
        b = self._b
        # x clipped below: at x = -inf, -max * 0 is -0 instead of NaN; +inf stays.
        low = b.op("Max", self.x, b.const(-b.max_finite))
        return b.op("Mul", low, self.tanh_softplus)


def forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _Parts(b, x).y


def gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    parts = _Parts(b, x)
    p, q, q2, n, d = parts.p, parts.q, parts.q2, parts.n, parts.d
    # mish' = tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x); the second factor is bounded, and
    # finite(x) makes it 0 at x = +-inf (where it vanishes) instead of inf * 0.
    sech2 = b.op(
        "Div", b.op("Mul", b.op("Mul", q2, b.const(4.0)), b.op("Add", n, q2)), b.op("Mul", d, d)
    )
    slope = b.op("Div", b.op("Mul", sech2, p), b.op("Add", p, q))
    derivative = b.op("Add", parts.tanh_softplus, b.op("Mul", finite(b, x), slope))
    y = parts.y if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


MISH = Activation(forward=forward, gradient=gradient)
