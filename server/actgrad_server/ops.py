"""actgrad's own operations on plain values, for every front end.

`Operations` answers actgrad.v1's calls (the catalog, activate, gradient, softmax,
dense, dense_vjp, gradient_flow) taking and returning numpy arrays, numbers, strings
and dataclasses, and raising the domain errors of `actgrad_server.errors`; it knows
no protobuf, gRPC or HTTP. `oip/dataplane.py` is the same for the Open Inference
Protocol. A front end converts its wire form to these values and back, nothing more
(`http/actgrad_routes.py`; gRPC's `api/activation.py` for its dense, flow and catalog
calls, whose tensors travel in the message; its Activate, Gradient and Softmax keep
their own path of zero-copy views, shared-memory regions and results written while
computed, over the same `catalog.bind` and engine).

Every check, default and error comes from its owner: functions, parameters and their
defaults from the catalog (`catalog.lookup`, `catalog.bind`), the dense layer's shapes
and the probe's sizes, schemes and defaults from `neuron`, the limits from
`config.Limits` (a tensor over the element limit is `OverLimit`, INVALID_ARGUMENT on
gRPC and 413 over HTTP). Errors name a tensor by the name of its argument here (`x`, `weight`,
`grad_output`; the input as `input_field`), a parameter as ``params['alpha']``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actgrad.wire import DTYPES, TensorError, check_shape, dtype_info
from actgrad_server import catalog, neuron
from actgrad_server.config import Limits
from actgrad_server.engine import DenseResult, Engine, GradientResult
from actgrad_server.errors import InvalidArgument, OverLimit

__all__ = [
    "DenseResult",
    "FunctionInfo",
    "FunctionProperties",
    "GradientFlowResult",
    "GradientResult",
    "Operations",
    "ParamInfo",
    "function_infos",
]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a function, as `ListFunctions` describes it."""

    name: str
    kind: str  # catalog.ParamKind's value: number, integer, string, bool, tensor
    description: str
    default: bool | int | float | str | None
    required: bool
    minimum: float | None
    maximum: float | None
    minimum_exclusive: bool
    maximum_exclusive: bool
    choices: tuple[str, ...]


@dataclass(frozen=True)
class FunctionProperties:
    """What a function's graph looks like (`catalog.Properties`, ranges as two numbers)."""

    output_min: float
    output_max: float
    monotonic: bool
    smooth: bool
    zero_centred: bool
    bounded_below: bool
    bounded_above: bool
    saturating_left: bool
    saturating_right: bool
    condition: str


@dataclass(frozen=True)
class FunctionInfo:
    """One served function, as `ListFunctions` describes it."""

    name: str
    aliases: tuple[str, ...]
    summary: str
    formula: str
    formula_latex: str
    gradient_note: str
    params: tuple[ParamInfo, ...]
    elementwise: bool
    axis_param: str | None
    dtypes: tuple[str, ...]
    properties: FunctionProperties


@dataclass(frozen=True)
class GradientFlowResult:
    """The probe's per-layer statistics (float64): act_rms and grad_rms for l = 0..depth,
    the others for l = 1..depth; ratio = grad_rms[0] / grad_rms[depth]."""

    act_rms: npt.NDArray[np.float64]
    grad_rms: npt.NDArray[np.float64]
    weight_grad_rms: npt.NDArray[np.float64]
    saturated: npt.NDArray[np.float64]
    dead: npt.NDArray[np.float64]
    ratio: float


def _function_info(function: catalog.Function) -> FunctionInfo:
    props = function.properties
    return FunctionInfo(
        name=function.name,
        aliases=tuple(function.aliases),
        summary=function.summary,
        formula=function.formula,
        formula_latex=function.formula_latex,
        gradient_note=function.gradient_note,
        params=tuple(
            ParamInfo(
                name=p.name,
                kind=p.kind.value,
                description=p.description,
                default=p.default,
                required=p.required,
                minimum=p.minimum,
                maximum=p.maximum,
                minimum_exclusive=p.minimum_exclusive,
                maximum_exclusive=p.maximum_exclusive,
                choices=tuple(p.choices),
            )
            for p in function.params
        ),
        elementwise=function.elementwise,
        axis_param=function.axis_param,
        dtypes=tuple(d.name for d in DTYPES),
        properties=FunctionProperties(
            output_min=props.output_range[0],
            output_max=props.output_range[1],
            monotonic=props.monotonic,
            smooth=props.smooth,
            zero_centred=props.zero_centred,
            bounded_below=props.bounded_below,
            bounded_above=props.bounded_above,
            saturating_left=props.saturating_left,
            saturating_right=props.saturating_right,
            condition=props.condition,
        ),
    )


