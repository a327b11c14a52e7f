"""The metric and access-log labels of a call: bounded, whatever the caller sends.

A label set grows with every distinct value, so callers' strings never become labels:
a name is mapped to its function's canonical name (exact lookups only, no close-match
search) or to "unknown", a datatype to one of the protocol's or "unknown".
"""

from __future__ import annotations

from actgrad_server import catalog
from actgrad_server.models import find_model

__all__ = ["OIP_DATATYPES", "UNKNOWN", "datatype_label", "function_label", "model_label"]

UNKNOWN = "unknown"
#: The Open Inference Protocol's datatypes.
OIP_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)


def function_label(name: str) -> str:
    """A function's canonical name for its name or alias; "" for none, else "unknown"."""
    if not name:
        return ""
    function = catalog.find(name)
    return UNKNOWN if function is None else function.name


def model_label(name: str) -> str:
    """The function an OIP model computes; "" for none, else "unknown"."""
    if not name:
        return ""
    model = find_model(name)
    return UNKNOWN if model is None else model.function.name


def datatype_label(datatype: str) -> str:
    """An OIP datatype, lower-cased ("fp32"); "unknown" for anything else."""
    return datatype.lower() if datatype in OIP_DATATYPES else UNKNOWN
