"""prelu(x, slope) = x if x > 0 else slope * x, slope broadcast to x like ONNX PRelu.

Derivatives follow PyTorch at 0: d/dx = slope, d/dslope = 0.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import Activation, GradientOutputs, GraphBuilder, propagate_nan


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
    positive = b.op("Greater", x, b.const(0.0))
    return b.op("Where", positive, x, b.op("Mul", slope, x))


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
    positive = b.op("Greater", x, b.const(0.0))
    grad_input = propagate_nan(
        b, x, b.op("Where", positive, grad_output, b.op("Mul", slope, grad_output))
    )
    per_element = b.op("Where", positive, b.const(0.0), b.op("Mul", x, grad_output))
    if axes:
        summed = b.op("ReduceSum", per_element, b.int64s(axes), keepdims=1)
        grad_slope = b.op("Reshape", summed, b.int64s(slope_shape))
    else:
        grad_slope = per_element
    y = b.op("Where", positive, x, b.op("Mul", slope, x)) if with_output else None
    return GradientOutputs(grad_input, y, extra=(("grad_slope", grad_slope, slope_shape),))


PRELU = Activation(forward=forward, gradient=gradient)
