"""The function catalog: every fact about every served function, in one entry each.

An entry names the function and its aliases, declares its parameters once (kind,
default, checks, and whether a value is a graph input or selects a graph), points
at its graph bodies (`actgrad_server.graphs`), and says how it may be split into
chunks (`elementwise`, `axis_param`) and which values warm-up and export use
(`Param.sample`). `ListFunctions`, the engine, the front ends, the OIP model
table, the export, the docs and the tests all read it; no module outside this one
and `graphs/` names a function. It knows nothing of gRPC or onnxruntime.

Adding an elementwise function: one graph module in `graphs/`, one `Function`
below, one reference in tests/unit/graph_reference.py.
"""

from __future__ import annotations

import difflib
import enum
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from actgrad_server.errors import InvalidArgument, NotFound, shown
from actgrad_server.graphs import Activation
from actgrad_server.graphs.elu import CELU, ELU
from actgrad_server.graphs.gelu import GELU
from actgrad_server.graphs.hard import HARDSIGMOID, HARDSWISH, HARDTANH, RELU6
from actgrad_server.graphs.mish import MISH
from actgrad_server.graphs.prelu import PRELU
from actgrad_server.graphs.relu import LEAKY_RELU, RELU
from actgrad_server.graphs.selu import SELU
from actgrad_server.graphs.shrink import HARDSHRINK, SOFTSHRINK, TANHSHRINK, THRESHOLDED_RELU
from actgrad_server.graphs.sigmoid import SIGMOID
from actgrad_server.graphs.softmax import SOFTMAX as SOFTMAX_GRAPH
from actgrad_server.graphs.softplus import LOGSIGMOID, SOFTPLUS
from actgrad_server.graphs.softsign import SOFTSIGN
from actgrad_server.graphs.swish import SWISH
from actgrad_server.graphs.tanh import TANH, XTANH
from actgrad_server.graphs.xsin import XSIN

__all__ = [
    "CATALOG",
    "MAX_NAME_LENGTH",
    "SOFTMAX",
    "Call",
    "Function",
    "Param",
    "ParamKind",
    "Properties",
    "Shaped",
    "bind",
    "check_name_length",
    "find",
    "lookup",
    "shown",
]


class ParamKind(enum.Enum):
    NUMBER = "number"
    INTEGER = "integer"
    STRING = "string"
    BOOL = "bool"
    TENSOR = "tensor"


@dataclass(frozen=True)
class Param:
    """One parameter of a function.

    `runtime` parameters are fed to the graph as float64 inputs, so any value
    reuses one cached session; the others are structural and select a graph.
    Tensor parameters are graph inputs of the input's dtype; `sample` and
    `sample_shape` give the value that warm-up feeds and the shape an exported
    model declares when none is chosen.
    """

    name: str
    kind: ParamKind
    description: str
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: tuple[str, ...] = ()
    runtime: bool = False
    sample: float | None = None
    sample_shape: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Properties:
    """What a function's graph looks like, declared once and checked by sampling.

    `output_range` is the closure of the set of values (±inf when unbounded; an
    open end such as sigmoid's 0 is approached, a closed one such as relu's 0 is
    reached). `monotonic`: non-decreasing. `smooth`: continuously differentiable
    (C¹). `zero_centred`: f(0) = 0. `saturating_left` / `saturating_right`: the
    derivative tends to 0 as x -> -inf / +inf. `condition`: for parameterised
    functions, the parameter values the declaration holds for (it is checked at the
    defaults, prelu at its sample slope); for softmax, which output is meant.
    tests/unit/test_properties.py samples every function and checks every field,
    true or false.
    """

    output_range: tuple[float, float]
    monotonic: bool
    smooth: bool
    zero_centred: bool
    saturating_left: bool
    saturating_right: bool
    condition: str = ""

    @property
    def bounded_below(self) -> bool:
        return math.isfinite(self.output_range[0])

    @property
    def bounded_above(self) -> bool:
        return math.isfinite(self.output_range[1])


