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

from actgrad._client import AsyncClient, Client
from actgrad._types import FunctionInfo, Limits, ParamInfo, ServerInfo, VjpResult
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
    "FunctionInfo",
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
