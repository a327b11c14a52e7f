"""Small helpers every benchmark harness here shares (bench.harness, bench.compute,
bench.transport): argument types, rounding, subject rotation, writing results.

Light on purpose: bench.transport's echo servers import nothing heavier than this.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["median", "positive_float", "positive_int", "rotated", "to_us", "write_results"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


T = TypeVar("T")


def write_results(
    results: dict[str, Any], out: Path, name: str, render: Callable[[dict[str, Any]], str]
) -> list[Path]:
    """Writes ``<name>.json`` and ``<name>.md`` (`render`'s tables) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(render(results), encoding="utf-8")
    return paths


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` rotated left by `by`: each round starts with the next subject."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def to_us(nanoseconds: float) -> float:
    return round(nanoseconds / 1000.0, 3)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return round(statistics.median(present), 3) if present else None
