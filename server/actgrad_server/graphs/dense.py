"""A dense layer as one graph: z = x . W^T + b, then a catalog function's own bodies.

The activation is applied by the same `Activation` bodies the catalog names for
Activate and Gradient (so kinks, tails and parameters behave exactly as there); this
module only adds the affine map around them and its backward pass:

    grad_z      = the activation's VJP at z with grad_output (grad_output itself without one)
    grad_input  = grad_z . W                           [..., in]
    grad_weight = grad_z^T . x, over all leading dims  [out, in]
    grad_bias   = sum of grad_z over all leading dims  [out]

x, weight, bias and grad_output are graph inputs of any shape (one graph serves every
batch and layer size); the static ``x_rank`` (of x, and so of z) is what the prelu
gradient needs to reduce its slope. float16 is computed in float32 like every graph, so
the matrix products accumulate in float32.
"""

from __future__ import annotations

import onnx

from ._common import Entry, GraphBuilder

__all__ = ["build_dense"]


def _net_output(b: GraphBuilder) -> tuple[str, str, str]:
    """The inputs x and weight, and z = x . W^T + bias (bias: an input of shape [out])."""
    x = b.input("x", "any")
    weight = b.input("weight", "any")
    bias = b.input("bias", "any")
    z = b.op("Add", b.op("MatMul", x, b.op("Transpose", weight, perm=[1, 0])), bias)
    return x, weight, z


def _publish_net_output(b: GraphBuilder, z: str) -> None:
    # Through an Identity: publishing renames the value it is given, and z is also read
    # inside the If branches of some bodies (leaky_relu), which a rename does not reach.
    b.output("z", b.op("Identity", z), "any")


def build_dense(
    function: Entry | None,
    dtype: str,
    *,
    gradient: bool,
    with_output: bool = True,
    x_rank: int,
    **static: object,
) -> onnx.ModelProto:
    """Graph ``x, weight, bias (+ parameters) [, grad_output] -> ...`` of a dense layer.

    Forward: outputs ``y`` and ``z``. Gradient: ``grad_input``, ``grad_weight``,
    ``grad_bias``, ``grad_<tensor parameter>`` for each of the function's, ``z``, and
    ``y`` when `with_output`. `function` None is the bare net output (y = z).
    """
    name = function.name if function is not None else "linear"
    compute_dtype = None
    if gradient and function is not None and function.graph.gradient_in_float64:
        compute_dtype = "float64"
    direction = "gradient" if gradient else "forward"
    b = GraphBuilder(dtype, f"dense_{name}_{direction}", x_rank, compute_dtype)
    x, weight, z = _net_output(b)
    runtime = () if function is None else function.runtime_params
    params = {p: b.scalar_input(p) for p in runtime}
    if not gradient:
        if function is None:
            value = b.op("Identity", z)
        else:
            value = function.graph.forward(b, z, params, **static)
        b.output("y", value, "any")
        _publish_net_output(b, z)
        return b.model()

    grad_output = b.input("grad_output", "any")
    extra: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    y: str | None
    if function is None:
        grad_z, y = grad_output, (b.op("Identity", z) if with_output else None)
    else:
        outputs = function.graph.gradient(
            b, z, grad_output, params, with_output=with_output, **static
        )
        grad_z, y, extra = outputs.grad_input, outputs.y, outputs.extra
    # Rows of the leading dimensions, flattened: [-1, out] and [-1, in].
    minus_one = b.int64s((-1,))
    out_dim = b.op("Shape", weight, start=0, end=1)
    in_dim = b.op("Shape", weight, start=1, end=2)
    grad_rows = b.op("Reshape", grad_z, b.op("Concat", minus_one, out_dim, axis=0))
    x_rows = b.op("Reshape", x, b.op("Concat", minus_one, in_dim, axis=0))
    b.output("grad_input", b.op("MatMul", grad_z, weight), "any")
    grad_weight = b.op("MatMul", b.op("Transpose", grad_rows, perm=[1, 0]), x_rows)
    b.output("grad_weight", grad_weight, "any")
    b.output("grad_bias", b.op("ReduceSum", grad_rows, b.int64s((0,)), keepdims=0), "any")
    for output_name, value, shape in extra:
        b.output(output_name, value, shape)
    _publish_net_output(b, z)
    if with_output:
        if y is None:
            raise AssertionError(f"{name} gradient did not produce y")
        b.output("y", y, "any")
    return b.model()
