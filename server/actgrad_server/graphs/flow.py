"""A deep square network, forward and backward, unrolled into one graph: the gradient-flow
probe.

    h_0 = x;  u_l = h_{l-1} . W_l^T;  z_l = u_l, or u_l standardised per unit over the
    batch ((u - mean) / sqrt(biased variance + 1e-5), no affine) with `normalize`;
    a_l = f(z_l);  h_l = a_l + h_{l-1} with `residual`, else a_l;  loss = sum(h_L * g).

The backward pass is written out (no autodiff in ONNX): f'(z_l) comes from the catalog
function's own gradient body at grad_output = ones (so kinks follow Gradient's
conventions), then dz = da * f'(z), the standardisation's VJP
dz -> (dz - mean(dz) - z * mean(dz * z)) / sqrt(var + eps), du . W_l and du^T . h_{l-1}.
Only per-layer statistics leave the graph, each a vector: ``act_rms`` and ``grad_rms``
[L + 1] (RMS of h_l and of dloss/dh_l, l = 0..L), ``weight_grad_rms``, ``saturated``
(fraction of z_l with |f'(z_l)| < 1e-3) and ``dead`` (fraction of units whose f'(z_l) is
0 for every sample) [L]. Inputs: ``x`` and ``g`` [B, n], ``w1`` ... ``wL`` [n, n], the
function's runtime parameters.
"""

from __future__ import annotations

import onnx

from ._common import ELEM_TYPES, Entry, GraphBuilder

__all__ = ["FLOW_OUTPUTS", "NORMALIZE_EPSILON", "SATURATION", "build_flow"]

NORMALIZE_EPSILON = 1e-5
SATURATION = 1e-3
FLOW_OUTPUTS = ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead")


def _mean_all(b: GraphBuilder, v: str) -> str:
    """The mean of every element, as a [1] vector (ready to be concatenated)."""
    return b.op("Reshape", b.op("ReduceMean", v, keepdims=0), b.int64s((1,)))


def _rms(b: GraphBuilder, v: str) -> str:
    return b.op("Sqrt", _mean_all(b, b.op("Mul", v, v)))


def _fraction(b: GraphBuilder, condition: str) -> str:
    return _mean_all(b, b.op("Cast", condition, to=ELEM_TYPES[b.compute_dtype]))


def _standardise(b: GraphBuilder, u: str) -> tuple[str, str]:
    """(u - mean) / sqrt(biased var + eps) per column over the batch, and 1 / sqrt(...)."""
    batch = b.int64s((0,))
    centred = b.op("Sub", u, b.op("ReduceMean", u, batch, keepdims=1))
    variance = b.op("ReduceMean", b.op("Mul", centred, centred), batch, keepdims=1)
    inverse = b.op("Reciprocal", b.op("Sqrt", b.op("Add", variance, b.const(NORMALIZE_EPSILON))))
    return b.op("Mul", centred, inverse), inverse


def _standardise_vjp(b: GraphBuilder, dz: str, z: str, inverse: str) -> str:
    batch = b.int64s((0,))
    mean_dz = b.op("ReduceMean", dz, batch, keepdims=1)
    mean_dz_z = b.op("ReduceMean", b.op("Mul", dz, z), batch, keepdims=1)
    inner = b.op("Sub", b.op("Sub", dz, mean_dz), b.op("Mul", z, mean_dz_z))
    return b.op("Mul", inner, inverse)


def build_flow(
    function: Entry,
    dtype: str,
    *,
    depth: int,
    residual: bool,
    normalize: bool,
    **static: object,
) -> onnx.ModelProto:
    """The probe's graph for an elementwise catalog function without tensor parameters."""
    if function.tensor_params or not function.elementwise:
        raise ValueError(f"{function.name}: the probe takes elementwise functions without tensors")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    b = GraphBuilder(dtype, f"flow_{function.name}", 2)
    x = b.input("x", "any")
    g = b.input("g", "any")
    weights = [b.input(f"w{layer}", "any") for layer in range(1, depth + 1)]
    params = {p: b.scalar_input(p) for p in function.runtime_params}
    transpose = [b.op("Transpose", w, perm=[1, 0]) for w in weights]

    hs, zs, slopes, inverses = [x], [], [], []
    for layer in range(depth):
        z = b.op("MatMul", hs[-1], transpose[layer])
        inverse = None
        if normalize:
            z, inverse = _standardise(b, z)
        ones = b.op("Expand", b.const(1.0), b.op("Shape", z))
        slope = function.graph.gradient(b, z, ones, params, with_output=True, **static)
        a = slope.y if slope.y is not None else function.graph.forward(b, z, params, **static)
        hs.append(b.op("Add", a, hs[-1]) if residual else a)
        zs.append(z)
        slopes.append(slope.grad_input)
        inverses.append(inverse)

    grads = [g]  # dloss/dh_l, from l = L down
    weight_grads = []
    for layer in reversed(range(depth)):
        dh = grads[-1]
        dz = b.op("Mul", dh, slopes[layer])
        inverse = inverses[layer]
        du = dz if inverse is None else _standardise_vjp(b, dz, zs[layer], inverse)
        weight_grads.append(b.op("MatMul", b.op("Transpose", du, perm=[1, 0]), hs[layer]))
        back = b.op("MatMul", du, weights[layer])
        grads.append(b.op("Add", back, dh) if residual else back)
    grads.reverse()
    weight_grads.reverse()

    zero = b.const(0.0)
    stats = {
        "act_rms": [_rms(b, h) for h in hs],
        "grad_rms": [_rms(b, dh) for dh in grads],
        "weight_grad_rms": [_rms(b, dw) for dw in weight_grads],
        "saturated": [
            _fraction(b, b.op("Less", b.op("Abs", s), b.const(SATURATION))) for s in slopes
        ],
        "dead": [
            _fraction(
                b,
                b.op("Equal", b.op("ReduceMax", b.op("Abs", s), b.int64s((0,)), keepdims=0), zero),
            )
            for s in slopes
        ],
    }
    for name in FLOW_OUTPUTS:
        values = stats[name]
        vector = b.op("Concat", *values, axis=0) if len(values) > 1 else b.op("Identity", values[0])
        b.output(name, vector, (len(values),))
    return b.model()
