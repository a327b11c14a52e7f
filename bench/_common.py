"""Small helpers every benchmark harness here shares (bench.harness, bench.compute,
bench.transport): argument types, rounding, subject rotation, writing results, and
the throughput load (calls kept in flight from one event loop).

Light on purpose: bench.transport's echo servers import nothing heavier than this.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "keep_in_flight",
    "median",
    "positive_float",
    "positive_int",
    "rotated",
    "sample",
    "to_us",
    "write_results",
]


def sample(call: Callable[[], object], calls: int) -> list[int]:
    """The nanoseconds each of `calls` calls took, one after another. The collector
    is paused so that a client-side GC pass lands on no subject."""
    gc.collect()
    gc.disable()
    try:
        samples = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - start)
        return samples
    finally:
        gc.enable()


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


async def keep_in_flight(
    calls: Sequence[Callable[[], Awaitable[object]]],
    concurrency: int,
    *,
    warmup: float,
    seconds: float,
    server_cpu: Callable[[], float],
    failures: tuple[type[BaseException], ...],
    status: Callable[[BaseException], str],
) -> dict[str, Any]:
    """`concurrency` calls kept in flight from this event loop, round-robin over
    `calls` (one per connection), for `warmup` seconds unmeasured and `seconds`
    measured: the completed calls per second, the server's CPU (`server_cpu`, in
    seconds) and this process's CPU over that time, and the failed calls counted by
    `status` of the exception (only `failures` are counted; others propagate)."""
    completed = 0
    errors: Counter[str] = Counter()
    stop = False
    # A bound on every worker's loop besides `stop`, should the sleeps overrun.
    hard_stop = time.monotonic() + warmup + seconds + 60

    async def worker(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal completed
        while not stop and time.monotonic() < hard_stop:
            try:
                await call()
            except failures as exc:
                errors[status(exc)] += 1
            else:
                completed += 1

    def snapshot() -> tuple[int, float, float, float]:
        return completed, time.perf_counter(), time.process_time(), server_cpu()

    tasks = [asyncio.create_task(worker(calls[i % len(calls)])) for i in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        done0, wall0, cpu0, server0 = snapshot()
        await asyncio.sleep(seconds)
        done1, wall1, cpu1, server1 = snapshot()
    finally:
        stop = True
        await asyncio.gather(*tasks)
    count = done1 - done0
    wall = wall1 - wall0
    return {
        "calls": count,
        "seconds": wall,
        "calls_per_s": count / wall,
        "server_cpu_us_per_call": (server1 - server0) / count * 1e6 if count else None,
        "server_cpu_cores": (server1 - server0) / wall,
        "client_cpu_cores": (cpu1 - cpu0) / wall,
        "errors": dict(errors),
    }
