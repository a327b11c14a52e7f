"""The graph builder and the numerically stable pieces that several activations share.

No graph selects float values with Where: onnxruntime 1.32.0's float Where costs as much
as 20 to 80 arithmetic kernels (8 ms per 1 Mi float32 elements, 16x its cost in 1.31.1;
docs/performance.md, "Compute"), and onnxruntime runs every node, so both sides of a
branch are computed anyway. Branches are
arithmetic instead: a 0/1 factor (`step`), min/max/relu with one side an exact 0, or one
expression for both sides (`Logistic`). The selections are exact, NaN in x comes out as
NaN, and x = +-inf gives the function's limits (tests/unit/test_graphs.py checks all).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from actgrad.wire.dtypes import DTYPES

OPSET = 21
IR_VERSION = 10

# ONNX element types of the dtypes that have a graph of their own (the wire table's).
ELEM_TYPES: Mapping[str, int] = {info.name: info.onnx for info in DTYPES if info.has_graph}
# float16 is computed in float32 (Cast in, Cast out): onnxruntime's CPU float16 kernels
# are incomplete, and rounding every intermediate to float16 would cost several ulps.
_COMPUTE_DTYPES: Mapping[str, str] = {
    "float16": "float32",
    "float32": "float32",
    "float64": "float64",
}


class GraphBuilder:
    """Accumulates nodes of one graph; every value is named by a string."""

    def __init__(
        self,
        dtype: str,
        graph_name: str,
        x_rank: int | None = None,
        compute_dtype: str | None = None,
    ) -> None:
        if dtype not in ELEM_TYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(ELEM_TYPES)}")
        self.dtype = dtype
        self.compute_dtype = compute_dtype or _COMPUTE_DTYPES[dtype]
        self._graph_name = graph_name
        self._np_compute = np.dtype(self.compute_dtype)
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._constants: dict[tuple[str, bytes], str] = {}
        self._counter = 0
        self.x_rank = x_rank
        self._x_shape: list[str | int] | None = None
        if x_rank is not None:
            if isinstance(x_rank, bool) or not isinstance(x_rank, int) or x_rank < 0:
                raise ValueError(f"x_rank must be a non-negative int, got {x_rank!r}")
            self._x_shape = [f"d{i}" for i in range(x_rank)]

    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    @property
    def max_finite(self) -> float:
        return float(np.finfo(self._np_compute).max)

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        output = self._fresh(op_type.lower())
        self._nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def const(self, value: float) -> str:
        """A scalar constant in the compute dtype (float64 literals are rounded once)."""
        return self._initializer(np.asarray(value, dtype=self._np_compute), "c")

    def int64s(self, values: tuple[int, ...]) -> str:
        return self._initializer(np.asarray(values, dtype=np.int64), "i")

    def _initializer(self, array: npt.NDArray[Any], hint: str) -> str:
        key = (f"{array.dtype}{array.shape}", array.tobytes())
        if key not in self._constants:
            name = self._fresh(hint)
            self._initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def input(self, name: str, shape: tuple[int, ...] | Literal["x", "any"] = "x") -> str:
        """A tensor input of the served dtype, as a compute-dtype value.

        ``shape="x"``: x's shape (symbolic dims d0, d1, ... when x_rank is known, otherwise
        none: any rank); ``"any"``: no shape; a tuple: that static shape.
        """
        declared = self._declared(shape)
        self._inputs.append(helper.make_tensor_value_info(name, ELEM_TYPES[self.dtype], declared))
        return self.to_compute(name)

    def scalar_input(self, name: str) -> str:
        """A 0-d float64 parameter input, as a compute-dtype value."""
        self._inputs.append(helper.make_tensor_value_info(name, TensorProto.DOUBLE, []))
        if self.compute_dtype == "float64":
            return name
        return self.op("Cast", name, to=ELEM_TYPES[self.compute_dtype])

    def to_compute(self, name: str) -> str:
        if self.dtype == self.compute_dtype:
            return name
        return self.op("Cast", name, to=ELEM_TYPES[self.compute_dtype])

    def _declared(self, shape: tuple[int, ...] | Literal["x", "any"]) -> list[str | int] | None:
        if shape == "x":
            return self._x_shape
        if shape == "any":
            return None
        return list(shape)

    def output(
        self, name: str, value: str, shape: tuple[int, ...] | Literal["x", "any"] = "x"
    ) -> None:
        """Publishes a compute-dtype value as a graph output of the served dtype (shape: as
        for :meth:`input`)."""
        if self.dtype != self.compute_dtype:
            self._nodes.append(helper.make_node("Cast", [value], [name], to=ELEM_TYPES[self.dtype]))
        elif self._produced_by_node(value):
            for node in self._nodes:
                for names in (node.input, node.output):
                    for i, current in enumerate(names):
                        if current == value:
                            names[i] = name
        else:
            self._nodes.append(helper.make_node("Identity", [value], [name]))
        declared = self._declared(shape)
        self._outputs.append(helper.make_tensor_value_info(name, ELEM_TYPES[self.dtype], declared))

    def _produced_by_node(self, value: str) -> bool:
        return any(value in node.output for node in self._nodes)

    def model(self) -> onnx.ModelProto:
        """The model; checked with onnx.checker (full) when every input and output is shaped.

        onnx.checker requires a shape on every main-graph input and output, which fixes the
        rank; without x_rank the model is rank-agnostic (onnxruntime accepts any rank) and
        cannot pass that one rule, so it is not checked here.
        """
        graph = helper.make_graph(
            self._nodes, self._graph_name, self._inputs, self._outputs, self._initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="actgrad",
        )
        values = [*graph.input, *graph.output]
        if all(value.type.tensor_type.HasField("shape") for value in values):
            onnx.checker.check_model(model, full_check=True)
        return model


class GradientOutputs(NamedTuple):
    grad_input: str
    y: str | None = None
    # further outputs (name, value, declared shape), e.g. prelu's grad_slope
    extra: tuple[tuple[str, str, tuple[int, ...]], ...] = ()


Forward = Callable[..., str]
Gradient = Callable[..., GradientOutputs]


@dataclass(frozen=True)
class Activation:
    """The two graph bodies of one served function (its catalog entry names them).

    ``forward(b, x, params, **static) -> y`` and
    ``gradient(b, x, grad_output, params, *, with_output, **static) -> GradientOutputs``
    take and return compute-dtype value names; ``params`` maps each runtime parameter
    (the catalog's ``Param(runtime=True)``) to its compute-dtype value.
    """

    forward: Forward
    gradient: Gradient
    gradient_in_float64: bool = False  # compute the gradient graph in float64 for every dtype


class Entry(Protocol):
    """What the builders read of a catalog entry (`catalog.Function` has all of it).

    A protocol, so that the graphs need not import the catalog, which imports them.
    Read-only members, as the catalog's entries are frozen.
    """

    @property
    def name(self) -> str: ...

    @property
    def graph(self) -> Activation: ...

    @property
    def elementwise(self) -> bool: ...

    @property
    def runtime_params(self) -> tuple[str, ...]:
        """Names of the 0-d float64 graph inputs, in declaration order."""
        ...

    @property
    def tensor_params(self) -> tuple[str, ...]:
        """Names of the tensor parameters (graph inputs of the input's dtype)."""
        ...


def sigmoid(b: GraphBuilder, v: str) -> str:
    """sigmoid(v) = 1 / (1 + exp(-v)), where sigmoid(v) itself is the result.

    exp(-v) overflows only where sigmoid(v) < 1 / max, below the compute dtype's smallest
    normal number, so the 0 it then gives loses no normal result; NaN and the limits at
    +-inf follow from the arithmetic. onnxruntime's Sigmoid kernel flushes the negative
    tail (relative error ~1 below -17 in float32), so the op is not used.
    """
    return b.op("Reciprocal", b.op("Add", b.op("Exp", b.op("Neg", v)), b.const(1.0)))


class Logistic:
    """sigmoid(v) and its slope through e = exp(-|v|), which never overflows: relatively
    accurate in both tails, also where they are multiplied by something large (swish,
    the gelu tanh form) or differentiated. A node is built when its value is first asked
    for, so a graph holds only what it uses (onnxruntime runs nodes nothing reads).
    """

    def __init__(self, b: GraphBuilder, v: str) -> None:
        self._b = b
        self.v = v

    @functools.cached_property
    def e(self) -> str:
        """exp(-|v|), in [0, 1]."""
        b = self._b
        return b.op("Exp", b.op("Neg", b.op("Abs", self.v)))

    @functools.cached_property
    def denominator(self) -> str:
        """1 + exp(-|v|), in [1, 2]."""
        return self._b.op("Add", self.e, self._b.const(1.0))

    @functools.cached_property
    def s(self) -> str:
        """sigmoid(v) = exp(min(v, 0)) / (1 + exp(-|v|)): the numerator is e below 0 and 1
        above, one expression for both sides."""
        b = self._b
        numerator = b.op("Exp", b.op("Min", self.v, b.const(0.0)))
        return b.op("Div", numerator, self.denominator)

    @functools.cached_property
    def slope(self) -> str:
        """sigmoid'(v) = s (1 - s) = e / (1 + e)^2."""
        b = self._b
        d = self.denominator
        return b.op("Div", self.e, b.op("Mul", d, d))


def step(b: GraphBuilder, x: str) -> str:
    """1 where x > 0, 0 where x <= 0 (-0 at x = -0), NaN where x is NaN.

    The slope of the kinked functions as a 0/1 factor; unlike Cast(Greater(x, 0)) it
    carries x's NaN, and it is 0 at x = 0, the side PyTorch's autograd takes at the kinks.
    (Clip(x * 2^126 * 2^126, 0, 1) is as fast and exact down to subnormals; this reads
    better.)
    """
    return b.op("Ceil", b.op("Clip", x, b.const(0.0), b.const(1.0)))


def piecewise_linear(b: GraphBuilder, x: str, slope: str) -> str:
    """x if x > 0 else slope * x, as relu(x) + slope * min(x, 0) (slope broadcast to x).

    onnxruntime's LeakyRelu takes alpha as an attribute and has no float64 kernel, and
    its PRelu kernel is about 4x slower than these three (5.5 against 1.4 ms per 1 Mi
    float32 elements, a 0-d slope or one of x's shape alike). Exact on both sides.
    """
    negative = b.op("Mul", b.op("Min", x, b.const(0.0)), slope)
    return b.op("Add", b.op("Relu", x), negative)


def step_slope(b: GraphBuilder, x: str, slope: str) -> str:
    """1 where x > 0, else slope (at 0 too), NaN where x is NaN: step + (1 - step) * slope,
    exact since one term is 0."""
    positive = step(b, x)
    return b.op("Add", positive, b.op("Mul", b.op("Sub", b.const(1.0), positive), slope))


def if_else(
    b: GraphBuilder, condition: str, then: Callable[[], str], otherwise: Callable[[], str]
) -> str:
    """The value `then()` builds where the 0-d bool `condition` holds at run time, else the
    one `otherwise()` builds: an If node whose two branches read the outer graph's values.
    onnxruntime runs only the branch taken (about 2 us for the If itself), so a runtime
    parameter's usual range can take a cheaper exact formula than its general one.
    """
    branches = []
    for label, build in (("then", then), ("else", otherwise)):
        outer, b._nodes = b._nodes, []
        try:
            value = build()
            if not b._produced_by_node(value):  # a branch output must be made inside it
                value = b.op("Identity", value)
            nodes = b._nodes
        finally:
            b._nodes = outer
        output = helper.make_tensor_value_info(value, ELEM_TYPES[b.compute_dtype], None)
        branches.append(helper.make_graph(nodes, f"{label}_branch", [], [output]))
    return b.op("If", condition, then_branch=branches[0], else_branch=branches[1])


def sech2(b: GraphBuilder, x: str) -> str:
    """1 - tanh(x)^2 as 4e / (1 + e)^2 with e = exp(-2|x|): no cancellation, no overflow."""
    e = b.op("Exp", b.op("Mul", b.op("Abs", x), b.const(-2.0)))
    one_plus_e = b.op("Add", b.const(1.0), e)
    return b.op("Div", b.op("Mul", b.const(4.0), e), b.op("Mul", one_plus_e, one_plus_e))


def finite(b: GraphBuilder, x: str) -> str:
    """x with +-inf replaced by +-max, so that x * 0 is 0 where the factor underflows."""
    big = b.max_finite
    return b.op("Clip", x, b.const(-big), b.const(big))


def log1p(b: GraphBuilder, u: str) -> str:
    """log(1 + u) for u > -1, relatively accurate for small u (ONNX has no Log1p).

    The classic trick: with w = 1 + u rounded, log(w) * u / (w - 1) cancels the rounding
    of w (w - 1 is exact), a few ulps from log1p with onnxruntime's Log (<= 1.7 ulp
    float32, <= 1 ulp float64 near 1). Where w rounds to 1 the ratio log(w) / (w - 1) is 1,
    written (log(w) + m) / ((w - 1) + m) with m = [w == 1]: no 0/0, no Where.
    """
    w = b.op("Add", u, b.const(1.0))
    at_one = b.op("Cast", b.op("Equal", w, b.const(1.0)), to=ELEM_TYPES[b.compute_dtype])
    ratio = b.op(
        "Div",
        b.op("Add", b.op("Log", w), at_one),
        b.op("Add", b.op("Sub", w, b.const(1.0)), at_one),
    )
    return b.op("Mul", u, ratio)


def softplus(b: GraphBuilder, v: str) -> str:
    """log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)): exp never overflows, and both tails
    are relatively accurate (v itself above, exp(v) below) without a threshold switch."""
    tail = log1p(b, b.op("Exp", b.op("Neg", b.op("Abs", v))))
    return b.op("Add", b.op("Relu", v), tail)


def expm1_nonpositive(b: GraphBuilder, z: str) -> str:
    """exp(z) - 1 for z <= 0 (-1 at -inf), without the cancellation of Exp(z) - 1 near 0:
    2t / (1 - t) with t = tanh(z / 2), 1 - t in [1, 2] (a few ulps with onnxruntime's
    Tanh; the same form as selu's)."""
    t = b.op("Tanh", b.op("Mul", z, b.const(0.5)))
    return b.op("Div", b.op("Add", t, t), b.op("Sub", b.const(1.0), t))


def nan_or_zero(b: GraphBuilder, x: str) -> str:
    """NaN where x is NaN, else 0 (+-inf included): added to a 0/1 factor built from a
    comparison (which is False for NaN), it carries x's NaN into the result."""
    zero = b.const(0.0)
    return b.op("Clip", x, zero, zero)
