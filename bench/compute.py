"""``python -m bench.compute``: every served graph against onnxruntime's own operators.

For every catalog function, each choice of its structural parameters (gelu's
``approximate``, softmax's ``log``) and both directions (forward; gradient without
the output), on one float32 array of ``--elements`` elements shaped like the main
benchmark's inputs (rows of 1024), this times ``session.run`` of

- our graph, built as the engine builds it (same catalog binding, same builder, the
  engine's own ``SessionOptions`` object and providers, see `bench.workloads`);
- onnxruntime's own operator for the function where one exists (one node, opset
  21: Sigmoid, Tanh, Relu, LeakyRelu, PRelu, Selu, Softmax, LogSoftmax, Gelu), with
  the catalog's default parameters. There is no gradient operator, so a gradient
  graph is set against the same forward operator;
- one ``Exp`` pass over the same array: a floor for any graph that reads the input
  and writes an output.

The three are timed interleaved, call by call, ``--repeats`` times each, and the
medians and their ratios are reported. Each built-in operator's accuracy is set
beside ours: the maximum relative error of its float32 forward values against our
float64 graph over a grid of [-60, 60] that covers the tails (the float64 graphs
match a 40-digit mpmath reference to 1e-12 in tests/unit/test_graphs.py). The run
also times a few one-node graphs (Where, Neg, Exp, Mul) to record what single kernels
cost on this onnxruntime. Writes ``<name>.json`` and ``<name>.md`` into ``--out``.
A benchmark is not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from actgrad_server import catalog, graphs
from bench._common import positive_int, write_results
from bench.harness import format_count, parse_count
from bench.machine import load_average, machine_info
from bench.workloads import Array, SessionSetup, input_shape, make_input, session_setup

__all__ = ["DIRECTIONS", "GraphCase", "cases", "main", "markdown", "run"]

_LOGGER = logging.getLogger("bench.compute")

DIRECTIONS = ("forward", "gradient")
_OUT = Path(__file__).resolve().parent / "results"
_SEED = 20261127
# The target for a forward graph: within this many times onnxruntime's own
# operator; gelu's built-in returns 0 below about -8 where ours keeps the tail.
TARGET = 4.0
TARGETS = {"gelu": 8.0}
# Accuracy grid: [-60, 60], exact in float32, as rows of 1024 (softmax normalises rows).
_GRID = np.linspace(-60.0, 60.0, 32 * 1024).astype(np.float32).reshape(32, 1024)
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Builtin:
    """onnxruntime's own single operator for a function (default parameters)."""

    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[str, ...] = ("x",)  # graph inputs after x take the call's tensors


@dataclass(frozen=True)
class GraphCase:
    """One served graph: a function with one choice of its structural parameters."""

    function: catalog.Function
    params: Mapping[str, Any]  # the structural values chosen (others at their defaults)

    @property
    def label(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.function.name} ({values})" if values else self.function.name

    def call(self, like: Array) -> catalog.Call:
        dtype = like.dtype
        return catalog.bind(
            self.function,
            {**self.function.sample_params(dtype), **self.params},
            x_shape=like.shape,
            x_dtype=dtype,
        )

    def builtin(self) -> Builtin | None:
        defaults = {p.name: p.default for p in self.function.params}
        values = {**defaults, **self.params}
        name = self.function.name
        if name in ("sigmoid", "tanh", "relu"):
            return Builtin(name.capitalize(), {})
        if name == "leaky_relu":
            return Builtin("LeakyRelu", {"alpha": float(values["alpha"])})
        if name == "prelu":
            return Builtin("PRelu", {}, ("x", "slope"))
        if name == "selu":
            return Builtin(
                "Selu", {"alpha": float(values["alpha"]), "gamma": float(values["gamma"])}
            )
        if name == "softmax":
            return Builtin("LogSoftmax" if values["log"] else "Softmax", {"axis": -1})
        if name == "gelu":
            return Builtin("Gelu", {"approximate": values["approximate"]})
        return None


