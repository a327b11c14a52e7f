"""gelu(x) = x * Phi(x) (approximate="none") or x * sigmoid(2u) (approximate="tanh").

Phi is the standard normal CDF; the tanh form is 0.5 x (1 + tanh(u)) with
u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u) so that nothing cancels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, sigmoid_parts

APPROXIMATIONS = ("none", "tanh")

# Phi(-t) = exp(-t^2 / 2) * q * M(1 - q) with q = 2a / (t + a), t >= 0. M is smooth on
# [-1, 1] and evaluated as a polynomial (Horner); coefficients are the monomial form of
# the Chebyshev interpolant of M at len(coefficients) nodes, in mpmath
# (tests/unit/graph_reference.py: normal_tail_coefficients). float64 has no Erf kernel and
# 1 - erf cancels in the negative tail, so both dtypes use this form. Max relative error of
# M: 1.5 ulp (float64, a = 4, 24 terms), 2 ulp (float32, a = 3, 10 terms).
NORMAL_TAIL: Mapping[str, tuple[float, tuple[float, ...]]] = {
    "float64": (
        4.0,
        (
            0.09441064130196893, -0.07598708024648651, 0.048392175092778364,
            -0.02331523224495647, 0.00754957186129351, -0.0009425236208745779,
            -0.0004349615445563472, 0.0002038523078473711, 1.666802594394214e-05,
            -2.888687334356856e-05, -2.384585641650268e-07, 4.39312351645043e-06,
            8.932253240241377e-08, -7.401611777643785e-07, -7.811427101125824e-08,
            1.2802961235706754e-07, 3.3085570158087944e-08, -1.989554923974363e-08,
            -9.843368038088548e-09, 2.1773906474323642e-09, 2.0064928142853155e-09,
            -5.2218548155417844e-11, -2.1073102421598596e-10, -1.8670599387443788e-11,
        ),
    ),
    "float32": (
        3.0,
        (
            0.12151396160982446, -0.08488866876461762, 0.03833561987395588,
            -0.007876915252621729, -0.0017383047267021717, 0.0011600582262062213,
            0.00015474180219665544, -0.00016858891284190743, -2.0838544742904352e-05,
            1.93096045519371e-05,
        ),
    ),
}  # fmt: skip

# Beyond +-SATURATION, Phi (and sigmoid(2u)) is exactly 0 or 1 and the density term
# underflows to 0 in the compute dtype, so x can be clipped there: no inf * 0, no overflow.
_SATURATION = {
    "none": {"float64": 40.0, "float32": 15.0},
    "tanh": {"float64": 30.0, "float32": 30.0},
}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


def _clipped(b: GraphBuilder, x: str, approximate: str) -> tuple[str, str]:
    """(clip(x, -L, L), max(x, -L)) for the saturation bound L of this form and dtype."""
    bound = _SATURATION[approximate][b.compute_dtype]
    return (
        b.op("Clip", x, b.const(-bound), b.const(bound)),
        b.op("Max", x, b.const(-bound)),
    )


def _normal_cdf(b: GraphBuilder, x: str) -> tuple[str, str]:
    """(Phi(x), exp(-x^2 / 2)), relatively accurate in the negative tail."""
    a, coefficients = NORMAL_TAIL[b.compute_dtype]
    t = b.op("Abs", x)
    gauss = b.op("Exp", b.op("Mul", b.op("Mul", t, t), b.const(-0.5)))
    q = b.op("Div", b.const(2.0 * a), b.op("Add", t, b.const(a)))
    u = b.op("Sub", b.const(1.0), q)
    poly = b.const(coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        poly = b.op("Add", b.op("Mul", poly, u), b.const(coefficient))
    lower = b.op("Mul", b.op("Mul", gauss, q), poly)
    negative = b.op("Less", x, b.const(0.0))
    return b.op("Where", negative, lower, b.op("Sub", b.const(1.0), lower)), gauss


def _check(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")


def _tanh_argument(b: GraphBuilder, xc: str) -> str:
    """2u = x (c1 + c2 x^2)."""
    c1 = 2.0 * _SQRT_2_OVER_PI
    square = b.op("Mul", xc, xc)
    return b.op("Mul", xc, b.op("Add", b.const(c1), b.op("Mul", b.const(c1 * _TANH_CUBIC), square)))


def forward(
    b: GraphBuilder, x: str, params: Mapping[str, str], *, approximate: str = "none"
) -> str:
    _check(approximate)
    xc, x_low = _clipped(b, x, approximate)
    if approximate == "tanh":
        cdf = sigmoid_parts(b, _tanh_argument(b, xc)).s
    else:
        cdf, _ = _normal_cdf(b, xc)
    return b.op("Mul", x_low, cdf)


def gradient(
    b: GraphBuilder,
    x: str,
    grad_output: str,
    params: Mapping[str, str],
    *,
    with_output: bool,
    approximate: str = "none",
) -> GradientOutputs:
    _check(approximate)
    xc, x_low = _clipped(b, x, approximate)
    if approximate == "tanh":
        c1 = 2.0 * _SQRT_2_OVER_PI
        parts = sigmoid_parts(b, _tanh_argument(b, xc))
        cdf = parts.s
        # d(2u)/dx = c1 + 3 c1 c2 x^2
        square = b.op("Mul", xc, xc)
        dv = b.op("Add", b.const(c1), b.op("Mul", b.const(3.0 * c1 * _TANH_CUBIC), square))
        density = b.op("Mul", parts.slope, dv)
    else:
        cdf, gauss = _normal_cdf(b, xc)
        density = b.op("Mul", gauss, b.const(1.0 / math.sqrt(2.0 * math.pi)))
    derivative = b.op("Add", cdf, b.op("Mul", xc, density))
    y = b.op("Mul", x_low, cdf) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


GELU = Activation(forward=forward, gradient=gradient)