@dataclass(frozen=True)
class Function:
    """One served function.

    `elementwise`: each output element depends only on the same input element, so
    a stream may split the input anywhere (along axis 0 when it has tensor
    parameters). `axis_param`: for a function that mixes values along one axis
    only (softmax), the integer parameter naming that axis; `bind` normalises it
    to [0, rank), a 0-d input counts as one element along one axis, and chunks
    split along other axes.
    """

    name: str
    summary: str
    formula: str
    formula_latex: str
    gradient_note: str
    graph: Activation
    properties: Properties
    aliases: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    elementwise: bool = True
    axis_param: str | None = None
    # A check across parameters, run by bind on the bound values (by name) with the field
    # prefix; raises InvalidArgument naming the field (hardtanh's min_val < max_val).
    check: Callable[[Mapping[str, Any], str], None] | None = None
    # Where the definition switches branch (the slope or the value may jump there; a C1
    # join such as elu's at alpha = 1 counts), as a function of every parameter's value
    # by name (defaults filled in). tests/unit/test_kinks_torch.py compares the graphs
    # with PyTorch autograd at and beside each point, and checks that autograd's slope
    # and value jump nowhere else.
    kinks: Callable[[Mapping[str, Any]], tuple[float, ...]] = lambda values: ()

    @property
    def params_by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    @property
    def runtime_params(self) -> tuple[str, ...]:
        """Names of the 0-d float64 graph inputs, in declaration order."""
        return tuple(p.name for p in self.params if p.runtime)

    @property
    def tensor_params(self) -> tuple[str, ...]:
        """Names of the tensor parameters (graph inputs of the input's dtype)."""
        return tuple(p.name for p in self.params if p.kind is ParamKind.TENSOR)

    @property
    def streamable(self) -> bool:
        """True when chunks of an input can be computed independently."""
        return self.elementwise or self.axis_param is not None

    def sample_params(self, dtype: np.dtype[Any]) -> dict[str, Any]:
        """Valid values of the required parameters (for warm-up), others defaulted."""
        return {
            p.name: np.full(p.sample_shape, p.sample, dtype=dtype)
            for p in self.params
            if p.required and p.kind is ParamKind.TENSOR
        }

    def structural_variants(self, rank: int) -> list[dict[str, Any]]:
        """Every combination of the structural values (for warm-up): each choice of a
        string, both bools, each axis of a rank-`rank` input; other integers default.
        Runtime and tensor parameters are absent (any value shares the session)."""
        options: list[list[tuple[str, Any]]] = []
        for p in self.params:
            if p.runtime or p.kind is ParamKind.TENSOR:
                continue
            if p.name == self.axis_param:
                values: tuple[Any, ...] = tuple(range(max(rank, 1)))
            elif p.kind is ParamKind.BOOL:
                values = (False, True)
            else:
                values = p.choices or (p.default,)
            options.append([(p.name, v) for v in values])
        return [dict(combination) for combination in itertools.product(*options)]


@dataclass(frozen=True)
class Call:
    """A validated call: what the engine needs to pick a graph and feed it."""

    function: Function
    # Float64 scalar graph inputs, by name (e.g. {"alpha": 0.1}).
    scalars: Mapping[str, float] = field(default_factory=dict)
    # Tensor graph inputs (e.g. {"slope": array}), already of the input's dtype.
    tensors: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)
    # Structural values that select the forward graph; part of the cache key.
    static: tuple[tuple[str, Any], ...] = ()

    @property
    def mixing_axis(self) -> int | None:
        """The normalised axis the function mixes values along, None if elementwise."""
        if self.function.axis_param is None:
            return None
        axis: int = dict(self.static)[self.function.axis_param]
        return axis


_FINITE = "any finite number"
_INF = math.inf


def _check_hardtanh(values: Mapping[str, Any], field_prefix: str) -> None:
    if not values["min_val"] < values["max_val"]:
        raise InvalidArgument(
            f"{field_prefix}['min_val']: must be < max_val ({values['max_val']!r}), "
            f"got {values['min_val']!r}"
        )


def _hardsigmoid_kinks(values: Mapping[str, Any]) -> tuple[float, ...]:
    alpha, beta = values["alpha"], values["beta"]
    if alpha == 0:
        return ()  # the constant clip(beta, 0, 1)
    return tuple(sorted((-beta / alpha, (1.0 - beta) / alpha)))


