"""What a call with a parameter value the server has never seen costs, against a repeat.

    python -m bench.first_calls [--json PATH]

Starts ``actgrad serve --workers 1 --port 0`` (so that every call meets the one
process whose cache is measured), reports its start-up time (from the process start
to the line that says it serves, after its warm-up) and resident memory, then times,
with one SDK client in this process, three calls of each case: the first with a value
never sent before, the same call again, and a second never-seen value. Cases: every
scalar parameter of every function (Activate and Gradient, float32 rank 2 as the
warm-up builds; Activate float64 rank 1 as the CLI sends), each structural choice,
Dense with and without gradients, the gradient-flow probe. Not a test: nothing
asserts on a time (docs/performance.md, "First calls").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from actgrad import Client
from actgrad_server.catalog import CATALOG
from bench._proc import ServerProcess

Row = tuple[str, float, float, float]
Case = tuple[str, Callable[[float], object]]


def _scalar_cases(client: Client) -> list[Case]:
    """Every scalar parameter: Activate and Gradient at float32 rank 2 (what warm-up
    builds), Activate at float64 rank 1 (what the CLI sends)."""
    x32 = np.linspace(-3.0, 3.0, 8, dtype=np.float32).reshape(2, 4)
    x64 = np.array([2.0, 1.0, 0.1])
    cases: list[Case] = []
    for function in CATALOG:
        for param in function.params:
            if not param.runtime:
                continue
            # Away from the default in its own direction (hardtanh: min_val < max_val).
            default = float(param.default)
            step = 1.0 if default >= 0 else -1.0
            for method, x, template in (
                (client.activate, x32, "activate {} {} f32 rank 2"),
                (client.gradient, x32, "gradient {} {} f32 rank 2"),
                (client.activate, x64, "activate {} {} f64 rank 1"),
            ):
                label = template.format(function.name, param.name)
                cases.append(
                    (label, _with_value(method, x, function.name, param.name, default, step))
                )
    return cases


def _with_value(
    method: Callable[..., object], x: Any, function: str, name: str, default: float, step: float
) -> Callable[[float], object]:
    return lambda v: method(x, function, **{name: default + step * v})


def _other_cases(client: Client) -> list[Case]:
    """Structural choices (one session each, built at warm-up), Dense, the probe."""
    x32 = np.linspace(-3.0, 3.0, 8, dtype=np.float32).reshape(2, 4)
    x64 = np.array([2.0, 1.0, 0.1])
    w64 = np.array([[0.5, -0.25, 0.3]])
    w32 = np.full((3, 4), 0.1, dtype=np.float32)
    leaky = "leaky_relu"
    return [
        ("softmax log=True f32 rank 2", lambda v: client.softmax(x32, temperature=1 + v, log=True)),
        ("softmax axis=0 f32 rank 2", lambda v: client.softmax(x32, axis=0, temperature=1 + v)),
        (
            "gelu' approximate=tanh f32 rank 2",
            lambda v: client.gradient(x32, "gelu", approximate="tanh"),
        ),
        (
            "dense leaky_relu alpha f64 rank 1",
            lambda v: client.dense(x64, w64, activation=leaky, alpha=v),
        ),
        (
            "dense_vjp leaky_relu alpha f64 rank 1",
            lambda v: client.dense_vjp(x64, w64, activation=leaky, alpha=v),
        ),
        ("dense relu f32 rank 2", lambda v: client.dense(x32, w32)),
        ("dense_vjp relu f32 rank 2", lambda v: client.dense_vjp(x32, w32)),
        ("gradient_flow elu alpha (30 x 256)", lambda v: client.gradient_flow("elu", alpha=1 + v)),
    ]


def _times(call: Callable[[float], object], new: float, other: float) -> tuple[float, ...]:
    """ms: a value never sent, the same again, another never sent."""

    def ms(value: float) -> float:
        start = time.perf_counter()
        call(value)
        return (time.perf_counter() - start) * 1e3

    return ms(new), ms(new), ms(other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    start = time.perf_counter()
    server = ServerProcess(
        "first-calls",
        "actgrad",
        ["serve", "--workers", "1", "--port", "0", "--http-port", "0"],
        start_timeout=60.0,
    )
    start_s = time.perf_counter() - start
    rows: list[Row] = []
    try:
        time.sleep(1.0)  # the idle trim settles
        rss_mib = server.rss_bytes() / 2**20
        with Client(server.target, timeout=60.0) as client:
            # The client's own first uses (channel, codecs) on a session warm-up built.
            for _ in range(3):
                client.activate(np.ones((2, 4), np.float32), "elu", alpha=1.0)
            cases = _scalar_cases(client) + _other_cases(client)
            for k, (label, call) in enumerate(cases):
                first, again, other = _times(call, 0.1 + 0.001 * k, 0.2 + 0.001 * k)
                rows.append((label, first, again, other))
    finally:
        server.stop()
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"start-up {start_s:.2f} s to serving (warm-up included); RSS {rss_mib:.1f} MiB")
    print(f"{'case':44s} {'new value':>10s} {'repeat':>8s} {'new again':>10s}  (ms)")
    for label, first, again, other in rows:
        print(f"{label:44s} {first:10.2f} {again:8.2f} {other:10.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"start_s": start_s, "rss_mib": rss_mib, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
