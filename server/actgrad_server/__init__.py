"""actgrad's server: activation functions and their gradients on onnxruntime over gRPC."""

from actgrad import __version__

__all__ = ["__version__"]
