"""The catalog as models: every function and its gradient under the names the protocol
front ends serve them by.

Every function is a model named after it (`gelu`: inputs `x` [, `slope`] -> `y`) and
every gradient a model `<name>_grad` (inputs `x`, `grad_output` [, `slope`] ->
`grad_input` [, `grad_slope`]). Aliases name the same models (`silu`, `silu_grad`).
Tensor parameters (PReLU's `slope`) are inputs; the other parameters travel as request
parameters. Neutral ground: the Open Inference Protocol (`oip/model_table.py` adds its
datatypes and configurations), the Triton export and the interceptors' call labels read
it, and it imports no front end.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from actgrad_server import catalog
from actgrad_server.errors import NotFound

__all__ = ["GRADIENT_SUFFIX", "MODELS", "VERSION", "Model", "find_model", "lookup_model"]

GRADIENT_SUFFIX = "_grad"
# One version per model: the graphs change only with the server.
VERSION = "1"


@dataclass(frozen=True)
class Model:
    """One model: a function's forward pass or its vector-Jacobian product."""

    name: str
    function: catalog.Function
    gradient: bool

    @property
    def tensor_params(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.function.params if p.kind is catalog.ParamKind.TENSOR)

    @property
    def request_params(self) -> tuple[catalog.Param, ...]:
        return tuple(p for p in self.function.params if p.kind is not catalog.ParamKind.TENSOR)

    @property
    def inputs(self) -> tuple[str, ...]:
        if self.gradient:
            return ("x", "grad_output", *self.tensor_params)
        return ("x", *self.tensor_params)

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        """Inputs the served model may go without (grad_output defaults to ones)."""
        return ("grad_output",) if self.gradient else ()

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.gradient:
            return ("grad_input", *(f"grad_{name}" for name in self.tensor_params))
        return ("y",)


MODELS: tuple[Model, ...] = tuple(
    Model(function.name + suffix, function, gradient=bool(suffix))
    for function in catalog.CATALOG
    for suffix in ("", GRADIENT_SUFFIX)
)

_BY_NAME: dict[str, Model] = {}
for _model in MODELS:
    _suffix = GRADIENT_SUFFIX if _model.gradient else ""
    for _name in (_model.function.name, *_model.function.aliases):
        _BY_NAME[_name + _suffix] = _model


def lookup_model(name: str) -> Model:
    """Finds a model by its exact name (canonical or alias); NotFound names close matches."""
    catalog.check_name_length(name, field="model_name")
    model = _BY_NAME.get(name)
    if model is None:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFound(
            f"unknown model {catalog.shown(name)}{hint} (models are function names and <name>_grad)"
        )
    return model


def find_model(name: str) -> Model | None:
    """The model of an exact name, None if unknown (no close-match search)."""
    return _BY_NAME.get(name) if len(name) <= catalog.MAX_NAME_LENGTH else None
