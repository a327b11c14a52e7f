"""actgrad: activation functions and their gradients, served over gRPC.

numpy arrays in, numpy arrays out, the dtype kept (float32, float64, float16,
bfloat16)::

    import numpy as np
    from actgrad import Client

    x = np.linspace(-3.0, 3.0, 7, dtype=np.float32)
    with Client("localhost:50051", timeout=30.0) as client:
        y = client.activate(x, "gelu", approximate="tanh")
        dx = client.gradient(x, "leaky_relu", grad_output=np.ones_like(x), alpha=0.1)
        p = client.softmax(x, axis=-1, temperature=0.7)

`AsyncClient` has the same methods, awaitable. Failed calls raise an
`ActgradError` subclass carrying the gRPC status `code` and `details`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actgrad._client import AsyncClient, Client
    from actgrad._types import (
        DenseVjpResult,
        FunctionInfo,
        FunctionProperties,
        GradientFlowResult,
        Limits,
        ParamInfo,
        ServerInfo,
        VjpResult,
    )
    from actgrad.errors import (
        ActgradError,
        CallCancelledError,
        DeadlineExceededError,
        InternalError,
        InvalidArgumentError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
        UnexpectedStatusError,
        UnimplementedError,
    )

__version__ = "0.1.0"

__all__ = [
    "ActgradError",
    "AsyncClient",
    "CallCancelledError",
    "Client",
    "DeadlineExceededError",
    "DenseVjpResult",
    "FunctionInfo",
    "FunctionProperties",
    "GradientFlowResult",
    "InternalError",
    "InvalidArgumentError",
    "Limits",
    "NotFoundError",
    "ParamInfo",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServerInfo",
    "UnauthenticatedError",
    "UnavailableError",
    "UnexpectedStatusError",
    "UnimplementedError",
    "VjpResult",
    "__version__",
]

# The client and its errors load grpc; they are imported on first use (PEP 562), so
# that `import actgrad.wire` (shared with the server's engine) does not load grpc.
_LAZY = {
    "AsyncClient": "actgrad._client",
    "Client": "actgrad._client",
    "DenseVjpResult": "actgrad._types",
    "FunctionInfo": "actgrad._types",
    "FunctionProperties": "actgrad._types",
    "GradientFlowResult": "actgrad._types",
    "Limits": "actgrad._types",
    "ParamInfo": "actgrad._types",
    "ServerInfo": "actgrad._types",
    "VjpResult": "actgrad._types",
    **{name: "actgrad.errors" for name in __all__ if name.endswith("Error")},
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actgrad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
