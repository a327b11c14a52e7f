"""Plain result types of the SDK: frozen dataclasses holding numpy and Python values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DenseVjpResult",
    "FunctionInfo",
    "FunctionProperties",
    "GradientFlowResult",
    "Limits",
    "ParamInfo",
    "ServerInfo",
    "VjpResult",
]

#: A parameter value as the SDK accepts and reports it.
ParamDefault = bool | int | float | str | list[Any] | None


@dataclass(frozen=True)
class VjpResult:
    """What `Client.vjp` returns: the input gradient, parameter gradients, forward value.

    `grad_params` maps each tensor parameter (e.g. ``"slope"`` for prelu) to its
    gradient in that parameter's shape; `output` is `None` unless the call passed
    ``return_output=True``::

        r = client.vjp(x, "prelu", slope=np.array([0.25]), return_output=True)
        r.grad_input.shape == x.shape; r.grad_params["slope"].shape == (1,)
    """

    grad_input: npt.NDArray[Any]
    grad_params: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    output: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class DenseVjpResult:
    """What `Client.dense_vjp` returns: the gradients of a dense layer f(x . W^T + b).

    `grad_input` has x's shape [..., in], `grad_weight` the weight's [out, in],
    `grad_bias` [out] (summed over x's leading dimensions; returned also when no bias
    was passed, as the gradient of a zero bias); `grad_params` maps each tensor
    parameter of the activation (``"slope"`` for prelu) to its gradient; `output`
    f(z) and `net_output` z are `None` unless asked for::

        r = client.dense_vjp(x, w, b, activation="tanh", return_output=True)
        r.grad_weight.shape == w.shape; r.output.shape == (*x.shape[:-1], w.shape[0])
    """

    grad_input: npt.NDArray[Any]
    grad_weight: npt.NDArray[Any]
    grad_bias: npt.NDArray[Any]
    grad_params: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    output: npt.NDArray[Any] | None = None
    net_output: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class GradientFlowResult:
    """What `Client.gradient_flow` returns: per-layer statistics of a deep network.

    `act_rms` and `grad_rms` have depth + 1 values (layer 0 is the input), the
    others depth values (layers 1..depth); `ratio` is ``grad_rms[0] / grad_rms[-1]``
    (far below 1: the gradient vanishes on its way to the input)::

        r = client.gradient_flow("tanh", depth=30, init="normal", init_std=0.01)
        r.ratio, r.grad_rms[::10], r.saturated.max()
    """

    act_rms: npt.NDArray[np.float64]
    grad_rms: npt.NDArray[np.float64]
    weight_grad_rms: npt.NDArray[np.float64]
    saturated: npt.NDArray[np.float64]
    dead: npt.NDArray[np.float64]
    ratio: float


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a served function, as the server's catalog describes it.

    `type` is one of ``"number"``, ``"integer"``, ``"string"``, ``"bool"``,
    ``"tensor"``; `default` is the Python value (a nested list for a tensor) or
    `None` when the parameter is `required`::

        alpha = next(p for p in info.params if p.name == "alpha")
        alpha.type, alpha.default, alpha.minimum   # ("number", 0.01, None)
    """

    name: str
    type: str
    description: str = ""
    required: bool = False
    default: ParamDefault = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FunctionProperties:
    """What the graph of a served function looks like, as the server's catalog declares it.

    `output_min` <= f(x) <= `output_max` (``-inf``/``inf`` when unbounded);
    `monotonic` means non-decreasing, `smooth` continuously differentiable (C1),
    `zero_centred` f(0) = 0, `saturating_left`/`saturating_right` that f'(x) tends
    to 0 as x -> -inf/+inf; `condition` names the parameter values they hold for::

        props = next(f for f in client.functions() if f.name == "tanh").properties
        props.output_min, props.output_max, props.monotonic   # (-1.0, 1.0, True)
    """

    output_min: float = -math.inf
    output_max: float = math.inf
    monotonic: bool = False
    smooth: bool = False
    zero_centred: bool = False
    bounded_below: bool = False
    bounded_above: bool = False
    saturating_left: bool = False
    saturating_right: bool = False
    condition: str = ""


@dataclass(frozen=True)
class FunctionInfo:
    """One served function: names, documentation, parameters and dtypes.

    Example::

        gelu = next(f for f in client.functions() if f.name == "gelu")
        gelu.aliases, [p.name for p in gelu.params], gelu.dtypes
    """

    name: str
    aliases: list[str] = field(default_factory=list)
    summary: str = ""
    formula: str = ""
    formula_latex: str = ""
    gradient_note: str = ""
    params: list[ParamInfo] = field(default_factory=list)
    elementwise: bool = True
    dtypes: list[str] = field(default_factory=list)
    #: For a function that mixes values along one axis only (softmax): the name of
    #: the parameter giving that axis; None for elementwise functions.
    axis_param: str | None = None
    #: The function's properties; None from a server older than them.
    properties: FunctionProperties | None = None


@dataclass(frozen=True)
class Limits:
    """The server's configured limits; 0 means the server did not report one.

    Example: ``client.server_info().limits.max_elements``.
    """

    max_message_bytes: int = 0
    max_elements: int = 0
    max_rank: int = 0
    max_concurrent_rpcs: int = 0


@dataclass(frozen=True)
class ServerInfo:
    """Version, ONNX opset, onnxruntime and execution providers of a server.

    Example::

        info = client.server_info()
        print(info.version, info.onnx_opset, info.execution_providers)
    """

    version: str
    onnx_opset: int
    onnxruntime_version: str
    execution_providers: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