def cases() -> list[GraphCase]:
    """Every function at its defaults, and each other choice of a structural parameter
    (a string parameter's choices, a boolean's other value)."""
    found = []
    for function in catalog.CATALOG:
        found.append(GraphCase(function, {}))
        for param in function.params:
            if param.runtime:
                continue
            others: Sequence[Any] = param.choices
            if param.kind is catalog.ParamKind.BOOL:
                others = (not param.default,)
            found.extend(
                GraphCase(function, {param.name: value})
                for value in others
                if value != param.default
            )
    return found


def _static(call: catalog.Call, x: Array, *, gradient: bool) -> dict[str, Any]:
    """The structural keywords the engine passes to the graph builders."""
    static: dict[str, Any] = {**dict(call.static), "x_rank": x.ndim}
    if gradient:
        static.update((f"{n}_shape", tuple(t.shape)) for n, t in call.tensors.items())
    return static


def _model(case: GraphCase, x: Array, dtype: str, *, gradient: bool) -> onnx.ModelProto:
    call = case.call(x)
    static = _static(call, x, gradient=gradient)
    if gradient:
        return graphs.build_gradient(case.function, dtype, with_output=False, **static)
    return graphs.build_forward(case.function, dtype, **static)


def _feeds(case: GraphCase, x: Array, *, gradient: bool) -> dict[str, Any]:
    call = case.call(x)
    feeds: dict[str, Any] = {"x": x, **call.tensors}
    for name in case.function.runtime_params:
        feeds[name] = np.asarray(call.scalars[name], dtype=np.float64)
    if gradient:
        feeds["grad_output"] = np.ones_like(x)  # the server's default
    return feeds


def _one_node(
    op: str, inputs: Sequence[tuple[str, int, list[Any] | None]], **attrs: Any
) -> onnx.ModelProto:
    """A float32 model of one node, inputs as (name, element type, shape), output y."""
    node = helper.make_node(op, [name for name, _, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["d0", "d1"])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", graphs.OPSET)],
        ir_version=graphs.IR_VERSION,
    )


def _builtin_model(builtin: Builtin, call: catalog.Call) -> onnx.ModelProto:
    inputs: list[tuple[str, int, list[Any] | None]] = [("x", TensorProto.FLOAT, ["d0", "d1"])]
    for name in builtin.inputs[1:]:
        inputs.append((name, TensorProto.FLOAT, list(call.tensors[name].shape)))
    return _one_node(builtin.op, inputs, **builtin.attrs)


def _session(model: onnx.ModelProto, setup: SessionSetup) -> ort.InferenceSession:
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=setup.options, providers=setup.providers
    )


Runner = Callable[[], object]