CATALOG: tuple[Function, ...] = (
    Function(
        name="sigmoid",
        graph=SIGMOID,
        properties=Properties(
            output_range=(0.0, 1.0),
            monotonic=True,
            smooth=True,
            zero_centred=False,
            saturating_left=True,
            saturating_right=True,
        ),
        summary="Logistic sigmoid.",
        formula="sigmoid(x) = 1 / (1 + exp(-x))",
        formula_latex=r"\sigma(x) = \frac{1}{1 + e^{-x}}",
        gradient_note="sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x)).",
    ),
    Function(
        name="tanh",
        graph=TANH,
        properties=Properties(
            output_range=(-1.0, 1.0),
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=True,
        ),
        summary="Hyperbolic tangent.",
        formula="tanh(x)",
        formula_latex=r"\tanh(x)",
        gradient_note="tanh'(x) = 1 - tanh(x)^2, computed without cancellation in the tails.",
    ),
    Function(
        name="relu",
        graph=RELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(0.0, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
        ),
        summary="Rectified linear unit.",
        formula="relu(x) = max(x, 0)",
        formula_latex=r"\max(x, 0)",
        gradient_note="relu'(x) = 1 for x > 0, else 0; relu'(0) = 0 as in PyTorch autograd.",
    ),
    Function(
        name="leaky_relu",
        graph=LEAKY_RELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
            condition=(
                "for 0 < alpha < 1 (default 0.01); alpha >= 0 keeps it monotonic, alpha = 0 is relu"
            ),
        ),
        summary="Leaky ReLU with a slope for negative inputs.",
        formula="leaky_relu(x) = x if x >= 0 else alpha * x",
        formula_latex=r"\begin{cases} x & x \ge 0 \\ \alpha x & x < 0 \end{cases}",
        gradient_note=(
            "leaky_relu'(x) = 1 for x > 0, else alpha; leaky_relu'(0) = alpha as in "
            "PyTorch autograd."
        ),
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "Slope for x < 0; " + _FINITE + ".",
                default=0.01,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="prelu",
        graph=PRELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
            condition=(
                "for a slope with 0 < slope < 1 (checked at 0.25); slope >= 0 keeps it monotonic"
            ),
        ),
        summary="Parametric ReLU with a learned slope tensor.",
        formula="prelu(x) = x if x >= 0 else slope * x",
        formula_latex=r"\begin{cases} x & x \ge 0 \\ s x & x < 0 \end{cases}",
        gradient_note=(
            "d/dx = 1 for x > 0, else slope (slope at x = 0, as in PyTorch); "
            "d/dslope = x for x < 0, else 0, summed over the axes the slope is "
            "broadcast along and returned in the slope's shape."
        ),
        params=(
            Param(
                "slope",
                ParamKind.TENSOR,
                "Slope tensor of the input's dtype, unidirectionally broadcastable "
                "to the input (right-aligned, as ONNX PRelu); a number is a 0-d slope.",
                required=True,
                sample=0.25,
            ),
        ),
    ),
    Function(
        name="softmax",
        graph=SOFTMAX_GRAPH,
        properties=Properties(
            output_range=(0.0, 1.0),
            monotonic=True,
            smooth=True,
            zero_centred=False,
            saturating_left=True,
            saturating_right=True,
            condition=(
                "for each output as a function of its own logit, the others fixed, with "
                "log = false and any temperature > 0; log-softmax's range is (-inf, 0), and it "
                "does not saturate on the left"
            ),
        ),
        summary="Softmax (or log-softmax) along one axis, with a temperature.",
        formula="softmax(x)_i = exp(x_i / T) / sum_j exp(x_j / T) along axis",
        formula_latex=r"\mathrm{softmax}(x)_i = \frac{e^{x_i/T}}{\sum_j e^{x_j/T}}",
        gradient_note=(
            "VJP: s * (g - sum(g * s, axis)) / T; for log-softmax (g - s * sum(g, axis)) / T."
        ),
        elementwise=False,
        axis_param="axis",
        params=(
            Param(
                "axis",
                ParamKind.INTEGER,
                "Axis to normalise over, in [-rank, rank).",
                default=-1,
            ),
            Param(
                "temperature",
                ParamKind.NUMBER,
                "Divides the logits; finite and > 0.",
                default=1.0,
                minimum=0.0,
                minimum_exclusive=True,
                runtime=True,
            ),
            Param("log", ParamKind.BOOL, "Return log-softmax.", default=False),
        ),
    ),
    Function(
        name="swish",
        graph=SWISH,
        properties=Properties(
            output_range=(-0.2784645427610738, _INF),
            monotonic=False,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for beta = 1 (default); for any beta > 0 the minimum is -0.2784645427610738 / beta"
            ),
        ),
        summary="Swish / SiLU: x times the sigmoid of beta x.",
        formula="swish(x) = x * sigmoid(beta * x)",
        formula_latex=r"x \, \sigma(\beta x)",
        gradient_note="swish'(x) = s + beta * x * s * (1 - s) with s = sigmoid(beta * x).",
        aliases=("silu",),
        params=(
            Param(
                "beta",
                ParamKind.NUMBER,
                "Scale inside the sigmoid; " + _FINITE + ".",
                default=1.0,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="gelu",
        graph=GELU,
        properties=Properties(
            output_range=(-0.16997120747990366, _INF),
            monotonic=False,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for approximate = 'none' (default); 'tanh' has the same properties with the "
                "minimum -0.17004075057125405"
            ),
        ),
        summary="Gaussian error linear unit, exact or with the tanh approximation.",
        formula=(
            "gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))); approximate='tanh': "
            "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"
        ),
        formula_latex=r"x\,\Phi(x) = \tfrac{x}{2}\left(1 + \mathrm{erf}(x/\sqrt{2})\right)",
        gradient_note=(
            "gelu'(x) = Phi(x) + x * phi(x); the tanh form differentiates its own formula."
        ),
        params=(
            Param(
                "approximate",
                ParamKind.STRING,
                "'none' for the exact erf form, 'tanh' for the tanh approximation.",
                default="none",
                choices=("none", "tanh"),
            ),
        ),
    ),
    Function(
        name="selu",
        graph=SELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-1.7580993408473766, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for the defaults (minimum -gamma * alpha); any alpha > 0, gamma > 0 with alpha "
                "!= 1 keeps these properties"
            ),
        ),
        summary="Scaled exponential linear unit.",
        formula="selu(x) = gamma * (x if x > 0 else alpha * (exp(x) - 1))",
        formula_latex=r"\gamma \begin{cases} x & x > 0 \\ \alpha (e^x - 1) & x \le 0 \end{cases}",
        gradient_note=(
            "selu'(x) = gamma for x > 0, else gamma * alpha * exp(x); "
            "selu'(0) = gamma * alpha as in PyTorch autograd."
        ),
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "SELU alpha; " + _FINITE + ".",
                default=1.6732632423543772848,
                runtime=True,
            ),
            Param(
                "gamma",
                ParamKind.NUMBER,
                "SELU scale; " + _FINITE + ".",
                default=1.0507009873554804934,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="xtanh",
        graph=XTANH,
        properties=Properties(
            output_range=(0.0, _INF),
            monotonic=False,
            smooth=True,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
        ),
        summary="x times tanh(x).",
        formula="xtanh(x) = x * tanh(x)",
        formula_latex=r"x \tanh(x)",
        gradient_note="xtanh'(x) = tanh(x) + x * (1 - tanh(x)^2).",
        aliases=("scaled_tanh",),
    ),
    Function(
        name="xsin",
        graph=XSIN,
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=False,
            smooth=True,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
        ),
        summary="x times sin(x).",
        formula="xsin(x) = x * sin(x)",
        formula_latex=r"x \sin(x)",
        gradient_note="xsin'(x) = sin(x) + x * cos(x).",
        aliases=("sinusoidal",),
    ),
    Function(
        name="softplus",
        graph=SOFTPLUS,
        properties=Properties(
            output_range=(0.0, _INF),
            monotonic=True,
            smooth=True,
            zero_centred=False,
            saturating_left=True,
            saturating_right=False,
            condition="for any beta > 0 (default 1)",
        ),
        summary="Softplus, a smooth ReLU (without PyTorch's threshold switch).",
        formula="softplus(x) = log(1 + exp(beta * x)) / beta",
        formula_latex=r"\frac{1}{\beta} \log\left(1 + e^{\beta x}\right)",
        gradient_note=(
            "softplus'(x) = sigmoid(beta * x), relatively accurate in both tails "
            "(PyTorch's autograd gives 1 above its threshold beta * x > 20)."
        ),
        params=(
            Param(
                "beta",
                ParamKind.NUMBER,
                "Sharpness; finite and > 0.",
                default=1.0,
                minimum=0.0,
                minimum_exclusive=True,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="elu",
        graph=ELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-1.0, _INF),
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for alpha = 1 (default); any alpha > 0 gives the range (-alpha, inf), but C1 "
                "only for alpha = 1"
            ),
        ),
        summary="Exponential linear unit.",
        formula="elu(x) = x if x > 0 else alpha * (exp(x) - 1)",
        formula_latex=r"\begin{cases} x & x > 0 \\ \alpha (e^x - 1) & x \le 0 \end{cases}",
        gradient_note=(
            "elu'(x) = 1 for x > 0, else alpha * exp(x); elu'(0) = alpha as in PyTorch autograd."
        ),
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "Scale of the negative side; " + _FINITE + ".",
                default=1.0,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="softsign",
        graph=SOFTSIGN,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-1.0, 1.0),
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=True,
        ),
        summary="Softsign.",
        formula="softsign(x) = x / (1 + |x|)",
        formula_latex=r"\frac{x}{1 + |x|}",
        gradient_note="softsign'(x) = 1 / (1 + |x|)^2.",
    ),
    Function(
        name="mish",
        graph=MISH,
        properties=Properties(
            output_range=(-0.30884341301725041, _INF),
            monotonic=False,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
        ),
        summary="Mish: x times tanh(softplus(x)).",
        formula="mish(x) = x * tanh(log(1 + exp(x)))",
        formula_latex=r"x \tanh\left(\log\left(1 + e^x\right)\right)",
        gradient_note=(
            "mish'(x) = tanh(softplus(x)) + x * (1 - tanh(softplus(x))^2) * sigmoid(x)."
        ),
    ),
    Function(
        name="logsigmoid",
        graph=LOGSIGMOID,
        properties=Properties(
            output_range=(-_INF, 0.0),
            monotonic=True,
            smooth=True,
            zero_centred=False,
            saturating_left=False,
            saturating_right=True,
        ),
        summary="Logarithm of the logistic sigmoid.",
        formula="logsigmoid(x) = log(sigmoid(x)) = -softplus(-x)",
        formula_latex=r"\log \sigma(x) = -\log\left(1 + e^{-x}\right)",
        gradient_note="logsigmoid'(x) = sigmoid(-x) = 1 - sigmoid(x).",
    ),
    Function(
        name="hardsigmoid",
        graph=HARDSIGMOID,
        kinks=_hardsigmoid_kinks,
        properties=Properties(
            output_range=(0.0, 1.0),
            monotonic=True,
            smooth=False,
            zero_centred=False,
            saturating_left=True,
            saturating_right=True,
            condition=(
                "for any alpha > 0 (defaults alpha = 0.2, beta = 0.5); zero-centred only for "
                "beta <= 0"
            ),
        ),
        summary="Hard sigmoid, ONNX HardSigmoid's defaults (PyTorch's is alpha = 1/6).",
        formula="hardsigmoid(x) = max(0, min(1, alpha * x + beta))",
        formula_latex=r"\max(0, \min(1, \alpha x + \beta))",
        gradient_note=(
            "hardsigmoid'(x) = alpha where 0 < alpha * x + beta < 1, else 0: 0 at both "
            "kinks as in PyTorch autograd (decided on the exact alpha * x)."
        ),
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "Slope; " + _FINITE + ".",
                default=0.2,
                runtime=True,
            ),
            Param(
                "beta",
                ParamKind.NUMBER,
                "Offset; " + _FINITE + ".",
                default=0.5,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="hardswish",
        graph=HARDSWISH,
        kinks=lambda v: (-3.0, 3.0),
        properties=Properties(
            output_range=(-0.375, _INF),
            monotonic=False,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
        ),
        summary="Hard swish: x times hardsigmoid(x) with alpha = 1/6, beta = 1/2.",
        formula="hardswish(x) = x * max(0, min(1, x / 6 + 1/2))",
        formula_latex=r"x \max\left(0, \min\left(1, \tfrac{x}{6} + \tfrac{1}{2}\right)\right)",
        gradient_note=(
            "hardswish'(x) = 0 for x <= -3, x / 3 + 1/2 for -3 < x < 3, 1 for x >= 3: "
            "0 at -3 and 1 at 3, as in PyTorch autograd."
        ),
    ),
    Function(
        name="relu6",
        graph=RELU6,
        kinks=lambda v: (0.0, 6.0),
        properties=Properties(
            output_range=(0.0, 6.0),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=True,
        ),
        summary="ReLU capped at 6.",
        formula="relu6(x) = min(max(x, 0), 6)",
        formula_latex=r"\min(\max(x, 0), 6)",
        gradient_note=(
            "relu6'(x) = 1 for 0 < x < 6, else 0; 0 at both kinks as in PyTorch autograd."
        ),
    ),
    Function(
        name="hardtanh",
        graph=HARDTANH,
        kinks=lambda v: (v["min_val"], v["max_val"]),
        properties=Properties(
            output_range=(-1.0, 1.0),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=True,
            condition=(
                "for min_val <= 0 <= max_val (defaults -1, 1; the range is [min_val, max_val]); "
                "zero-centred only then"
            ),
        ),
        summary="Hard tanh: x clipped to [min_val, max_val].",
        formula="hardtanh(x) = min(max(x, min_val), max_val)",
        formula_latex=r"\min(\max(x, a), b)",
        gradient_note=(
            "hardtanh'(x) = 1 for min_val < x < max_val, else 0; 0 at both kinks as in "
            "PyTorch autograd."
        ),
        params=(
            Param(
                "min_val",
                ParamKind.NUMBER,
                "Lower end; " + _FINITE + ", < max_val.",
                default=-1.0,
                runtime=True,
            ),
            Param(
                "max_val",
                ParamKind.NUMBER,
                "Upper end; " + _FINITE + ", > min_val.",
                default=1.0,
                runtime=True,
            ),
        ),
        check=_check_hardtanh,
    ),
    Function(
        name="celu",
        graph=CELU,
        kinks=lambda v: (0.0,),
        properties=Properties(
            output_range=(-1.0, _INF),
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for alpha = 1 (default); any alpha > 0 gives the range (-alpha, inf) and the "
                "same properties"
            ),
        ),
        summary="Continuously differentiable exponential linear unit.",
        formula="celu(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))",
        formula_latex=r"\max(0, x) + \min\left(0, \alpha \left(e^{x/\alpha} - 1\right)\right)",
        gradient_note="celu'(x) = 1 for x >= 0, else exp(x / alpha); celu'(0) = 1.",
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "Scale; finite and > 0.",
                default=1.0,
                minimum=0.0,
                minimum_exclusive=True,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="thresholded_relu",
        graph=THRESHOLDED_RELU,
        kinks=lambda v: (v["alpha"],),
        properties=Properties(
            output_range=(0.0, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=True,
            saturating_right=False,
            condition=(
                "for alpha >= 0 (default 1; not even continuous at alpha > 0); alpha < 0 makes it"
                " non-monotonic with values down to alpha"
            ),
        ),
        summary="Thresholded ReLU: x above alpha, 0 elsewhere (ONNX ThresholdedRelu).",
        formula="thresholded_relu(x) = x if x > alpha else 0",
        formula_latex=r"\begin{cases} x & x > \alpha \\ 0 & x \le \alpha \end{cases}",
        gradient_note=(
            "thresholded_relu'(x) = 1 for x > alpha, else 0; 0 at x = alpha as in "
            "PyTorch autograd (torch.nn.Threshold)."
        ),
        params=(
            Param(
                "alpha",
                ParamKind.NUMBER,
                "Threshold; " + _FINITE + ".",
                default=1.0,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="softshrink",
        graph=SOFTSHRINK,
        kinks=lambda v: (-v["lambd"], v["lambd"]),
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
            condition="for any lambd >= 0 (default 0.5)",
        ),
        summary="Soft shrinkage.",
        formula="softshrink(x) = x - lambd if x > lambd, x + lambd if x < -lambd, else 0",
        formula_latex=r"\operatorname{sign}(x) \max(|x| - \lambda, 0)",
        gradient_note=(
            "softshrink'(x) = 1 for |x| > lambd, else 0; 0 at x = +-lambd as in PyTorch autograd."
        ),
        params=(
            Param(
                "lambd",
                ParamKind.NUMBER,
                "Half-width of the zero band; finite and >= 0.",
                default=0.5,
                minimum=0.0,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="hardshrink",
        graph=HARDSHRINK,
        kinks=lambda v: (-v["lambd"], v["lambd"]),
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=True,
            smooth=False,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
            condition=(
                "for any lambd > 0 (default 0.5; not continuous at +-lambd); lambd = 0 is the "
                "identity"
            ),
        ),
        summary="Hard shrinkage.",
        formula="hardshrink(x) = x if |x| > lambd else 0",
        formula_latex=r"\begin{cases} x & |x| > \lambda \\ 0 & |x| \le \lambda \end{cases}",
        gradient_note=(
            "hardshrink'(x) = 1 for |x| > lambd, else 0; 0 at x = +-lambd as in PyTorch autograd."
        ),
        params=(
            Param(
                "lambd",
                ParamKind.NUMBER,
                "Half-width of the zero band; finite and >= 0.",
                default=0.5,
                minimum=0.0,
                runtime=True,
            ),
        ),
    ),
    Function(
        name="tanhshrink",
        graph=TANHSHRINK,
        properties=Properties(
            output_range=(-_INF, _INF),
            monotonic=True,
            smooth=True,
            zero_centred=True,
            saturating_left=False,
            saturating_right=False,
        ),
        summary="x minus tanh(x).",
        formula="tanhshrink(x) = x - tanh(x)",
        formula_latex=r"x - \tanh(x)",
        gradient_note=("tanhshrink'(x) = tanh(x)^2 (= 1 - (1 - tanh(x)^2), PyTorch's formula)."),
    ),
)

_BY_NAME: dict[str, Function] = {}
for _function in CATALOG:
    for _name in (_function.name, *_function.aliases):
        _BY_NAME[_name] = _function

#: The function the Softmax RPC computes (its request has softmax's parameters as fields).
SOFTMAX: Function = _BY_NAME["softmax"]


#: Names longer than this (functions, parameters, OIP models) are refused before any
#: search: a caller must not make the server spend CPU on, or echo, a megabyte name.
MAX_NAME_LENGTH = 128


def check_name_length(name: str, *, field: str) -> None:
    """INVALID_ARGUMENT for a name over MAX_NAME_LENGTH, with the name cut."""
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{field}: {shown(name)} is longer than the limit of {MAX_NAME_LENGTH} characters"
        )


