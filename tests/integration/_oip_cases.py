"""What both OIP front ends' tests (gRPC: test_oip.py, REST: test_http_oip.py) send and
expect: non-default parameters, inputs per model, and the answers actgrad.v1 gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from actgrad import Client
from actgrad_server.oip import model_table as models

__all__ = ["PARAMS", "model_arrays", "v1_answers"]

# Non-default request parameters, so that passing them is tested too.
PARAMS: dict[str, dict[str, Any]] = {
    "leaky_relu": {"alpha": 0.2},
    "swish": {"beta": 1.5},
    "gelu": {"approximate": "tanh"},
    "selu": {"alpha": 1.5, "gamma": 1.25},
    "softmax": {"axis": 0, "temperature": 0.7, "log": True},
}


def model_arrays(model: models.Model, dtype: np.dtype[Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The inputs of `model` in `dtype`, by input name (seeded, the same every run)."""
    rng = np.random.default_rng(7)
    arrays = {"x": rng.uniform(-4, 4, size=(3, 5)).astype(dtype)}
    if model.gradient:
        arrays["grad_output"] = rng.uniform(-2, 2, size=(3, 5)).astype(dtype)
    if "slope" in model.inputs:
        arrays["slope"] = np.array([0.1, 0.2, 0.3, 0.4, 0.5]).astype(dtype)
    return arrays


def v1_answers(
    client: Client, model: models.Model, arrays: dict[str, np.ndarray[Any, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """What actgrad.v1 answers for the same inputs, by the model's output names."""
    name = model.function.name
    params = dict(PARAMS.get(name, {}))
    if "slope" in arrays:
        params["slope"] = arrays["slope"]
    if not model.gradient:
        return {"y": client.activate(arrays["x"], name, **params)}
    result = client.vjp(arrays["x"], name, grad_output=arrays["grad_output"], **params)
    return {
        "grad_input": result.grad_input,
        **{f"grad_{k}": v for k, v in result.grad_params.items()},
    }
