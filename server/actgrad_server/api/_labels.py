"""The labels of a gRPC call, read from its request message: the function it names
(an actgrad.v1 request's function or activation, an OIP request's model) and its input's
dtype, bounded by `actgrad_server.calls.labels`. Where a message type keeps them is
worked out once per type (`_label_plan`)."""

from __future__ import annotations

import math
from typing import Any

from actgrad import wire
from actgrad_server import catalog
from actgrad_server.calls.labels import UNKNOWN, datatype_label, function_label, model_label

__all__ = ["elements", "labels"]


def _label_plan(descriptor: Any) -> tuple[str, str]:
    """Where a request type keeps its function's name and its input's dtype:
    (a name field, `_RPC_NAMES_IT` or "", and "input", "inputs" or "")."""
    fields = descriptor.fields_by_name
    if descriptor.full_name == "actgrad.v1.SoftmaxRequest":
        name_field = _RPC_NAMES_IT
    else:
        # actgrad.v1 requests name a function (Dense: its activation); Open Inference
        # Protocol ones a model.
        name_field = next((f for f in ("function", "activation", "model_name") if f in fields), "")
    if "input" in fields and fields["input"].message_type is not None:
        tensor_field = "input"
    elif "inputs" in fields:
        tensor_field = "inputs"
    else:
        tensor_field = ""
    return name_field, tensor_field


# The request names no function: its rpc is the function (Softmax).
_RPC_NAMES_IT = "(the rpc)"
# One entry per request message type seen: bounded.
_LABEL_PLANS: dict[Any, tuple[str, str]] = {}


def _function_label(request: Any, name_field: str) -> str:
    if name_field == _RPC_NAMES_IT:
        return catalog.SOFTMAX.name
    if not name_field:
        return ""
    name = getattr(request, name_field)
    # Exact lookups only: the servicer searches for close matches, once, if it must.
    return model_label(name) if name_field == "model_name" else function_label(name)


def _dtype_label(request: Any, tensor_field: str) -> str:
    if tensor_field == "input":
        if not request.HasField("input"):
            return ""
        try:
            return wire.dtype_info(int(request.input.dtype)).name
        except (KeyError, AttributeError):
            return UNKNOWN
    if tensor_field == "inputs" and len(request.inputs) > 0:
        return datatype_label(getattr(request.inputs[0], "datatype", ""))
    return ""


def elements(request: Any) -> int | None:
    """The element count of a request's (first) input tensor, None if it has none."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return None
    fields = request.DESCRIPTOR.fields_by_name
    if "input" in fields and fields["input"].message_type is not None:
        return int(math.prod(request.input.shape)) if request.HasField("input") else None
    if "inputs" in fields and len(request.inputs) > 0:
        return int(math.prod(request.inputs[0].shape))
    return None


def labels(request: Any) -> tuple[str, str]:
    """(function, dtype) of a request, bounded to known values; ("", "") if none apply."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return "", ""
    plan = _LABEL_PLANS.get(descriptor)
    if plan is None:
        plan = _LABEL_PLANS[descriptor] = _label_plan(descriptor)
    return _function_label(request, plan[0]), _dtype_label(request, plan[1])
