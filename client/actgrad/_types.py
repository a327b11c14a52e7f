"""Plain result types of the SDK: frozen dataclasses holding numpy and Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

__all__ = ["FunctionInfo", "Limits", "ParamInfo", "ServerInfo", "VjpResult"]

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
