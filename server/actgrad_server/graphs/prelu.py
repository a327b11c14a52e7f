"""prelu(x, slope) = x if x > 0 else slope * x, slope broadcast to x like ONNX PRelu.

Derivatives follow PyTorch at 0: d/dx = slope, d/dslope = 0. The ONNX PRelu op is not
used (see _common.piecewise_linear), nor Where. A non-finite grad_output where
d/dslope = min(x, 0) is 0 (x >= 0) gives NaN in grad_slope, as inf * 0 does.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, piecewise_linear, step_slope


def _reduced_axes(x_rank: int, slope_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes of x over which slope was broadcast (the left padding and slope's 1-dims)."""
    pad = x_rank - len(slope_shape)
    if pad < 0:
        raise ValueError(f"slope of rank {len(slope_shape)} does not broadcast to rank {x_rank}")
    return tuple(range(pad)) + tuple(pad + i for i, dim in enumerate(slope_shape) if dim == 1)


def forward(
    b: GraphBuilder,
    x: str,
    params: Mapping[str, str],
    *,
    slope_shape: tuple[int, ...] | None = None,
) -> str:
    """slope_shape, when given, is declared on the slope input."""
    slope = b.input("slope", "any" if slope_shape is None else tuple(slope_shape))
    return piecewise_linear(b, x, slope)


def gradient(
    b: GraphBuilder,
    x: str,
    grad_output: str,
    params: Mapping[str, str],
    *,
    with_output: bool,
    slope_shape: tuple[int, ...],
) -> GradientOutputs:
    if b.x_rank is None:
        raise ValueError("the prelu gradient needs the static x_rank")
    slope_shape = tuple(int(dim) for dim in slope_shape)
    axes = _reduced_axes(b.x_rank, slope_shape)
    slope = b.input("slope", slope_shape)
    derivative = step_slope(b, x, slope)  # 1 or slope, per element of x
    grad_input = b.op("Mul", grad_output, derivative)
    # d/dslope = min(x, 0): 0 for x >= 0 (+inf included), x below.
    per_element = b.op("Mul", b.op("Min", x, b.const(0.0)), grad_output)
    if axes:
        summed = b.op("ReduceSum", per_element, b.int64s(axes), keepdims=1)
        grad_slope = b.op("Reshape", summed, b.int64s(slope_shape))
    else:
        grad_slope = per_element
    y = b.op("Mul", x, derivative) if with_output else None
    return GradientOutputs(grad_input, y, extra=(("grad_slope", grad_slope, slope_shape),))


PRELU = Activation(forward=forward, gradient=gradient)
