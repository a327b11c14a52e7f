"""The clipped-linear family: hardsigmoid, hardswish, hardtanh and relu6.

Derivatives at the kinks follow PyTorch's autograd: hardsigmoid, hardtanh and relu6 have
slope 0 at both ends of their linear part; hardswish's is x / 3 + 1/2 on the open
(-3, 3), the outer sides' 0 at -3 and 1 at 3 (torch 2.13; tests/unit/test_kinks_torch.py
compares every kink with autograd). Branches are Clip and 0/1 factors (no Where, see
_common); a factor built from a comparison gets x's NaN from `nan_or_zero`.
"""

from __future__ import annotations

from collections.abc import Mapping

from onnx import TensorProto

from ._common import (
    ELEM_TYPES,
    Activation,
    GradientOutputs,
    GraphBuilder,
    nan_or_zero,
    step,
)

# Veltkamp's splitter for float64 (2^27 + 1): v = hi + lo with 26-bit halves.
_SPLITTER = 134217729.0
# |x| beyond this is clipped before splitting, so that x * _SPLITTER cannot overflow.
_SPLIT_LIMIT = 2.0**996


def _hardsigmoid(b: GraphBuilder, x: str, alpha: str, beta: str) -> str:
    v = b.op("Add", b.op("Mul", alpha, x), beta)
    return b.op("Clip", v, b.const(0.0), b.const(1.0))


def _split(b: GraphBuilder, v: str) -> tuple[str, str]:
    c = b.op("Mul", v, b.const(_SPLITTER))
    hi = b.op("Sub", c, b.op("Sub", c, v))
    return hi, b.op("Sub", v, hi)


def _inside(b: GraphBuilder, x: str, alpha: str, beta: str) -> str:
    """[0 < alpha x + beta < 1] decided on the exact product alpha * x (a bool).

    The rounded v = alpha x + beta can land on 0 or 1 where the exact value is not (or
    the other way round), and the slope jumps there. float32 products are exact in
    float64; a float64 product p = fl(alpha x) is exact but for e = alpha x - p (Dekker's
    product by Veltkamp splitting), and since rounding is monotone, alpha x > t for a
    float t exactly when p > t, or p = t and e > 0. 1 - beta is taken as exact (it is for
    a float32 beta, and for a float64 beta in [0.5, 2]).
    """
    if b.compute_dtype != "float64":
        double = TensorProto.DOUBLE
        x, alpha, beta = (b.op("Cast", v, to=double) for v in (x, alpha, beta))
        product = b.op("Mul", alpha, x)
        one = b.op("Cast", b.const(1.0), to=double)
        low = b.op("Greater", product, b.op("Neg", beta))
        high = b.op("Less", product, b.op("Sub", one, beta))
        return b.op("And", low, high)
    limit = _SPLIT_LIMIT
    x = b.op("Clip", x, b.const(-limit), b.const(limit))
    product = b.op("Mul", alpha, x)
    alpha_hi, alpha_lo = _split(b, alpha)
    x_hi, x_lo = _split(b, x)
    error = b.op("Sub", b.op("Mul", alpha_hi, x_hi), product)
    error = b.op("Add", error, b.op("Mul", alpha_hi, x_lo))
    error = b.op("Add", error, b.op("Mul", alpha_lo, x_hi))
    error = b.op("Add", error, b.op("Mul", alpha_lo, x_lo))
    zero = b.const(0.0)
    low_edge = b.op("Neg", beta)
    high_edge = b.op("Sub", b.const(1.0), beta)
    low = b.op(
        "Or",
        b.op("Greater", product, low_edge),
        b.op("And", b.op("Equal", product, low_edge), b.op("Greater", error, zero)),
    )
    high = b.op(
        "Or",
        b.op("Less", product, high_edge),
        b.op("And", b.op("Equal", product, high_edge), b.op("Less", error, zero)),
    )
    return b.op("And", low, high)


def hardsigmoid_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _hardsigmoid(b, x, params["alpha"], params["beta"])


def hardsigmoid_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    alpha, beta = params["alpha"], params["beta"]
    inside = b.op("Cast", _inside(b, x, alpha, beta), to=ELEM_TYPES[b.compute_dtype])
    derivative = b.op("Mul", b.op("Add", inside, nan_or_zero(b, x)), alpha)
    y = _hardsigmoid(b, x, alpha, beta) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


def _hardswish(b: GraphBuilder, x: str) -> str:
    """x * relu6(x + 3) / 6, x clipped below so that -inf gives -max * 0 = -0."""
    gate = b.op(
        "Div", b.op("Clip", b.op("Add", x, b.const(3.0)), b.const(0.0), b.const(6.0)), b.const(6.0)
    )
    return b.op("Mul", b.op("Max", x, b.const(-b.max_finite)), gate)


def hardswish_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return _hardswish(b, x)


def hardswish_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    elem_type = ELEM_TYPES[b.compute_dtype]
    three = b.const(3.0)
    # PyTorch: 0 for x <= -3, x / 3 + 1/2 for -3 < x < 3, 1 from 3 on. The middle is taken
    # at x clipped to [-3, 3], finite where its factor is 0, NaN where x is.
    above_low = b.op("Cast", b.op("Greater", x, b.op("Neg", three)), to=elem_type)
    below_high = b.op("Cast", b.op("Less", x, three), to=elem_type)
    middle = b.op(
        "Add", b.op("Div", b.op("Clip", x, b.op("Neg", three), three), three), b.const(0.5)
    )
    derivative = b.op(
        "Add",
        b.op("Mul", b.op("Mul", above_low, below_high), middle),
        b.op("Sub", b.const(1.0), below_high),
    )
    y = _hardswish(b, x) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, derivative), y)


def _clipped_gradient(
    b: GraphBuilder, x: str, grad_output: str, low: str, high: str, *, with_output: bool
) -> GradientOutputs:
    """clip(x, low, high) and its slope, 1 strictly inside and 0 at and beyond the ends
    (x - low > 0 exactly when x > low: a rounded difference keeps its sign)."""
    inside = b.op("Mul", step(b, b.op("Sub", x, low)), step(b, b.op("Sub", high, x)))
    y = b.op("Clip", x, low, high) if with_output else None
    return GradientOutputs(b.op("Mul", grad_output, inside), y)


def hardtanh_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Clip", x, params["min_val"], params["max_val"])


def hardtanh_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    low, high = params["min_val"], params["max_val"]
    return _clipped_gradient(b, x, grad_output, low, high, with_output=with_output)


def relu6_forward(b: GraphBuilder, x: str, params: Mapping[str, str]) -> str:
    return b.op("Clip", x, b.const(0.0), b.const(6.0))


def relu6_gradient(
    b: GraphBuilder, x: str, grad_output: str, params: Mapping[str, str], *, with_output: bool
) -> GradientOutputs:
    low, high = b.const(0.0), b.const(6.0)
    return _clipped_gradient(b, x, grad_output, low, high, with_output=with_output)


HARDSIGMOID = Activation(forward=hardsigmoid_forward, gradient=hardsigmoid_gradient)
HARDSWISH = Activation(forward=hardswish_forward, gradient=hardswish_gradient)
HARDTANH = Activation(forward=hardtanh_forward, gradient=hardtanh_gradient)
RELU6 = Activation(forward=relu6_forward, gradient=relu6_gradient)