def find(name: str) -> Function | None:
    """The function of a canonical name or alias (case-insensitive), None if unknown.

    No close-match search: what a metrics label or a log needs, cheaply.
    """
    if len(name) > MAX_NAME_LENGTH:
        return None
    return _BY_NAME.get(name.strip().lower().replace("-", "_"))


def lookup(name: str, *, field: str = "function") -> Function:
    """Finds a function by canonical name or alias (case-insensitive).

    NotFound suggests close matches; a name over MAX_NAME_LENGTH is INVALID_ARGUMENT
    before any search.
    """
    check_name_length(name, field=field)
    function = find(name)
    if function is None:
        key = name.strip().lower().replace("-", "_")
        close = difflib.get_close_matches(key, list(_BY_NAME), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFound(
            f"unknown function {shown(name)}{hint} (known: {', '.join(f.name for f in CATALOG)})"
        )
    return function


def _check_number(param: Param, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{where}: must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgument(f"{where}: must be finite, got {number!r}")
    low, high = param.minimum, param.maximum
    if low is not None and (number <= low if param.minimum_exclusive else number < low):
        op = ">" if param.minimum_exclusive else ">="
        raise InvalidArgument(f"{where}: must be {op} {low:g}, got {number!r}")
    if high is not None and (number >= high if param.maximum_exclusive else number > high):
        op = "<" if param.maximum_exclusive else "<="
        raise InvalidArgument(f"{where}: must be {op} {high:g}, got {number!r}")
    return number


def _check_value(param: Param, value: Any, where: str) -> Any:
    kind = param.kind
    if kind is ParamKind.NUMBER:
        return _check_number(param, value, where)
    if kind is ParamKind.INTEGER:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"{where}: must be an integer, got {value!r}")
        return value
    if kind is ParamKind.STRING:
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: must be a string, got {type(value).__name__}")
        if param.choices and value not in param.choices:
            raise InvalidArgument(
                f"{where}: must be one of {', '.join(map(repr, param.choices))}, got {shown(value)}"
            )
        return value
    if kind is ParamKind.BOOL:
        if not isinstance(value, bool | np.bool_):
            raise InvalidArgument(f"{where}: must be a boolean, got {type(value).__name__}")
        return bool(value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A number stands for a 0-d tensor (one slope for every element); bind()
        # gives it the input's dtype, as a scalar weight is in PyTorch.
        return _check_number(param, value, where)
    raise InvalidArgument(f"{where}: must be a tensor or a number, got {type(value).__name__}")


def _normalize_axis(axis: int, rank: int, where: str) -> int:
    # A 0-d input is treated as one element along one axis, as PyTorch does.
    effective = max(rank, 1)
    if not -effective <= axis < effective:
        raise InvalidArgument(
            f"{where}: axis {axis} is out of range for an input of rank {rank} "
            f"(allowed: {-effective}..{effective - 1})"
        )
    return axis % effective


def _check_slope(
    slope: npt.NDArray[Any], x_shape: tuple[int, ...], x_dtype: np.dtype[Any], where: str
) -> None:
    if slope.dtype != x_dtype:
        raise InvalidArgument(
            f"{where}: dtype {slope.dtype} differs from the input's dtype {x_dtype}"
        )
    if slope.ndim > len(x_shape):
        raise InvalidArgument(
            f"{where}: rank {slope.ndim} exceeds the input's rank {len(x_shape)}; "
            f"shape {list(slope.shape)} is not broadcastable to {list(x_shape)}"
        )
    for s_dim, x_dim in zip(reversed(slope.shape), reversed(x_shape), strict=False):
        if s_dim not in (1, x_dim):
            raise InvalidArgument(
                f"{where}: shape {list(slope.shape)} is not broadcastable to the input's "
                f"shape {list(x_shape)}"
            )


class Shaped(Protocol):
    """What `bind` checks of a grad_output: an array, or a tensor still in a client's
    shared memory (`shm.RegionTensor`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...


def _check_grad_output(
    grad_output: Shaped, x_shape: tuple[int, ...], x_dtype: np.dtype[Any], where: str
) -> None:
    if grad_output.dtype != x_dtype:
        raise InvalidArgument(
            f"{where}: dtype {grad_output.dtype} differs from the input's dtype {x_dtype}"
        )
    if grad_output.shape != x_shape:
        raise InvalidArgument(
            f"{where}: shape {list(grad_output.shape)} differs from the input's shape "
            f"{list(x_shape)}"
        )


def bind(
    function: Function,
    params: Mapping[str, Any],
    *,
    x_shape: tuple[int, ...],
    x_dtype: np.dtype[Any],
    field_prefix: str = "params",
    grad_output: Shaped | None = None,
    grad_output_field: str = "grad_output",
) -> Call:
    """Validates `params` (and `grad_output`) for a call on an input of `x_shape` and
    `x_dtype`.

    Raises InvalidArgument naming the field for an unknown, ill-typed,
    out-of-range or missing parameter, a tensor parameter that does not
    broadcast to the input, or a grad_output of another dtype or shape.
    """
    if grad_output is not None:
        _check_grad_output(grad_output, x_shape, x_dtype, grad_output_field)
    known = {p.name for p in function.params}
    for name in params:
        if name not in known:
            where = f"{field_prefix}[{shown(name)}]: unknown parameter"
            if not known:
                raise InvalidArgument(f"{where}; {function.name} takes no parameters")
            allowed = ", ".join(sorted(known))
            raise InvalidArgument(f"{where} for {function.name} (allowed: {allowed})")
    scalars: dict[str, float] = {}
    tensors: dict[str, npt.NDArray[Any]] = {}
    static: list[tuple[str, Any]] = []
    for param in function.params:
        where = f"{field_prefix}[{param.name!r}]"
        if param.name in params:
            value = _check_value(param, params[param.name], where)
        elif param.required:
            raise InvalidArgument(f"{where}: is required for {function.name}")
        else:
            value = param.default
        if param.kind is ParamKind.TENSOR:
            if not isinstance(value, np.ndarray):
                value = np.asarray(value, dtype=x_dtype)
            _check_slope(value, x_shape, x_dtype, where)
            tensors[param.name] = value
        elif param.runtime:
            scalars[param.name] = float(value)
        elif param.name == function.axis_param:
            static.append((param.name, _normalize_axis(value, len(x_shape), where)))
        else:
            static.append((param.name, value))
    if function.check is not None:
        function.check({**scalars, **dict(static)}, field_prefix)
    return Call(
        function=function,
        scalars=scalars,
        tensors=tensors,
        static=tuple(static),
    )
