"""softshrink, hardshrink (lambd >= 0), tanhshrink(x) = x - tanh(x), and
thresholded_relu(x) = x if x > alpha else 0.

Slopes at the edges follow PyTorch's autograd: softshrink and hardshrink have slope 0 on
the closed [-lambd, lambd], thresholded_relu (PyTorch's threshold) 0 at x = alpha. The
0/1 factors are `step` of a difference, whose sign is exact and which carries x's NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import ELEM_TYPES, Activation, GradientOutputs, GraphBuilder, step


def _outside(b: GraphBuilder, x: str, lambd: str) -> str:
    """1 where |x| > lambd, else 0 (lambd >= 0: at most one term is 1)."""
    above = step(b, b.op("Sub", x, lambd))
    below = step(b, b.op("Sub", b.op("Neg", x), lambd))
    return b.op("Add", above, below)


def _softshrink(b: GraphBuilder, x: str, lambd: str) -> str:
    above = b.op("Relu", b.op("Sub", x, lambd))
    below = b.op("Relu", b.op("Sub", b.op("Neg", x), lambd))
    return b.op("Sub", above, below)


def softshrink_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _softshrink(b, x, params["lambd"])


def softshrink_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    lambd = params["lambd"]
    y = _softshrink(b, x, lambd) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, _outside(b, x, lambd)), y)


def hardshrink_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Mul", x, _outside(b, x, params["lambd"]))


def hardshrink_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    outside = _outside(b, x, params["lambd"])
    y = b.op("Mul", x, outside) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, outside), y)


# x - tanh(x) = x^3 (1/3 - 2/15 x^2 + 17/315 x^4 - ...), coefficients 2^2n (2^2n - 1) |B_2n|
# / (2n)! from n = 2; below SERIES_BOUND the 8 terms are within 1e-8 (float32) or 1e-17
# (float64) relative, and above it x - tanh(x) loses under 3 eps / x^2 to cancellation.
_TANH_SERIES = (
    1 / 3,
    -2 / 15,
    17 / 315,
    -62 / 2835,
    1382 / 155925,
    -21844 / 6081075,
    929569 / 638512875,
    -6404582 / 10854718875,
)
SERIES_BOUND = {"float32": 0.5, "float64": 0.125}


def _tanhshrink(b: GraphBuilder, x: str, t: str) -> str:
    """The series where |x| < bound (at x clipped there, finite elsewhere), the direct
    difference above, each multiplied by a 0/1 factor (NaN comes through the second)."""
    bound = b.const(SERIES_BOUND[b.compute_dtype])
    near = b.op("Cast", b.op("Less", b.op("Abs", x), bound), to=ELEM_TYPES[b.compute_dtype])
    small = b.op("Clip", x, b.op("Neg", bound), bound)
    z = b.op("Mul", small, small)
    series = b.const(_TANH_SERIES[-1])
    for coefficient in reversed(_TANH_SERIES[:-1]):
        series = b.op("Add", b.op("Mul", series, z), b.const(coefficient))
    series = b.op("Mul", b.op("Mul", series, z), small)
    far = b.op("Sub", b.const(1.0), near)
    return b.op("Add", b.op("Mul", near, series), b.op("Mul", far, b.op("Sub", x, t)))


def tanhshrink_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _tanhshrink(b, x, b.op("Tanh", x))


def tanhshrink_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    t = b.op("Tanh", x)
    # tanhshrink' = 1 - sech^2 = tanh^2, without cancellation (PyTorch's formula too).
    y = _tanhshrink(b, x, t) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, b.op("Mul", t, t)), y)


def _thresholded_relu(b: GraphBuilder, x: str, above: str) -> str:
    # x clipped below: at x = -inf, -max * 0 is -0 instead of NaN; +inf stays.
    return b.op("Mul", b.op("Max", x, b.const(-b.max_finite)), above)


def thresholded_relu_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _thresholded_relu(b, x, step(b, b.op("Sub", x, params["alpha"])))


def thresholded_relu_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    above = step(b, b.op("Sub", x, params["alpha"]))
    y = _thresholded_relu(b, x, above) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, above), y)


SOFTSHRINK = Activation(forward=softshrink_forward, gradient=softshrink_gradient)
HARDSHRINK = Activation(forward=hardshrink_forward, gradient=hardshrink_gradient)
TANHSHRINK = Activation(forward=tanhshrink_forward, gradient=tanhshrink_gradient)
THRESHOLDED_RELU = Activation(forward=thresholded_relu_forward, gradient=thresholded_relu_gradient)
