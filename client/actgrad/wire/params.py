"""Parameter values written as text (the CLI's ``--param``, the Triton export's)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["parse_param_value"]


def parse_param_value(text: str) -> Any:
    """Reads a parameter value: bool, int, float, float array or string, in that order.

    Raises ValueError for a ``[...]`` that is not a JSON list of numbers. Example:
    ``parse_param_value("0.1,0.2")`` is ``np.array([0.1, 0.2])``.
    """
    stripped = text.strip()
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    for convert in (int, float):
        try:
            return convert(stripped)
        except ValueError:
            pass
    if stripped.startswith("["):
        try:
            return np.asarray(json.loads(stripped), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a JSON list of numbers: {text!r}") from exc
    if "," in stripped:
        try:
            return np.asarray([float(part) for part in stripped.split(",")], dtype=np.float64)
        except ValueError:
            pass
    return text
