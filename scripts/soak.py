#!/usr/bin/env python3
"""Soak: minutes of mixed traffic against `actgrad serve --workers 2`, every answer checked.

`make soak` runs it (SOAK_MINUTES, default 3). It starts the server on 127.0.0.1 (a
free port), keeps 24 calls in flight for that long through both SDK clients (16
threads of `Client`, 8 tasks over 2 `AsyncClient`s, each on a connection of its own;
half of them stream anything above 256 KiB, so every stream verb runs too), over
every function and verb (Activate, Gradient with parameter gradients and the forward
value, Softmax, Dense and its gradient, GradientFlow; each with its stream where
the size calls for one), sizes 16 to 1 Mi elements, float32 and float64.

Every answer is checked against a float64 NumPy reference:
- forward values: each function's closed form (below), softmax, the dense layer;
- gradients: central differences of those closed forms (h = 1e-6 * max(1, |x|),
  inputs kept 0.01 away from every kink), times grad_output; dense gradients by
  their matrix formulas;
- where no closed form is simple, the server's own float64 path: exact gelu (erf),
  and GradientFlow in float32 (checked against the same request in float64).

Then the clients stop and the server idles (SOAK_IDLE_SECONDS, default 60). Printed:
calls, errors by code, wrong answers, p50/p99 latency of the first and the last
minute (or third, for shorter runs), RSS of every process (start, peak, after the
idle). Exit status 1 on any UNKNOWN or other error status, a hang (a call past its
60 s deadline, or a caller that never returned), a wrong answer, a worker that died,
or a worker's RSS after the idle above its RSS at start + 512 MiB.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import actgrad
from actgrad import AsyncClient, Client

MINUTES = float(os.environ.get("SOAK_MINUTES", "3"))
IDLE_SECONDS = float(os.environ.get("SOAK_IDLE_SECONDS", "60"))
SYNC_CALLERS = 16
ASYNC_CLIENTS = 2
TASKS_PER_ASYNC_CLIENT = 4  # 16 + 2 * 4 = 24 calls in flight
CALL_TIMEOUT = 60.0
RSS_MARGIN = 512 << 20
STREAM_THRESHOLD = 256 << 10  # half the callers stream above this
MIN_LOG2, MAX_LOG2 = 4, 20  # 16 to 1 Mi elements
KINKS = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 6.0])
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
Array = np.ndarray[Any, Any]

# ---------------------------------------------------------------------------------
# References, float64


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: Array) -> Array:
    return np.logaddexp(0.0, x)


SELU_ALPHA, SELU_GAMMA = 1.6732632423543772, 1.0507009873554805
# name -> (params sent, forward closed form); None: the server's float64 path.
FUNCTIONS: dict[str, tuple[dict[str, Any], Callable[[Array], Array] | None]] = {
    "sigmoid": ({}, _sigmoid),
    "tanh": ({}, np.tanh),
    "relu": ({}, lambda x: np.maximum(x, 0.0)),
    "leaky_relu": ({"alpha": 0.2}, lambda x: np.where(x >= 0, x, 0.2 * x)),
    "prelu": ({"slope": [0.25]}, lambda x: np.where(x >= 0, x, 0.25 * x)),
    "swish": ({"beta": 1.5}, lambda x: x * _sigmoid(1.5 * x)),
    "gelu": (
        {"approximate": "tanh"},
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    ),
    "gelu_exact": ({}, None),
    "selu": ({}, lambda x: SELU_GAMMA * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    "xtanh": ({}, lambda x: x * np.tanh(x)),
    "xsin": ({}, lambda x: x * np.sin(x)),
    "softplus": ({"beta": 2.0}, lambda x: np.logaddexp(0.0, 2.0 * x) / 2.0),
    "elu": ({"alpha": 0.7}, lambda x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    "softsign": ({}, lambda x: x / (1 + np.abs(x))),
    "mish": ({}, lambda x: x * np.tanh(_softplus(x))),
    "logsigmoid": ({}, lambda x: -np.logaddexp(0.0, -x)),
    "hardsigmoid": ({}, lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0)),
    "hardswish": ({}, lambda x: x * np.clip(x / 6 + 0.5, 0.0, 1.0)),
    "relu6": ({}, lambda x: np.clip(x, 0.0, 6.0)),
    "hardtanh": ({}, lambda x: np.clip(x, -1.0, 1.0)),
    "celu": (
        {"alpha": 1.0},
        lambda x: np.maximum(0.0, x) + np.minimum(0.0, np.expm1(x)),
    ),
    "thresholded_relu": ({"alpha": 1.0}, lambda x: np.where(x > 1.0, x, 0.0)),
    "softshrink": (
        {"lambd": 0.5},
        lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
    ),
    "hardshrink": ({"lambd": 0.5}, lambda x: np.where(np.abs(x) > 0.5, x, 0.0)),
    "tanhshrink": ({}, lambda x: x - np.tanh(x)),
}
DENSE_ACTIVATIONS = ["relu", "tanh", "sigmoid", None]
# Their derivatives in closed form: z is not kept away from relu's kink at 0.
DENSE_DERIVATIVES: dict[str | None, Callable[[Array], Array]] = {
    "relu": lambda z: (z > 0).astype(np.float64),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "sigmoid": lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)),
    None: np.ones_like,
}
TOLERANCE = {"float32": 2e-4, "float64": 1e-9}
GRADIENT_TOLERANCE = {"float32": 2e-4, "float64": 1e-6}  # central differences
DENSE_TOLERANCE = {"float32": 1e-3, "float64": 1e-9}  # sums over up to 16 Ki rows


def _derivative(f: Callable[[Array], Array], x: Array) -> Array:
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    return (f(x + h) - f(x - h)) / (2 * h)


def _close(y: Any, reference: Array, tolerance: float) -> bool:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != reference.shape or not np.all(np.isfinite(y)):
        return False
    scale = max(1.0, float(np.max(np.abs(reference), initial=0.0)))
    return bool(np.allclose(y, reference, rtol=tolerance, atol=tolerance * scale))


# ---------------------------------------------------------------------------------
# Calls: each draws its inputs, calls, and says whether the answer is right.


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, verb: str, end: float, seconds: float, code: str, right: bool) -> None:
        with self.lock:
            self.calls[verb] += 1
            self.latencies.append((end, seconds))
            if code != "OK":
                self.errors[code] += 1
            elif not right:
                self.wrong.append(verb)


def _input(rng: np.random.Generator, count: int, dtype: str) -> Array:
    x = rng.standard_normal(count) * 4
    near = np.abs(x[:, None] - KINKS[None, :]) < 0.01
    if near.any():
        x = np.where(near.any(axis=1), x + 0.03, x)
    return x.astype(dtype)


@dataclass
class Prepared:
    verb: str  # what the tally counts, "+stream" when it travels in chunks
    run: Callable[[Any], Any]  # client -> answer (a coroutine for the async client)
    check: Callable[[Any], bool]
    what: str = ""  # function, dtype and size, printed with a wrong answer


def _elementwise(rng: np.random.Generator, count: int, dtype: str, streams: bool) -> Prepared:
    name = str(rng.choice(list(FUNCTIONS)))
    params, forward = FUNCTIONS[name]
    function = "gelu" if name == "gelu_exact" else name
    x = _input(rng, count, dtype)
    x64 = x.astype(np.float64)
    stream = "+stream" if streams and x.nbytes > STREAM_THRESHOLD else ""
    tolerance = TOLERANCE[dtype]
    if rng.random() < 0.5:

        def run_activate(client: Any) -> Any:
            return client.activate(x, function, timeout=CALL_TIMEOUT, **params)

        def check_activate(y: Any) -> bool:
            if forward is None:  # the server's float64 path
                with Client(_TARGET[0], timeout=CALL_TIMEOUT) as reference_client:
                    reference = reference_client.activate(x64, function, **params)
            else:
                reference = forward(x64)
            return y.dtype == x.dtype and _close(y, reference, tolerance)

        return Prepared(f"activate{stream}", run_activate, check_activate, name)
    g = rng.standard_normal(count).astype(dtype)
    return_output = bool(rng.random() < 0.3)

    def run_vjp(client: Any) -> Any:
        return client.vjp(
            x, function, grad_output=g, return_output=return_output, timeout=CALL_TIMEOUT, **params
        )

    def check_vjp(result: Any) -> bool:
        if forward is None:
            with Client(_TARGET[0], timeout=CALL_TIMEOUT) as reference_client:
                expected = reference_client.vjp(
                    x64, function, grad_output=g.astype(np.float64), return_output=True, **params
                )
            grad, out = expected.grad_input, expected.output
        else:
            grad = g.astype(np.float64) * _derivative(forward, x64)
            out = forward(x64)
        right = _close(result.grad_input, grad, GRADIENT_TOLERANCE[dtype])
        if return_output:
            right = right and out is not None and _close(result.output, out, tolerance)
        if name == "prelu":  # d/dslope = sum over x < 0 of g * x
            mask = x64 < 0
            slope_grad = np.array([np.sum(g.astype(np.float64)[mask] * x64[mask])])
            right = right and _close(
                result.grad_params["slope"], slope_grad, DENSE_TOLERANCE[dtype]
            )
        return right

    return Prepared(f"gradient{stream}", run_vjp, check_vjp, name)


def _softmax(rng: np.random.Generator, count: int, dtype: str, streams: bool) -> Prepared:
    last = int(2 ** rng.integers(1, min(8, int(math.log2(count))) + 1))
    shape = (count // last, last)
    x = _input(rng, count // last * last, dtype).reshape(shape)
    axis = int(rng.choice([-1, 1, 0])) if shape[0] <= 4096 else -1
    temperature = float(rng.uniform(0.5, 2.0))
    log = bool(rng.random() < 0.5)
    stream = "+stream" if streams and x.nbytes > STREAM_THRESHOLD else ""

    def run(client: Any) -> Any:
        return client.softmax(x, axis=axis, temperature=temperature, log=log, timeout=CALL_TIMEOUT)

    def check(y: Any) -> bool:
        z = x.astype(np.float64) / temperature
        z = z - z.max(axis=axis, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return _close(y, logp if log else np.exp(logp), TOLERANCE[dtype])

    return Prepared(f"softmax{stream}", run, check)


def _dense(rng: np.random.Generator, count: int, dtype: str, streams: bool) -> Prepared:
    inputs, outputs = 64, 32
    rows = max(1, count // inputs)
    x = _input(rng, rows * inputs, dtype).reshape(rows, inputs) / 4
    w = (rng.standard_normal((outputs, inputs)) / 8).astype(dtype)
    b = rng.standard_normal(outputs).astype(dtype)
    activation = DENSE_ACTIVATIONS[int(rng.integers(len(DENSE_ACTIVATIONS)))]
    forward = (lambda z: z) if activation is None else FUNCTIONS[activation][1]
    assert forward is not None
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    z = x64 @ w64.T + b64
    stream = "+stream" if streams and x.nbytes > STREAM_THRESHOLD else ""
    tolerance = DENSE_TOLERANCE[dtype]
    if rng.random() < 0.5:

        def run_dense(client: Any) -> Any:
            return client.dense(x, w, b, activation=activation, timeout=CALL_TIMEOUT)

        def check_dense(y: Any) -> bool:
            return _close(y, forward(z), tolerance)

        return Prepared(f"dense{stream}", run_dense, check_dense, str(activation))
    g = rng.standard_normal((rows, outputs)).astype(dtype)

    def run_vjp(client: Any) -> Any:
        return client.dense_vjp(x, w, b, activation=activation, grad_output=g, timeout=CALL_TIMEOUT)

    def check_vjp(result: Any) -> bool:
        grad_z = g.astype(np.float64) * DENSE_DERIVATIVES[activation](z)
        return (
            _close(result.grad_input, grad_z @ w64, tolerance)
            and _close(result.grad_weight, grad_z.T @ x64, tolerance)
            and _close(result.grad_bias, grad_z.sum(axis=0), tolerance)
        )

    return Prepared(f"dense_vjp{stream}", run_vjp, check_vjp, str(activation))


def _gradient_flow(rng: np.random.Generator, count: int, dtype: str, streams: bool) -> Prepared:
    function = str(rng.choice(["tanh", "relu", "gelu", "swish", "softsign"]))
    seed = int(rng.integers(1 << 30))
    sizes: dict[str, Any] = {"depth": 4, "width": 16, "batch": 8, "init": "he_normal"}

    def run(client: Any) -> Any:
        return client.gradient_flow(function, dtype=dtype, seed=seed, timeout=CALL_TIMEOUT, **sizes)

    def check(result: Any) -> bool:
        # No simple closed form: the same network through the server's float64 path.
        with Client(_TARGET[0], timeout=CALL_TIMEOUT) as reference_client:
            expected = reference_client.gradient_flow(function, dtype="float64", seed=seed, **sizes)
        tolerance = 1e-3 if dtype == "float32" else 1e-12
        return all(
            _close(getattr(result, name), getattr(expected, name), tolerance)
            for name in ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead")
        )

    return Prepared("gradient_flow", run, check, function)


VERBS = [(_elementwise, 0.55), (_softmax, 0.15), (_dense, 0.25), (_gradient_flow, 0.05)]
_TARGET: list[str] = [""]


def _prepare(rng: np.random.Generator, streams: bool) -> Prepared:
    make = VERBS[int(rng.choice(len(VERBS), p=[w for _, w in VERBS]))][0]
    count = int(2 ** rng.uniform(MIN_LOG2, MAX_LOG2))
    dtype = "float32" if rng.random() < 0.6 else "float64"
    call = make(rng, count, dtype, streams)
    call.what = f"{call.what} {dtype} {count} elements".strip()
    return call


def _checked(call: Prepared, answer: Any) -> bool:
    try:
        right = call.check(answer)
    except Exception as exc:  # an answer the check cannot read is a wrong one
        print(f"check of {call.verb} {call.what} failed: {exc!r}", file=sys.stderr)
        return False
    if not right:
        print(f"wrong answer: {call.verb} {call.what}", file=sys.stderr)
    return right


def _code(exc: BaseException) -> str:
    if isinstance(exc, actgrad.ActgradError):
        return exc.code.name if exc.code is not None else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _sync_caller(index: int, target: str, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(1000 + index)
    streams = index % 2 == 0
    threshold = STREAM_THRESHOLD if streams else 64 << 20
    with Client(
        target, timeout=CALL_TIMEOUT, options=OWN_CONNECTION, stream_threshold_bytes=threshold
    ) as client:
        while not stop.is_set():
            call = _prepare(rng, streams)
            started = time.monotonic()
            try:
                answer = call.run(client)
                code = "OK"
            except Exception as exc:
                answer, code = None, _code(exc)
            end = time.monotonic()
            right = code == "OK" and _checked(call, answer)
            tally.record(call.verb, end, end - started, code, right)


async def _async_caller(
    index: int, client: AsyncClient, stop: threading.Event, tally: Tally
) -> None:
    rng = np.random.default_rng(2000 + index)
    streams = index % 2 == 0
    while not stop.is_set():
        call = _prepare(rng, streams)
        started = time.monotonic()
        try:
            answer = await call.run(client)
            code = "OK"
        except Exception as exc:
            answer, code = None, _code(exc)
        end = time.monotonic()
        right = code == "OK" and await asyncio.to_thread(_checked, call, answer)
        tally.record(f"{call.verb}(async)", end, end - started, code, right)


def _async_callers(target: str, stop: threading.Event, tally: Tally) -> None:
    async def main() -> None:
        clients = [
            AsyncClient(
                target,
                timeout=CALL_TIMEOUT,
                options=OWN_CONNECTION,
                stream_threshold_bytes=STREAM_THRESHOLD if i % 2 == 0 else 64 << 20,
            )
            for i in range(ASYNC_CLIENTS)
        ]
        try:
            await asyncio.gather(
                *(
                    _async_caller(i * TASKS_PER_ASYNC_CLIENT + t, client, stop, tally)
                    for i, client in enumerate(clients)
                    for t in range(TASKS_PER_ASYNC_CLIENT)
                )
            )
        finally:
            for client in clients:
                await client.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------
# The server and its memory


def _rss(pid: int, field_name: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Server:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTGRAD_")}
        command = [sys.executable, "-m", "actgrad", "serve", "--host=127.0.0.1", "--port=0"]
        command += ["--http-port=0", "--workers=2", "--device=cpu", "--log-format=json"]
        command += ["--grace=10"]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_serving(self) -> int:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(r"serving actgrad\.v1 on [^ ]+:(\d+)", "".join(self.lines))
            if match:
                return int(match.group(1))
            time.sleep(0.2)
        raise SystemExit("actgrad serve did not start:\n" + "".join(self.lines))

    def worker_pids(self) -> dict[int, int]:
        pids = {}
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "serving on" in str(entry.get("message", "")) and "worker" in entry:
                pids[int(entry["worker"])] = int(entry["pid"])
        return pids


def _percentiles(latencies: list[tuple[float, float]], start: float, end: float) -> str:
    window = np.array([s for t, s in latencies if start <= t < end])
    if window.size == 0:
        return "no calls"
    p50, p99 = np.percentile(window, [50, 99]) * 1000
    return f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({window.size} calls)"


def main() -> int:
    duration = MINUTES * 60
    server = Server()
    failures: list[str] = []
    try:
        port = server.wait_serving()
        target = f"127.0.0.1:{port}"
        _TARGET[0] = target
        workers = server.worker_pids()
        processes = {"supervisor": server.proc.pid} | {f"worker {i}": p for i, p in workers.items()}
        time.sleep(2)
        rss_start = {name: _rss(pid) or 0 for name, pid in processes.items()}
        peak = dict(rss_start)
        print(
            f"soak: {MINUTES:g} min against actgrad serve --workers 2 on {target}, "
            f"{SYNC_CALLERS + ASYNC_CLIENTS * TASKS_PER_ASYNC_CLIENT} calls in flight",
            flush=True,
        )

        tally = Tally()
        stop = threading.Event()
        callers = [
            threading.Thread(target=_sync_caller, args=(i, target, stop, tally), daemon=True)
            for i in range(SYNC_CALLERS)
        ]
        callers.append(
            threading.Thread(target=_async_callers, args=(target, stop, tally), daemon=True)
        )
        began = time.monotonic()
        for thread in callers:
            thread.start()
        while time.monotonic() - began < duration:
            time.sleep(0.5)
            for name, pid in processes.items():
                peak[name] = max(peak[name], _rss(pid) or 0)
        stop.set()
        ended = time.monotonic()
        for thread in callers:
            thread.join(CALL_TIMEOUT + 30)
        hung = sum(thread.is_alive() for thread in callers)
        for name, pid in processes.items():
            peak[name] = max(peak[name], _rss(pid, "VmHWM") or 0)

        time.sleep(IDLE_SECONDS)
        rss_idle = {name: _rss(pid) or 0 for name, pid in processes.items()}

        total = sum(tally.calls.values())
        print(f"calls: {total} in {ended - began:.0f} s ({total / (ended - began):.0f}/s)")
        for verb, count in sorted(tally.calls.items()):
            print(f"  {verb:28s} {count}")
        print(f"errors by code: {dict(tally.errors) or 'none'}")
        print(f"wrong answers: {len(tally.wrong)} {Counter(tally.wrong) if tally.wrong else ''}")
        print(f"hung callers: {hung}")
        window = min(60.0, (ended - began) / 3)
        print(
            f"latency, first {window:.0f} s: {_percentiles(tally.latencies, began, began + window)}"
        )
        print(
            f"latency, last {window:.0f} s:  {_percentiles(tally.latencies, ended - window, ended)}"
        )
        print(f"RSS (MiB): start, peak, after {IDLE_SECONDS:.0f} s idle")
        for name in processes:
            print(
                f"  {name:10s} {rss_start[name] / 2**20:8.0f} {peak[name] / 2**20:8.0f} "
                f"{rss_idle[name] / 2**20:8.0f}"
            )

        if tally.errors:
            failures.append(f"error statuses: {dict(tally.errors)}")
        if tally.wrong:
            failures.append(f"{len(tally.wrong)} wrong answers")
        if hung or tally.errors.get("DEADLINE_EXCEEDED"):
            failures.append("a call hung")
        if server.worker_pids() != workers or server.proc.poll() is not None:
            failures.append("a worker died and was restarted")
        for name in processes:
            if name.startswith("worker") and rss_idle[name] > rss_start[name] + RSS_MARGIN:
                failures.append(f"{name}: RSS after idle above start + 512 MiB")
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(60)
        print(f"server exit status after SIGTERM: {status}")
        if status != 0:
            failures.append(f"the server exited {status}")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
