"""The served graphs as a Triton model repository (`actgrad export-triton DIR`).

For every chosen function it writes `<name>/1/model.onnx` and `<name>/config.pbtxt`,
and the same for `<name>_grad`: the models the OIP front end serves, for Triton's
onnxruntime backend (or KServe with a Triton runtime). A Triton model has one
datatype and one rank, so an export fixes both (`--dtype`, `--rank`; dims stay
variable, -1) and the shape of each tensor parameter (the catalog's
`Param.sample_shape` unless chosen, e.g. `--prelu-slope-shape`).

Parameters are baked into the graphs as constants: the catalog's defaults, or the
values given with `--param FUNCTION.NAME=VALUE` (checked by the catalog). Exporting
runtime scalars as extra 0-d inputs would make every Triton caller send them, and
structural parameters (gelu's approximation, softmax's axis and log) select the
graph anyway; export another repository for other values. The command line is in
`actgrad_server.cli`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import numpy_helper

from actgrad.wire import DTYPES
from actgrad_server import catalog, graphs
from actgrad_server.errors import InvalidArgument
from actgrad_server.oip import model_table as models

__all__ = ["EXPORT_DTYPES", "export"]

# Export dtype -> OIP datatype: the dtypes with an ONNX graph of their own.
EXPORT_DTYPES: Mapping[str, str] = {info.name: info.oip for info in DTYPES if info.has_graph}


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
    params: Mapping[str, Mapping[str, Any]] | None = None,
    tensor_shapes: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
) -> list[str]:
    """Writes the repository and returns the model names written.

    `params` maps a function name to its parameter values (as for actgrad.v1);
    `tensor_shapes` maps a function name to the shapes of its tensor parameters
    (default: each parameter's `sample_shape`). Raises InvalidArgument or NotFound
    (from the catalog) for a bad choice.
    """
    if dtype not in EXPORT_DTYPES:
        raise InvalidArgument(f"--dtype: must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    if rank < 1:
        raise InvalidArgument(f"--rank: must be >= 1, got {rank}")
    chosen = [catalog.lookup(name) for name in functions] if functions else list(catalog.CATALOG)
    given = {catalog.lookup(name).name: values for name, values in (params or {}).items()}
    shapes_given = {catalog.lookup(n).name: v for n, v in (tensor_shapes or {}).items()}
    np_dtype = np.dtype(dtype)
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
                        f"exported model (set its shape with {shape_flag(function, param)})"
                    )
                chosen_shape = shapes_given.get(function.name, {}).get(param.name)
                shape = tuple(
                    int(d) for d in (param.sample_shape if chosen_shape is None else chosen_shape)
                )
                shapes[param.name] = shape
                values[param.name] = np.zeros(shape, dtype=np_dtype)
                if len(shape) <= rank:
                    x_shape = tuple(
                        max(a, b)
                        for a, b in zip(x_shape, (1,) * (rank - len(shape)) + shape, strict=True)
                    )
        call = catalog.bind(
            function,
            values,
            x_shape=x_shape,
            x_dtype=np_dtype,
            field_prefix=f"--param {function.name}",
        )
        plans.append((function, call, shapes))
    written: list[str] = []
    for function, call, shapes in plans:
        static = dict(call.static)
        forward_static = {**static, **{f"{n}_shape": shape for n, shape in shapes.items()}}
        param_shapes = {f"{n}_shape": tuple(t.shape) for n, t in call.tensors.items()}
        gradient_static = {**static, **param_shapes, "x_rank": rank}
        built = {
            function.name: graphs.build_forward(function, dtype, x_rank=rank, **forward_static),
            function.name + models.GRADIENT_SUFFIX: graphs.build_gradient(
                function, dtype, with_output=False, **gradient_static
            ),
        }
        for name, graph in built.items():
            graph = _bake(graph, call.scalars)
            onnx.checker.check_model(graph, full_check=True)
            config = models.model_config(
                models.lookup_model(name),
                datatype=EXPORT_DTYPES[dtype],
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


def shape_flag(function: catalog.Function, param: catalog.Param) -> str:
    """The command-line flag choosing a tensor parameter's shape: --prelu-slope-shape."""
    return f"--{function.name}-{param.name}-shape".replace("_", "-")
