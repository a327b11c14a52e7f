"""The graph builder and the numerically stable pieces that several activations share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

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


class SigmoidParts(NamedTuple):
    s: str  # sigmoid(v)
    one_minus_s: str  # 1 - sigmoid(v), without cancellation
    slope: str  # sigmoid'(v) = s * (1 - s)
    e: str  # exp(-|v|)
    r: str  # 1 / (1 + exp(-|v|))
    nonneg: str  # v >= 0


def sigmoid_parts(b: GraphBuilder, v: str) -> SigmoidParts:
    """sigmoid(v) and friends through e = exp(-|v|), which never overflows.

    onnxruntime's Sigmoid kernel flushes the negative tail (relative error ~1 below -17
    in float32), so the op is not used.
    """
    e = b.op("Exp", b.op("Neg", b.op("Abs", v)))
    r = b.op("Div", b.const(1.0), b.op("Add", b.const(1.0), e))
    er = b.op("Mul", e, r)
    nonneg = b.op("GreaterOrEqual", v, b.const(0.0))
    s = b.op("Where", nonneg, r, er)
    one_minus_s = b.op("Where", nonneg, er, r)
    return SigmoidParts(s, one_minus_s, b.op("Mul", er, r), e, r, nonneg)


def sech2(b: GraphBuilder, x: str) -> str:
    """1 - tanh(x)^2 as 4e / (1 + e)^2 with e = exp(-2|x|): no cancellation, no overflow."""
    e = b.op("Exp", b.op("Mul", b.op("Abs", x), b.const(-2.0)))
    one_plus_e = b.op("Add", b.const(1.0), e)
    return b.op("Div", b.op("Mul", b.const(4.0), e), b.op("Mul", one_plus_e, one_plus_e))


def finite(b: GraphBuilder, x: str) -> str:
    """x with +-inf replaced by +-max, so that x * 0 is 0 where the factor underflows."""
    big = b.max_finite
    return b.op("Clip", x, b.const(-big), b.const(big))


def propagate_nan(b: GraphBuilder, x: str, value: str) -> str:
    """value, but NaN wherever x is NaN (for piecewise formulas that select a constant)."""
    return b.op("Where", b.op("IsNaN", x), x, value)