def _timed(runners: Mapping[str, Runner], repeats: int) -> dict[str, float]:
    """Median milliseconds of each runner, called in turn (interleaved) each round, so
    that a change in the machine's load falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for run_once in runners.values():
        run_once()  # warm-up: first-run allocations
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, run_once in runners.items():
                start = time.perf_counter_ns()
                run_once()
                samples[name].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def _runner(session: ort.InferenceSession, feeds: Mapping[str, Any]) -> Runner:
    names = [session.get_outputs()[0].name]
    return lambda: session.run(names, dict(feeds))


def _op_types(graph: onnx.GraphProto) -> Iterator[str]:
    """Every node's type, those in an If's branches included (only one branch runs)."""
    for node in graph.node:
        yield node.op_type
        for attribute in node.attribute:
            for branch in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _op_types(branch)


def _structure(model: onnx.ModelProto) -> dict[str, int]:
    ops = list(_op_types(model.graph))
    return {"nodes": len(ops), "where_nodes": ops.count("Where"), "exp_nodes": ops.count("Exp")}


def _max_relative_error(got: Array, expected: Array) -> float:
    """max |got - expected| / max(|expected|, float32 tiny) over the grid."""
    got64 = got.astype(np.float64)
    scale = np.maximum(np.abs(expected), _TINY)
    error = np.abs(got64 - expected) / scale
    error[np.isnan(got64) != np.isnan(expected)] = np.inf
    error[np.isnan(got64) & np.isnan(expected)] = 0.0
    return float(np.max(error))


def _accuracy(case: GraphCase, builtin: Builtin | None, setup: SessionSetup) -> dict[str, Any]:
    x32 = _GRID
    x64 = x32.astype(np.float64)
    reference = _session(_model(case, x64, "float64", gradient=False), setup).run(
        ["y"], _feeds(case, x64, gradient=False)
    )[0]
    feeds = _feeds(case, x32, gradient=False)
    ours = _session(_model(case, x32, "float32", gradient=False), setup).run(["y"], feeds)[0]
    result: dict[str, Any] = {
        "grid": [float(x32.min()), float(x32.max()), int(x32.size)],
        "ours_max_rel_error": _max_relative_error(ours, reference),
        "builtin_max_rel_error": None,
    }
    if builtin is not None:
        session = _session(_builtin_model(builtin, case.call(x32)), setup)
        got = session.run(["y"], {name: feeds[name] for name in builtin.inputs})[0]
        result["builtin_max_rel_error"] = _max_relative_error(got, reference)
    return result


def _kernel_rows(x: Array, setup: SessionSetup, repeats: int) -> list[dict[str, Any]]:
    """One-node float32 graphs: what a single kernel pass costs on this onnxruntime."""
    shape: list[Any] = ["d0", "d1"]
    f32 = TensorProto.FLOAT
    y = np.ascontiguousarray(x[::-1])
    models = {
        "Where(mask, x, y)": (
            _one_node(
                "Where",
                [("mask", TensorProto.BOOL, shape), ("x", f32, shape), ("z", f32, shape)],
            ),
            {"mask": x > 0, "x": x, "z": y},
        ),
        "Neg(x)": (_one_node("Neg", [("x", f32, shape)]), {"x": x}),
        "Exp(x)": (_one_node("Exp", [("x", f32, shape)]), {"x": x}),
        "Mul(x, y)": (_one_node("Mul", [("x", f32, shape), ("z", f32, shape)]), {"x": x, "z": y}),
    }
    runners = {
        name: _runner(_session(model, setup), feeds) for name, (model, feeds) in models.items()
    }
    medians = _timed(runners, repeats)
    return [{"kernel": name, "ms": medians[name]} for name in runners]


def _graph_rows(
    case: GraphCase, x: Array, setup: SessionSetup, repeats: int, exp: Runner
) -> Iterator[dict[str, Any]]:
    builtin = case.builtin()
    call = case.call(x)
    builtin_run: Runner | None = None
    if builtin is not None:
        session = _session(_builtin_model(builtin, call), setup)
        builtin_run = _runner(session, {"x": x, **call.tensors})
    accuracy = _accuracy(case, builtin, setup)
    for direction in DIRECTIONS:
        gradient = direction == "gradient"
        model = _model(case, x, "float32", gradient=gradient)
        runners = {"ours": _runner(_session(model, setup), _feeds(case, x, gradient=gradient))}
        if builtin_run is not None:
            runners["builtin"] = builtin_run
        runners["exp"] = exp
        medians = _timed(runners, repeats)
        builtin_ms = medians.get("builtin")
        target = TARGETS.get(case.function.name, TARGET)
        row: dict[str, Any] = {
            "graph": case.label,
            "function": case.function.name,
            "params": dict(case.params),
            "direction": direction,
            **_structure(model),
            "ours_ms": medians["ours"],
            "builtin": builtin.op if builtin else None,
            "builtin_ms": builtin_ms,
            "exp_ms": medians["exp"],
            "ratio_builtin": medians["ours"] / builtin_ms if builtin_ms else None,
            "ratio_exp": medians["ours"] / medians["exp"],
            "target": target if builtin and not gradient else None,
        }
        row["target_met"] = (
            None if row["target"] is None else bool(row["ratio_builtin"] <= row["target"])
        )
        if not gradient:
            row.update(accuracy)
        yield row


def run(*, elements: int, repeats: int, note: str | None = None) -> dict[str, Any]:
    """Measures every graph; returns the results as a JSON-able dict."""
    machine = machine_info()
    setup = session_setup(device="cpu", intra_op_threads=1)
    x = make_input(elements, _SEED)
    exp_session = _session(_one_node("Exp", [("x", TensorProto.FLOAT, ["d0", "d1"])]), setup)
    exp = _runner(exp_session, {"x": x})
    kernels = _kernel_rows(x, setup, repeats)
    rows: list[dict[str, Any]] = []
    for case in cases():
        _LOGGER.info("timing %s", case.label)
        rows.extend(_graph_rows(case, x, setup, repeats, exp))
    machine["load_average_at_end"] = load_average()
    return {
        "kind": "compute",
        "machine": machine,
        "config": {
            "elements": elements,
            "shape": list(input_shape(elements)),
            "dtype": "float32",
            "repeats": repeats,
            "opset": graphs.OPSET,
            "intra_op_threads": setup.options.intra_op_num_threads,
            "graph_optimization_level": str(setup.options.graph_optimization_level),
            "providers": setup.providers,
        },
        "note": note,
        "command": " ".join(["python -m bench.compute", *sys.argv[1:]]),
        "kernels": kernels,
        "rows": rows,
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _error(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _target(row: dict[str, Any]) -> str:
    if row["target_met"] is None:
        return "-"
    return f"{'met' if row['target_met'] else 'missed'} (<= {row['target']:g}x)"


def markdown(results: dict[str, Any]) -> str:
    """The report: the machine, the single kernels, and one row per graph and direction."""
    m = results["machine"]
    cfg = results["config"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "# Compute: our graphs against onnxruntime's operators",
        "",
        f"- Date (UTC): {m['date']}; CPU: {m['cpu_model']}, {m['usable_cpus']} usable CPUs",
        f"- Versions: {versions}; {m['python']}",
        f"- Load average (1/5/15 min) at start {m['load_average_at_start']}, "
        f"at end {m.get('load_average_at_end')}",
        f"- {format_count(cfg['elements'])} float32 elements shaped {cfg['shape']}; median of "
        f"{cfg['repeats']} interleaved `session.run` calls; engine session options "
        f"(intra-op threads {cfg['intra_op_threads']}, {cfg['graph_optimization_level']}); "
        f"opset {cfg['opset']}; command `{results['command']}`",
    ]
    if results.get("note"):
        lines.append(f"- Note: {results['note']}")
    lines += [
        "",
        "Single kernels (one-node float32 graphs):",
        "",
        "| kernel | ms |",
        "|---|---|",
        *(f"| {k['kernel']} | {_ms(k['ms'])} |" for k in results["kernels"]),
        "",
        "Gradient rows are set against the built-in forward operator (there is none for "
        "gradients). Max relative error: float32 forward values against our float64 graph "
        "over [-60, 60] (denominator at least float32's smallest normal).",
        "",
        "Nodes count every node of the graph, those of both branches of an If included.",
        "",
        "| graph | direction | nodes (Where) | ours ms | built-in | built-in ms | "
        "ours/built-in | target | Exp ms | ours/Exp | max rel. error ours | built-in |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['graph']} | {row['direction']} | {row['nodes']} ({row['where_nodes']}) | "
            f"{_ms(row['ours_ms'])} | {row['builtin'] or '-'} | {_ms(row['builtin_ms'])} | "
            f"{_ratio(row['ratio_builtin'])} | {_target(row)} | {_ms(row['exp_ms'])} | "
            f"{_ratio(row['ratio_exp'])} | {_error(row.get('ours_max_rel_error'))} | "
            f"{_error(row.get('builtin_max_rel_error'))} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compute",
        description="Times every served graph against onnxruntime's own operator and one "
        "Exp pass (float32, in-process), and compares their accuracy.",
    )
    parser.add_argument(
        "--elements", type=parse_count, default=1 << 20, help="float32 elements (default 1Mi)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=31, help="timed calls per graph (default 31)"
    )
    parser.add_argument("--out", type=Path, default=_OUT, help="output folder")
    parser.add_argument("--name", default="compute", help="file name stem (default compute)")
    parser.add_argument("--note", default=None, help="a line recorded with the results")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(elements=args.elements, repeats=args.repeats, note=args.note)
    for path in write_results(results, args.out, args.name, markdown):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
