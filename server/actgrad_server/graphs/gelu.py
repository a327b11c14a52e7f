"""gelu(x) = x * Phi(x) (approximate="none") or x * sigmoid(2u) (approximate="tanh").

Phi is the standard normal CDF; the tanh form is 0.5 x (1 + tanh(u)) with
u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u) so that nothing cancels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

from ._common import ELEM_TYPES, Activation, GradientOutputs, GraphBuilder

APPROXIMATIONS = ("none", "tanh")

# Phi(-t) = exp(-t^2 / 2) * q * M(1 - q) with q = 2a / (t + a), t >= 0. M is smooth on
# [-1, 1] and evaluated as a polynomial (Horner, in q: see _in_q); coefficients are the
# monomial form (in u = 1 - q) of the Chebyshev interpolant of M at len(coefficients)
# nodes, in mpmath (tests/unit/graph_reference.py: normal_tail_coefficients). float64 has
# no Erf kernel and 1 - erf cancels in the negative tail, so both dtypes use this form.
# Max relative error of M: 1.5 ulp (float64, a = 4, 24 terms), 2.2e-7 (float32, a = 3.5,
# 9 terms: one Horner step fewer than a = 3 with 10 terms, 1.1e-7; both far below the
# float32 tolerance of 2e-6, and in the tail below the error of exp(-t^2 / 2) itself,
# (t^2 / 2) * 2^-24 from rounding t^2: 5e-6 relative at t = 13).
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
        3.5,
        (
            0.10634515363370545, -0.0807947400049797, 0.04506098016116842,
            -0.01657605597530845, 0.0024831867800177605, 0.0009151375908853685,
            -0.00044202351329889866, -4.848188671199363e-05, 4.860586044432633e-05,
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
_TANH_C1 = 2.0 * _SQRT_2_OVER_PI  # 2u = x (c1 + c1 c2 x^2)

# Both forms are x * F(x) with F(-t) = 1 - F(t), so with t = |x| and the lower tail
# F(-t), which is computed relatively accurately:
#     gelu(x) = relu(x) - t * F(-t)          (x >= 0: x less at most x / 2, no cancellation)
#     F(x)    = |[x >= 0] - F(-t)|           (exactly F(-t) below 0, one rounding above)
# Both sides come from one expression, no Where (see _common). t is clipped at the
# saturation bound, where F(-t) is 0.


def _check(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")


def _clipped(b: GraphBuilder, x: str, approximate: str) -> tuple[str, str]:
    """(clip(x, -L, L), its absolute value t) for the saturation bound L of this form."""
    bound = _SATURATION[approximate][b.compute_dtype]
    xc = b.op("Clip", x, b.const(-bound), b.const(bound))
    return xc, b.op("Abs", xc)


@functools.cache
def _in_q(coefficients: tuple[float, ...]) -> tuple[float, ...]:
    """Monomial coefficients in q of M(1 - q), from those in u = 1 - q (exact binomials,
    float64): Horner then runs on q itself, one kernel fewer. It stays well conditioned:
    sum |d_j| 2^j is 0.3 (float32) and 3.8 (float64) over q in (0, 2]."""
    return tuple(
        (-1) ** j * math.fsum(math.comb(k, j) * c for k, c in enumerate(coefficients) if k >= j)
        for j in range(len(coefficients))
    )


def _normal_tail(b: GraphBuilder, t: str) -> tuple[str, str]:
    """(Phi(-t), exp(-t^2 / 2)) for t >= 0."""
    a, coefficients = NORMAL_TAIL[b.compute_dtype]
    gauss = b.op("Exp", b.op("Mul", b.op("Mul", t, t), b.const(-0.5)))
    q = b.op("Div", b.const(2.0 * a), b.op("Add", t, b.const(a)))
    in_q = _in_q(coefficients)
    poly = b.const(in_q[-1])
    for coefficient in reversed(in_q[:-1]):
        poly = b.op("Add", b.op("Mul", poly, q), b.const(coefficient))
    return b.op("Mul", b.op("Mul", gauss, q), poly), gauss


def _tanh_tail(b: GraphBuilder, t: str, square: str) -> tuple[str, str, str]:
    """(sigmoid(-2u), e, 1 + e) with e = exp(-2u) <= 1 for t >= 0 (square = t^2)."""
    minus_2u = b.op(
        "Mul",
        t,
        b.op("Add", b.const(-_TANH_C1), b.op("Mul", b.const(-_TANH_C1 * _TANH_CUBIC), square)),
    )
    e = b.op("Exp", minus_2u)
    one_plus_e = b.op("Add", e, b.const(1.0))
    return b.op("Div", e, one_plus_e), e, one_plus_e


def _gelu(b: GraphBuilder, x: str, t: str, lower: str) -> str:
    return b.op("Sub", b.op("Relu", x), b.op("Mul", t, lower))


def forward(
    b: GraphBuilder, x: str, params: Mapping[str, str], *, approximate: str = "none"
) -> str:
    _check(approximate)
    _, t = _clipped(b, x, approximate)
    if approximate == "tanh":
        lower, _, _ = _tanh_tail(b, t, b.op("Mul", t, t))
    else:
        lower, _ = _normal_tail(b, t)
    return _gelu(b, x, t, lower)


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
    xc, t = _clipped(b, x, approximate)
    if approximate == "tanh":
        square = b.op("Mul", t, t)
        lower, e, one_plus_e = _tanh_tail(b, t, square)
        # F'(x) = sigmoid'(2u) d(2u)/dx = e / (1 + e)^2 (c1 + 3 c1 c2 x^2)
        slope = b.op("Div", e, b.op("Mul", one_plus_e, one_plus_e))
        dv = b.op(
            "Add", b.const(_TANH_C1), b.op("Mul", b.const(3.0 * _TANH_C1 * _TANH_CUBIC), square)
        )
        density = b.op("Mul", slope, dv)
    else:
        lower, gauss = _normal_tail(b, t)
        density = b.op("Mul", gauss, b.const(1.0 / math.sqrt(2.0 * math.pi)))
    nonnegative = b.op(
        "Cast", b.op("GreaterOrEqual", x, b.const(0.0)), to=ELEM_TYPES[b.compute_dtype]
    )
    cdf = b.op("Abs", b.op("Sub", nonnegative, lower))  # x's NaN comes through lower
    derivative = b.op("Add", cdf, b.op("Mul", xc, density))
    y = _gelu(b, x, t, lower) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


GELU = Activation(forward=forward, gradient=gradient)