def function_infos() -> tuple[FunctionInfo, ...]:
    """The catalog as plain data, in the catalog's order."""
    return tuple(_function_info(f) for f in catalog.CATALOG)


class Operations:
    """actgrad's calls on plain values over one Engine, within `limits`.

    Example::

        ops = Operations(engine, settings.limits)
        ops.softmax(np.array([2.0, 1.0, 0.1]))  # array([0.659..., 0.242..., 0.098...])
    """

    def __init__(self, engine: Engine, limits: Limits, *, input_field: str = "x") -> None:
        self.engine = engine
        self.limits = limits
        # What errors call the input tensor (gRPC's wire calls it "input").
        self.input_field = input_field
        self._functions = function_infos()
        self._by_name = {info.name: info for info in self._functions}

    # -- the catalog --------------------------------------------------------------

    def functions(self) -> tuple[FunctionInfo, ...]:
        """Every served function."""
        return self._functions

    def function(self, name: str) -> FunctionInfo:
        """One function by canonical name or alias; NotFound suggests close matches."""
        return self._by_name[catalog.lookup(name).name]

    # -- checks every front end applies -----------------------------------------------

    def check_shape(self, shape: Sequence[int], field: str) -> int:
        """A tensor's shape against the limits; its element count. InvalidArgument for a
        negative dimension or a rank over the limit (a shape, not a size), OverLimit over
        the element limit."""
        shape = tuple(shape)
        if len(shape) > self.limits.max_rank:
            raise InvalidArgument(
                f"{field}: rank {len(shape)} exceeds the limit of {self.limits.max_rank}"
            )
        for axis, dim in enumerate(shape):
            if dim < 0:
                raise InvalidArgument(f"{field}: shape[{axis}] is negative ({dim})")
        try:
            return check_shape(
                shape,
                field=field,
                max_rank=self.limits.max_rank,
                max_elements=self.limits.max_elements,
            )
        except TensorError as exc:
            raise OverLimit(str(exc)) from None

    def check_tensor(self, array: Array, field: str) -> None:
        """A served dtype (float32, float64, float16, bfloat16) within the limits."""
        try:
            dtype_info(array.dtype)
        except KeyError:
            raise InvalidArgument(
                f"{field}: dtype {array.dtype} is not served "
                f"(served: {', '.join(d.name for d in DTYPES)})"
            ) from None
        self.check_shape(array.shape, field)

    def _params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        values = dict(params or {})
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                self.check_tensor(value, f"params[{catalog.shown(name)}]")
        return values

    # -- elementwise functions and softmax ------------------------------------------

    def _bind(
        self,
        function: str,
        x: Array,
        params: Mapping[str, Any] | None,
        grad_output: Array | None = None,
    ) -> catalog.Call:
        found = catalog.lookup(function)
        self.check_tensor(x, self.input_field)
        if grad_output is not None:
            self.check_tensor(grad_output, "grad_output")
        return catalog.bind(
            found, self._params(params), x_shape=x.shape, x_dtype=x.dtype, grad_output=grad_output
        )

    def activate(self, x: Array, function: str, params: Mapping[str, Any] | None = None) -> Array:
        """`function` (name or alias) applied to `x` with `params` (catalog defaults for
        the others); the result has x's shape and dtype."""
        call = self._bind(function, x, params)
        return self.engine.activate(call, x)

    def gradient(
        self,
        x: Array,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        grad_output: Array | None = None,
        return_output: bool = False,
    ) -> GradientResult:
        """The vector-Jacobian product at `x` with `grad_output` (ones when None): the
        input's gradient, the tensor parameters' (prelu's slope), and f(x) when asked."""
        call = self._bind(function, x, params, grad_output)
        return self.engine.gradient(call, x, grad_output, with_output=return_output)

    def softmax(
        self,
        x: Array,
        *,
        axis: int | None = None,
        temperature: float | None = None,
        log: bool | None = None,
    ) -> Array:
        """Softmax of ``x / temperature`` along `axis` (log-softmax with `log`); None
        takes the catalog's default (`catalog.SOFTMAX`)."""
        self.check_tensor(x, self.input_field)
        given = {"axis": axis, "temperature": temperature, "log": log}
        params = {name: value for name, value in given.items() if value is not None}
        call = catalog.bind(
            catalog.SOFTMAX, params, x_shape=x.shape, x_dtype=x.dtype, field_prefix="request"
        )
        return self.engine.activate(call, x)

    # -- the dense layer ----------------------------------------------------------------

    def _dense(
        self,
        x: Array,
        weight: Array,
        bias: Array | None,
        activation: str | None,
        params: Mapping[str, Any] | None,
        grad_output: Array | None,
        *,
        gradient: bool,
        return_output: bool,
    ) -> DenseResult:
        self.check_tensor(x, self.input_field)
        self.check_tensor(weight, "weight")
        if bias is not None:
            self.check_tensor(bias, "bias")
        if grad_output is not None:
            self.check_tensor(grad_output, "grad_output")
        z_shape = neuron.dense_shape(
            x,
            weight,
            bias,
            grad_output,
            max_elements=self.limits.max_elements,
            input_field=self.input_field,
        )
        call = self.dense_activation(activation, self._params(params), z_shape, x.dtype)
        return self.engine.dense(
            call, x, weight, bias, grad_output, gradient=gradient, with_output=return_output
        )

    def dense_activation(
        self,
        activation: str | None,
        params: Mapping[str, Any],
        z_shape: tuple[int, ...],
        dtype: np.dtype[Any],
    ) -> catalog.Call | None:
        """The dense layer's activation bound for a net output of `z_shape` (None or "":
        none, the bare net output z); a mixing function only along the last axis."""
        if not activation:
            if params:
                name = catalog.shown(next(iter(params)))
                raise InvalidArgument(f"params[{name}]: no activation is given to take parameters")
            return None
        function = catalog.lookup(activation, field="activation")
        call = catalog.bind(function, params, x_shape=z_shape, x_dtype=dtype)
        axis = call.mixing_axis
        if axis is not None and axis != len(z_shape) - 1:
            raise InvalidArgument(
                f"params[{function.axis_param!r}]: a dense layer's {function.name} is along "
                f"the last axis (-1 or {len(z_shape) - 1}), got {axis}"
            )
        return call

    def dense(
        self,
        x: Array,
        weight: Array,
        bias: Array | None = None,
        *,
        activation: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> DenseResult:
        """``activation(x . weight^T + bias)``: x [..., in], weight [out, in], bias [out]
        (None: none), all of x's dtype. The result's `output` and `net_output` (z)."""
        return self._dense(
            x, weight, bias, activation, params, None, gradient=False, return_output=True
        )

    def dense_vjp(
        self,
        x: Array,
        weight: Array,
        bias: Array | None = None,
        *,
        activation: str | None = None,
        params: Mapping[str, Any] | None = None,
        grad_output: Array | None = None,
        return_output: bool = False,
    ) -> DenseResult:
        """The dense layer's gradients with respect to x, weight, bias and the activation's
        tensor parameters, for `grad_output` [..., out] (ones when None); the net output
        always, the output when asked."""
        return self._dense(
            x,
            weight,
            bias,
            activation,
            params,
            grad_output,
            gradient=True,
            return_output=return_output,
        )

    # -- the gradient-flow probe --------------------------------------------------------

    def gradient_flow(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        depth: int = neuron.FLOW_DEFAULTS["depth"],
        width: int = neuron.FLOW_DEFAULTS["width"],
        batch: int = neuron.FLOW_DEFAULTS["batch"],
        init: str = neuron.FLOW_DEFAULTS["init"],
        init_std: float | None = None,
        seed: int = neuron.FLOW_DEFAULTS["seed"],
        residual: bool = neuron.FLOW_DEFAULTS["residual"],
        normalize: bool = neuron.FLOW_DEFAULTS["normalize"],
        dtype: int | str = neuron.FLOW_DEFAULTS["dtype"],
    ) -> GradientFlowResult:
        """How gradients survive a deep square network of `function` (elementwise,
        without tensor parameters); weights drawn as `neuron.flow_inputs` documents."""
        found = catalog.lookup(function)
        if not found.elementwise or found.tensor_params:
            raise InvalidArgument(
                f"function: the probe takes elementwise functions without tensor parameters; "
                f"{found.name} is not one"
            )
        graph_dtype = neuron.flow_dtype(dtype)
        sizes = {"depth": depth, "width": width, "batch": batch}
        neuron.check_flow(
            **sizes, init=init, init_std=init_std, max_elements=self.limits.max_elements
        )
        if not 0 <= seed < 1 << 64:
            raise InvalidArgument(f"seed: must be in [0, 2**64), got {seed}")
        call = catalog.bind(
            found, self._params(params), x_shape=(batch, width), x_dtype=graph_dtype
        )
        drawn = neuron.flow_inputs(**sizes, init=init, init_std=init_std, seed=seed)
        stats = self.engine.gradient_flow(
            call,
            [w.astype(graph_dtype) for w in drawn.weights],
            drawn.x.astype(graph_dtype),
            drawn.g.astype(graph_dtype),
            residual=residual,
            normalize=normalize,
        )
        grad_rms = stats["grad_rms"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(grad_rms[0] / grad_rms[-1])
        return GradientFlowResult(
            act_rms=stats["act_rms"],
            grad_rms=grad_rms,
            weight_grad_rms=stats["weight_grad_rms"],
            saturated=stats["saturated"],
            dead=stats["dead"],
            ratio=ratio,
        )
