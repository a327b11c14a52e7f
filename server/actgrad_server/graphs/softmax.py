"""softmax(x / temperature) and log_softmax(x / temperature) along one axis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ._common import Activation, GradientOutputs, GraphBuilder


class _Softmax(NamedTuple):
    shifted: str  # (x - max(x)) / temperature, <= 0: exp never overflows
    e: str  # exp(shifted)
    total: str  # sum(exp(shifted)) along the axis, >= 1


def _check(axis: int, log: bool) -> None:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not isinstance(log, bool):
        raise TypeError(f"log must be a bool, got {log!r}")


def _softmax(b: GraphBuilder, x: str, temperature: str, axes: str) -> _Softmax:
    peak = b.op("ReduceMax", x, axes, keepdims=1)
    shifted = b.op("Div", b.op("Sub", x, peak), temperature)
    e = b.op("Exp", shifted)
    return _Softmax(shifted, e, b.op("ReduceSum", e, axes, keepdims=1))


def _probabilities(b: GraphBuilder, sm: _Softmax) -> str:
    return b.op("Div", sm.e, sm.total)


def _log_probabilities(b: GraphBuilder, sm: _Softmax) -> str:
    return b.op("Sub", sm.shifted, b.op("Log", sm.total))


def forward(
    b: GraphBuilder, x: str, params: Mapping[str, str], *, axis: int = -1, log: bool = False
) -> str:
    _check(axis, log)
    sm = _softmax(b, x, params["temperature"], b.int64s((axis,)))
    return _log_probabilities(b, sm) if log else _probabilities(b, sm)


def gradient(
    b: GraphBuilder,
    x: str,
    grad_output: str,
    params: Mapping[str, str],
    *,
    with_output: bool,
    axis: int = -1,
    log: bool = False,
) -> GradientOutputs:
    _check(axis, log)
    temperature = params["temperature"]
    axes = b.int64s((axis,))
    sm = _softmax(b, x, temperature, axes)
    s = _probabilities(b, sm)
    g = grad_output
    if log:
        # (g - s * sum(g)) / T
        total = b.op("ReduceSum", g, axes, keepdims=1)
        vjp = b.op("Sub", g, b.op("Mul", s, total))
        y = _log_probabilities(b, sm) if with_output else None
    else:
        # s * (g - sum(g * s)) / T
        total = b.op("ReduceSum", b.op("Mul", g, s), axes, keepdims=1)
        vjp = b.op("Mul", s, b.op("Sub", g, total))
        y = s if with_output else None
    return GradientOutputs(b.op("Div", vjp, temperature), y)


# In float32, g - sum(g * s) cancels where one probability is close to 1 (s = 0.9994 is
# known to 3e-8 absolute, which is 5e-5 of 1 - s) and 1 / T amplifies it: measured 1.0 x
# the float32 tolerance at T = 0.37. Computing the gradient in float64 removes that.
SOFTMAX = Activation(forward=forward, gradient=gradient, gradient_in_float64=True)
