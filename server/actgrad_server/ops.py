"""actgrad's own operations on plain values, for every front end (work in progress)."""

from __future__ import annotations

from actgrad_server.config import Limits
from actgrad_server.engine import Engine

__all__ = ["Operations"]


class Operations:
    """actgrad's calls (functions, activate, gradient, softmax, dense, flow) on plain values."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits
