"""`actgrad export-triton DIR`: the served graphs as a Triton model repository.

For every chosen function it writes `<name>/1/model.onnx` and `<name>/config.pbtxt`,
and the same for `<name>_grad`: the models the OIP front end serves, for Triton's
onnxruntime backend (or KServe with a Triton runtime). A Triton model has one
datatype and one rank, so an export fixes both (`--dtype`, `--rank`; dims stay
variable, -1) and, for PReLU, the slope's shape (`--prelu-slope-shape`).

Parameters are baked into the graphs as constants: the catalog's defaults, or the
values given with `--param FUNCTION.NAME=VALUE` (checked by the catalog). Exporting
runtime scalars as extra 0-d inputs would make every Triton caller send them, and
structural parameters (gelu's approximation, softmax's axis and log) select the
graph anyway; export another repository for other values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import numpy_helper

from actgrad.cli import parse_param_value
from actgrad_server import catalog, graphs, models
from actgrad_server.errors import ActgradServerError, InvalidArgument

__all__ = ["DTYPES", "export", "export_main"]

# Export dtype -> OIP datatype; bfloat16 has no onnxruntime graph of its own.
DTYPES: Mapping[str, str] = {"float32": "FP32", "float64": "FP64", "float16": "FP16"}


def _bake(model: onnx.ModelProto, scalars: Mapping[str, float]) -> onnx.ModelProto:
    """Turns the 0-d float64 parameter inputs into constants (initializers)."""
    graph = model.graph
    kept = [i for i in graph.input if i.name not in scalars]
    del graph.input[:]
    graph.input.extend(kept)
    for name, value in scalars.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float64), name))
    return model


def export(
    directory: Path,
    functions: Sequence[str] | None = None,
    *,
    dtype: str = "float32",
    rank: int = 2,
    slope_shape: Sequence[int] = (1,),
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Writes the repository and returns the model names written.

    `params` maps a function name to its parameter values (as for actgrad.v1).
    Raises InvalidArgument or NotFound (from the catalog) for a bad choice.
    """
    if dtype not in DTYPES:
        raise InvalidArgument(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if rank < 1:
        raise InvalidArgument(f"--rank: must be >= 1, got {rank}")
    chosen = [catalog.lookup(name) for name in functions] if functions else list(catalog.CATALOG)
    given = {catalog.lookup(name).name: values for name, values in (params or {}).items()}
    np_dtype = np.dtype(dtype)
    slope = tuple(int(d) for d in slope_shape)
    # Every choice is checked before anything is written.
    plans: list[tuple[catalog.Function, catalog.Call, dict[str, tuple[int, ...]]]] = []
    for function in dict.fromkeys(chosen):
        values = dict(given.get(function.name, {}))
        shapes: dict[str, tuple[int, ...]] = {}
        # A stand-in x that the tensor parameters broadcast to; every dim stays variable.
        x_shape = (1,) * rank
        for param in function.params:
            if param.kind is catalog.ParamKind.TENSOR:
                if param.name in values:
                    raise InvalidArgument(
                        f"--param {function.name}.{param.name}: a tensor is an input of the "
                        "exported model (set its shape with --prelu-slope-shape)"
                    )
                shapes[param.name] = slope
                values[param.name] = np.zeros(slope, dtype=np_dtype)
                x_shape = (1,) * max(rank - len(slope), 0) + slope[-rank:]
        call = catalog.bind(
            function,
            values,
            x_shape=x_shape if len(slope) <= rank else (1,) * rank,
            x_dtype=np_dtype,
            field_prefix=f"--param {function.name}",
        )
        plans.append((function, call, shapes))
    written: list[str] = []
    for function, call, shapes in plans:
        static = dict(call.static)
        forward_static = {**static, **({"slope_shape": shapes["slope"]} if shapes else {})}
        tensor_shapes = {f"{n}_shape": tuple(t.shape) for n, t in call.tensors.items()}
        gradient_static = {**static, **tensor_shapes, "x_rank": rank}
        built = {
            function.name: graphs.build_forward(
                function.name, dtype, x_rank=rank, **forward_static
            ),
            function.name + models.GRADIENT_SUFFIX: graphs.build_gradient(
                function.name, dtype, with_output=False, **gradient_static
            ),
        }
        for name, graph in built.items():
            graph = _bake(graph, call.scalars)
            onnx.checker.check_model(graph, full_check=True)
            config = models.model_config(
                models.lookup_model(name),
                datatype=DTYPES[dtype],
                rank=rank,
                tensor_shapes=shapes,
                served=False,
            )
            version_dir = directory / name / models.VERSION
            version_dir.mkdir(parents=True, exist_ok=True)
            onnx.save_model(graph, str(version_dir / "model.onnx"))
            (directory / name / "config.pbtxt").write_text(
                text_format.MessageToString(config), encoding="utf-8"
            )
            written.append(name)
    return written


def _param(text: str) -> tuple[str, str, Any]:
    key, sep, value = text.partition("=")
    function, dot, name = key.strip().partition(".")
    if not sep or not dot or not function or not name:
        raise argparse.ArgumentTypeError(f"expected FUNCTION.NAME=VALUE, got {text!r}")
    return function, name, parse_param_value(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actgrad export-triton",
        description=(
            "Write the served graphs as a Triton model repository: <model>/1/model.onnx and "
            "<model>/config.pbtxt for the onnxruntime backend, for every function and its "
            "gradient (<name>_grad). Parameters are baked in as constants."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="repository to write")
    parser.add_argument(
        "--functions", nargs="+", metavar="NAME", help="functions to export (default: all)"
    )
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="float32", help="model dtype (default: float32)"
    )
    parser.add_argument(
        "--rank", type=int, default=2, help="rank of x, every dim variable (default: 2)"
    )
    parser.add_argument(
        "--prelu-slope-shape",
        nargs="+",
        type=int,
        default=[1],
        metavar="DIM",
        help="PReLU's slope shape, broadcast to x from the right (default: 1)",
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_param,
        default=[],
        metavar="FUNCTION.NAME=VALUE",
        help="bake this parameter value instead of the default (e.g. leaky_relu.alpha=0.2)",
    )
    return parser


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `actgrad export-triton`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    params: dict[str, dict[str, Any]] = {}
    for function, name, value in args.params:
        params.setdefault(function, {})[name] = value
    try:
        written = export(
            args.directory,
            args.functions,
            dtype=args.dtype,
            rank=args.rank,
            slope_shape=args.prelu_slope_shape,
            params=params,
        )
    except ActgradServerError as exc:
        print(f"actgrad export-triton: {exc.message}", file=sys.stderr)
        return 2
    for name in written:
        print(args.directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(export_main())
