"""actgrad's own calls over HTTP/JSON under /v1/: JSON -> `ops.Operations` -> JSON.

`routes(ops)` returns the Starlette routes to mount; `OPENAPI_PATHS` and
`OPENAPI_COMPONENTS` describe them (OpenAPI 3.1). Each route only converts: the checks,
defaults and errors are `Operations`' (the catalog's, `neuron`'s, the limits'), the
same as gRPC's. Numbers in, numbers out::

    curl -d '{"x": [2, 1, 0.1]}' localhost:8000/v1/softmax
    {"output":[0.6590011388859679,0.2424329707047139,0.09856589040931818],"dtype":"float64"}

A tensor is written as JSON numbers (a number, or arrays nested as its shape,
row-major) or, for large ones, as ``{"base64": "...", "shape": [...], "dtype": "..."}``
(raw little-endian bytes). Its dtype: a base64 tensor's own `dtype` (default: the
request's); `x` given as numbers: the request's `dtype`, default float64, as the SDK
makes float64 of a Python list; every other tensor given as numbers (grad_output,
weight, bias, prelu's slope): x's dtype, as the SDK converts them. Results have x's
dtype, written as the shortest decimal that reads back as the same value of that
dtype (float64 round trips exactly; bfloat16 is written as its float32 value), or as
base64 tensors with ``"encoding": "base64"``.

JSON has no NaN or infinity: as in protobuf's JSON mapping, they are the strings
"NaN", "Infinity" and "-Infinity", in requests and responses; the bare tokens are
invalid JSON (400). true/false, strings other than those, null and ragged arrays
where numbers belong are 400, as is a number beyond the dtype's range.

Errors are ``{"error": "..."}``: 400 naming the field, 404 for an unknown function
or activation, 413 for a tensor or body over the server's limits
(`config.Limits`), never 500 for anything a caller sends (`http/responses.py`).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actgrad.wire import BFLOAT16, DTYPES, dtype_info
from actgrad_server import catalog, neuron
from actgrad_server.errors import InvalidArgument, OverLimit, shown
from actgrad_server.http.responses import HttpError, error_response, json_response, parse_json
from actgrad_server.http.runner import Runner
from actgrad_server.ops import GradientFlowResult, Operations

__all__ = ["OPENAPI_COMPONENTS", "OPENAPI_PATHS", "routes"]

Array = npt.NDArray[Any]
Fields = Mapping[str, Any]

DEFAULT_DTYPE = "float64"
ENCODINGS = ("json", "base64")
_DTYPE_NAMES = tuple(d.name for d in DTYPES)
# Non-finite values as protobuf's JSON mapping writes them.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# False when the body holds no `true` or `false` at all: then no array needs the scan
# for booleans among its numbers (numpy would make them 1.0 and 0.0), which costs as
# much as the conversion itself (1.2 ms at 64 Ki numbers).
_MAY_HOLD_BOOLEANS: ContextVar[bool] = ContextVar("actgrad_json_booleans", default=True)


# -- requests ---------------------------------------------------------------------


def _check_fields(body: Fields, allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise InvalidArgument(f"{shown(name)}: unknown field (allowed: {', '.join(allowed)})")


def _bool(body: Fields, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{name}: must be true or false, got {type(value).__name__}")
    return value


def _int(body: Fields, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name}: must be an integer, got {_kind(value)}")
    return value


def _number(body: Fields, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name}: must be a number, got {_kind(value)}")
    return float(value)


def _str(body: Fields, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name}: must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """A JSON value's type as JSON names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _dtype(name: Any, field: str) -> np.dtype[Any]:
    if not isinstance(name, str) or name not in _DTYPE_NAMES:
        raise InvalidArgument(
            f"{field}: must be one of {', '.join(map(repr, _DTYPE_NAMES))}, "
            f"got {shown(name) if isinstance(name, str) else _kind(name)}"
        )
    return dtype_info(name).numpy


def _has_bool(rows: list[Any]) -> bool:
    """True when a rectangular nested list holds a boolean among its numbers."""
    if rows and isinstance(rows[0], list):
        return any(_has_bool(row) for row in rows)
    return bool in map(type, rows)


def _spelled(value: Any, field: str) -> Any:
    """A nested list with "NaN", "Infinity" and "-Infinity" made floats; InvalidArgument
    naming the first item that is not a number."""
    if isinstance(value, list):
        return [_spelled(item, field) for item in value]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = f" {shown(value)}" if isinstance(value, str) else ""
        raise InvalidArgument(f"{field}: expected numbers, got {_kind(value)}{text}")
    return value


def _numbers(value: Any, field: str, dtype: np.dtype[Any]) -> Array:
    """JSON numbers (a number, or arrays nested as the shape) as an array of `dtype`."""
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "iuf" or (
            isinstance(value, list) and array.size and _MAY_HOLD_BOOLEANS.get() and _has_bool(value)
        ):
            array = np.asarray(_spelled(value, field), dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(
            f"{field}: must be numbers, a number or arrays nested as the shape (rows of one length)"
        ) from None
    if array.dtype == dtype:
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(dtype)
    if dtype.itemsize < 8:  # a number beyond float32's, float16's or bfloat16's range
        wild = ~np.isfinite(result.astype(np.float32, copy=False))
        if wild.any():
            source = np.asarray(array, dtype=np.float64)
            beyond = wild & np.isfinite(source)
            if beyond.any():
                raise InvalidArgument(
                    f"{field}: {float(source[beyond].flat[0])!r} is beyond "
                    f"{dtype_info(dtype).name}'s range"
                )
    return result


_BASE64_FIELDS = ("base64", "shape", "dtype")


def _base64(ops: Operations, value: Mapping[str, Any], field: str, dtype: np.dtype[Any]) -> Array:
    _check_fields(value, _BASE64_FIELDS)
    if "dtype" in value:
        dtype = _dtype(value["dtype"], f"{field}.dtype")
    shape = value.get("shape")
    if not isinstance(shape, list) or any(
        isinstance(d, bool) or not isinstance(d, int) for d in shape
    ):
        raise InvalidArgument(f"{field}.shape: must be an array of integers")
    count = ops.check_shape(shape, f"{field}.shape")
    text = value.get("base64")
    if not isinstance(text, str):
        raise InvalidArgument(f"{field}.base64: must be a string, got {_kind(text)}")
    expected = count * dtype.itemsize
    characters = 4 * -(-expected // 3)  # checked before decoding anything
    if len(text) != characters:
        raise InvalidArgument(
            f"{field}.base64: has {len(text)} characters but shape {shape} of "
            f"{dtype_info(dtype).name} needs {characters} ({expected} bytes)"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{field}.base64: not valid base64") from None
    if len(raw) != expected:
        raise InvalidArgument(
            f"{field}.base64: has {len(raw)} bytes but shape {shape} of "
            f"{dtype_info(dtype).name} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def _tensor(ops: Operations, value: Any, field: str, dtype: np.dtype[Any]) -> Array:
    """A request's tensor: JSON numbers of `dtype`, or a base64 object."""
    if isinstance(value, dict):
        array = _base64(ops, value, field, dtype)
    elif isinstance(value, list | int | float | str) and not isinstance(value, bool):
        array = _numbers(value, field, dtype)
    else:
        raise InvalidArgument(
            f"{field}: must be numbers (nested arrays) or a base64 tensor object, "
            f"got {_kind(value)}"
        )
    ops.check_tensor(array, field)
    return array


def _optional_tensor(ops: Operations, body: Fields, name: str, like: Array) -> Array | None:
    value = body.get(name)
    return None if value is None else _tensor(ops, value, name, like.dtype)


def _x(ops: Operations, body: Fields, name: str = "x") -> Array:
    if body.get(name) is None:
        raise InvalidArgument(f"{name}: is required")
    dtype = _dtype(body.get("dtype", DEFAULT_DTYPE), "dtype")
    return _tensor(ops, body[name], name, dtype)


def _params(ops: Operations, body: Fields, x: Array) -> dict[str, Any]:
    """A function's parameters: numbers, strings and booleans as they are, tensors
    (arrays, base64 objects) of x's dtype; the catalog checks each."""
    raw = body.get("params")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"params: must be an object, got {_kind(raw)}")
    params: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"params[{shown(name)}]"
        if isinstance(value, list | dict):
            params[name] = _tensor(ops, value, where, x.dtype)
        elif value is None:
            raise InvalidArgument(f"{where}: no value set")
        elif isinstance(value, str) and value in _NON_FINITE:
            params[name] = _NON_FINITE[value]
        else:
            params[name] = value
    return params


def _function(body: Fields, name: str = "function") -> str:
    value = _str(body, name)
    if not value:
        raise InvalidArgument(f"{name}: is required")
    return value


def _encoding(body: Fields) -> str:
    value = body.get("encoding", "json")
    if value not in ENCODINGS:
        raise InvalidArgument(
            f"encoding: must be one of {', '.join(map(repr, ENCODINGS))}, "
            f"got {shown(value) if isinstance(value, str) else _kind(value)}"
        )
    return str(value)


# -- responses --------------------------------------------------------------------


def _spell(value: Any) -> Any:
    """numpy scalars with NaN and infinities spelled out (orjson writes them as null)."""
    if isinstance(value, np.ndarray):
        return [_spell(item) for item in value]
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _out(array: Array, encoding: str) -> Any:
    """A result as JSON numbers (numpy arrays orjson writes) or a base64 object."""
    if encoding == "base64":
        return {
            "base64": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
            "shape": list(array.shape),
            "dtype": dtype_info(array.dtype).name,
        }
    if array.dtype == BFLOAT16:  # orjson writes float16 and up
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        return _spell(array) if array.ndim else _spell(array[()])
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array)


def _outs(arrays: Mapping[str, Array], encoding: str) -> dict[str, Any]:
    return {name: _out(value, encoding) for name, value in arrays.items()}


def _plain(value: Any) -> Any:
    """Plain data (dataclasses made dicts) with NaN and infinities spelled out."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return _spell(value)
    return value


def _flow(result: GradientFlowResult) -> dict[str, Any]:
    document = {
        name: _out(value, "json")
        for name, value in vars(result).items()
        if isinstance(value, np.ndarray)
    }
    document["ratio"] = _plain(result.ratio)
    return document


# -- the operations -----------------------------------------------------------------

_TENSOR_FIELDS = ("dtype", "encoding")


def _functions(ops: Operations, body: Fields) -> dict[str, Any]:
    return {"functions": [_plain(asdict(info)) for info in ops.functions()]}


def _activate(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(body, ("x", "function", "params", *_TENSOR_FIELDS))
    function = _function(body)
    encoding = _encoding(body)
    x = _x(ops, body)
    y = ops.activate(x, function, _params(ops, body, x))
    return {"output": _out(y, encoding), "dtype": dtype_info(y.dtype).name}


def _gradient(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(
        body, ("x", "function", "params", "grad_output", "return_output", *_TENSOR_FIELDS)
    )
    function = _function(body)
    encoding = _encoding(body)
    return_output = _bool(body, "return_output") or False
    x = _x(ops, body)
    params = _params(ops, body, x)
    grad_output = _optional_tensor(ops, body, "grad_output", x)
    result = ops.gradient(x, function, params, grad_output=grad_output, return_output=return_output)
    assert result.grad_input is not None  # no sink was given
    document: dict[str, Any] = {
        "grad_input": _out(result.grad_input, encoding),
        "grad_params": _outs(result.grad_params, encoding),
    }
    if result.output is not None:
        document["output"] = _out(result.output, encoding)
    document["dtype"] = dtype_info(x.dtype).name
    return document


def _softmax(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(body, ("x", "axis", "temperature", "log", *_TENSOR_FIELDS))
    encoding = _encoding(body)
    axis, temperature, log = _int(body, "axis"), _number(body, "temperature"), _bool(body, "log")
    x = _x(ops, body)
    y = ops.softmax(x, axis=axis, temperature=temperature, log=log)
    return {"output": _out(y, encoding), "dtype": dtype_info(y.dtype).name}


_DENSE_FIELDS = ("x", "weight", "bias", "activation", "params", "return_net_output")


def _dense_inputs(
    ops: Operations, body: Fields
) -> tuple[Array, Array, Array | None, str | None, dict[str, Any]]:
    activation = _str(body, "activation")
    x = _x(ops, body)
    if body.get("weight") is None:
        raise InvalidArgument("weight: is required")
    weight = _tensor(ops, body["weight"], "weight", x.dtype)
    bias = _optional_tensor(ops, body, "bias", x)
    return x, weight, bias, activation, _params(ops, body, x)


def _dense(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(body, (*_DENSE_FIELDS, *_TENSOR_FIELDS))
    encoding = _encoding(body)
    return_net_output = _bool(body, "return_net_output") or False
    x, weight, bias, activation, params = _dense_inputs(ops, body)
    result = ops.dense(x, weight, bias, activation=activation, params=params)
    assert result.output is not None and result.net_output is not None
    document = {"output": _out(result.output, encoding)}
    if return_net_output:
        document["net_output"] = _out(result.net_output, encoding)
    document["dtype"] = dtype_info(x.dtype).name
    return document


def _dense_vjp(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(body, (*_DENSE_FIELDS, "grad_output", "return_output", *_TENSOR_FIELDS))
    encoding = _encoding(body)
    return_output = _bool(body, "return_output") or False
    return_net_output = _bool(body, "return_net_output") or False
    x, weight, bias, activation, params = _dense_inputs(ops, body)
    grad_output = _optional_tensor(ops, body, "grad_output", x)
    result = ops.dense_vjp(
        x,
        weight,
        bias,
        activation=activation,
        params=params,
        grad_output=grad_output,
        return_output=return_output,
    )
    document: dict[str, Any] = {}
    for name in ("grad_input", "grad_weight", "grad_bias"):
        value = getattr(result, name)
        assert value is not None
        document[name] = _out(value, encoding)
    document["grad_params"] = _outs(result.grad_params, encoding)
    if return_output and result.output is not None:
        document["output"] = _out(result.output, encoding)
    if return_net_output and result.net_output is not None:
        document["net_output"] = _out(result.net_output, encoding)
    document["dtype"] = dtype_info(x.dtype).name
    return document


_FLOW_INTS = ("depth", "width", "batch", "seed")
_FLOW_BOOLS = ("residual", "normalize")


def _gradient_flow(ops: Operations, body: Fields) -> dict[str, Any]:
    _check_fields(
        body,
        ("function", "params", *_FLOW_INTS, "init", "init_std", *_FLOW_BOOLS, "dtype"),
    )
    function = _function(body)
    options: dict[str, Any] = {}
    for name in _FLOW_INTS:
        if (number := _int(body, name)) is not None:
            options[name] = number
    for name in _FLOW_BOOLS:
        if (flag := _bool(body, name)) is not None:
            options[name] = flag
    for name in ("init", "dtype"):
        if (text := _str(body, name)) is not None:
            options[name] = text
    raw = body.get("params")
    if raw is not None and not isinstance(raw, dict):
        raise InvalidArgument(f"params: must be an object, got {_kind(raw)}")
    params = dict(raw or {})
    for name, value in params.items():
        if isinstance(value, str) and value in _NON_FINITE:
            params[name] = _NON_FINITE[value]
    result = ops.gradient_flow(function, params, init_std=_number(body, "init_std"), **options)
    return _flow(result)


# -- routes -------------------------------------------------------------------------

Operation = Callable[[Operations, Fields], dict[str, Any]]

#: path -> (method, operation); the OpenAPI paths below describe each.
_TABLE: dict[str, tuple[str, Operation]] = {
    "/v1/functions": ("GET", _functions),
    "/v1/activate": ("POST", _activate),
    "/v1/gradient": ("POST", _gradient),
    "/v1/softmax": ("POST", _softmax),
    "/v1/dense": ("POST", _dense),
    "/v1/dense_vjp": ("POST", _dense_vjp),
    "/v1/gradient_flow": ("POST", _gradient_flow),
}


# Their work follows their body's size: a small one is computed inline (`Runner`).
_ELEMENTWISE = frozenset({"/v1/activate", "/v1/gradient", "/v1/softmax"})


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes `limit` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HttpError(413, f"body: {length} bytes exceed the limit of {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"body: over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(ops: Operations, operation: Operation, raw: bytes) -> Response:
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidArgument(f"body: must be a JSON object, got {_kind(body)}")
    token = _MAY_HOLD_BOOLEANS.set(b"true" in raw or b"false" in raw)
    try:
        return json_response(operation(ops, body))
    finally:
        _MAY_HOLD_BOOLEANS.reset(token)


def routes(ops: Operations, run: Runner | None = None) -> list[BaseRoute]:
    """The /v1/ routes of actgrad's own calls, answered by `ops`; decoding, computing
    and encoding run through `run` (default: Starlette's thread pool): on its pool, or
    inline for a small elementwise request (`Runner.small`)."""
    limit = ops.limits.max_message_bytes

    def endpoint(
        operation: Operation, elementwise: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                raw = await _body(request, limit) if request.method == "POST" else b""
                response: Response
                if run is None:
                    response = await run_in_threadpool(_answer, ops, operation, raw)
                elif elementwise:
                    response = await run.small(len(raw), _answer, ops, operation, raw)
                else:
                    response = await run(_answer, ops, operation, raw)
                return response
            except OverLimit as exc:
                return error_response(HttpError(413, exc.message), request.url.path)
            except Exception as exc:
                return error_response(exc, f"{request.method} {request.url.path}")

        return answer

    async def function(request: Request) -> Response:
        try:
            info = ops.function(request.path_params["name"])
            return json_response(_plain(asdict(info)))
        except Exception as exc:
            return error_response(exc, f"{request.method} {request.url.path}")

    table: list[BaseRoute] = [
        Route(path, endpoint(operation, path in _ELEMENTWISE), methods=[method])
        for path, (method, operation) in _TABLE.items()
    ]
    table.append(Route("/v1/functions/{name}", function, methods=["GET"]))
    return table


# -- OpenAPI ------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_NUMBER = {
    "oneOf": [
        {"type": "number"},
        {"type": "string", "enum": list(_NON_FINITE)},
    ],
    "description": 'A number; NaN and infinities as the strings "NaN", "Infinity", "-Infinity".',
}
_DTYPE = {"type": "string", "enum": list(_DTYPE_NAMES)}

OPENAPI_COMPONENTS: dict[str, Any] = {
    "schemas": {
        "ActgradNumbers": {
            "description": "A tensor as JSON numbers: a number (0-d), or arrays nested as "
            "its shape, row-major, every row of one length.",
            "oneOf": [_NUMBER, {"type": "array", "items": _ref("ActgradNumbers")}],
        },
        "ActgradBase64Tensor": {
            "type": "object",
            "description": "A tensor as its raw little-endian row-major bytes, base64.",
            "required": ["base64", "shape"],
            "additionalProperties": False,
            "properties": {
                "base64": {"type": "string", "contentEncoding": "base64"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "dtype": {**_DTYPE, "description": "default: the request's dtype"},
            },
        },
        "ActgradTensor": {
            "oneOf": [_ref("ActgradNumbers"), _ref("ActgradBase64Tensor")],
        },
        "ActgradError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "ActgradParams": {
            "type": "object",
            "description": "The function's parameters by name (GET /v1/functions lists "
            "them with their defaults and ranges): numbers, integers, strings, booleans, "
            "tensors (prelu's slope) of x's dtype.",
            "additionalProperties": {
                "oneOf": [
                    {"type": ["number", "integer", "string", "boolean"]},
                    _ref("ActgradTensor"),
                ]
            },
        },
        "ActgradFunction": {
            "type": "object",
            "description": "One served function (actgrad.v1.FunctionInfo).",
            "properties": {
                "name": {"type": "string"},
                "aliases": {"type": "array", "items": {"type": "string"}},
                "summary": {"type": "string"},
                "formula": {"type": "string"},
                "formula_latex": {"type": "string"},
                "gradient_note": {"type": "string"},
                "params": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {
                                "type": "string",
                                "enum": ["number", "integer", "string", "bool", "tensor"],
                            },
                            "description": {"type": "string"},
                            "default": {"type": ["number", "string", "boolean", "null"]},
                            "required": {"type": "boolean"},
                            "minimum": {"type": ["number", "null"]},
                            "maximum": {"type": ["number", "null"]},
                            "minimum_exclusive": {"type": "boolean"},
                            "maximum_exclusive": {"type": "boolean"},
                            "choices": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "elementwise": {"type": "boolean"},
                "axis_param": {"type": ["string", "null"]},
                "dtypes": {"type": "array", "items": _DTYPE},
                "properties": {
                    "type": "object",
                    "description": 'output_min/output_max ("-Infinity"/"Infinity": '
                    "unbounded), monotonic, smooth, ... (actgrad.v1.FunctionProperties)",
                },
            },
        },
    }
}

_TENSOR = _ref("ActgradTensor")
_TENSORS = {"type": "object", "additionalProperties": _TENSOR}
_X = {**_TENSOR, "description": "The input; its dtype is every result's."}
_REQUEST_DTYPE = {
    **_DTYPE,
    "default": DEFAULT_DTYPE,
    "description": "x's dtype when given as numbers (float64 by default, as the SDK "
    "makes of a list); other tensors given as numbers take x's.",
}
_ENCODING = {
    "type": "string",
    "enum": list(ENCODINGS),
    "default": "json",
    "description": "How results are written: JSON numbers, or base64 tensor objects.",
}
_ANSWER_DTYPE = {**_DTYPE, "description": "The results' dtype (x's)."}
_ERROR_ANSWERS = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": _ref("ActgradError")}},
    }
    for status, description in (
        ("400", "a bad request; the message names the field"),
        ("404", "an unknown function or activation"),
        ("413", "a tensor or the body over the server's limits"),
    )
}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _post(summary: str, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["actgrad"],
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": answer}},
                },
                **_ERROR_ANSWERS,
            },
        }
    }


def _flag(description: str) -> dict[str, Any]:
    return {"type": "boolean", "default": False, "description": description}


_FUNCTION = {"type": "string", "description": "A function's name or alias (GET /v1/functions)."}
_DENSE_REQUEST = {
    "x": {**_X, "description": "[..., in]"},
    "weight": {**_TENSOR, "description": "[out, in]"},
    "bias": {**_TENSOR, "description": "[out]; absent: none"},
    "activation": {
        "type": "string",
        "description": "Any served function (softmax along the last axis); absent or "
        "empty: none, the output is z (as gRPC's DenseRequest; the SDK's default is \"relu\").",
    },
    "params": _ref("ActgradParams"),
    "return_net_output": _flag("Also return z = x . weight^T + bias."),
    "dtype": _REQUEST_DTYPE,
    "encoding": _ENCODING,
}
_FLOW = neuron.FLOW_DEFAULTS
_SOFTMAX = catalog.SOFTMAX.params_by_name

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/functions": {
        "get": {
            "tags": ["actgrad"],
            "summary": "The function catalog: names, aliases, parameters with defaults and "
            "ranges, properties",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": _object(
                                {
                                    "functions": {
                                        "type": "array",
                                        "items": _ref("ActgradFunction"),
                                    }
                                }
                            )
                        }
                    },
                }
            },
        }
    },
    "/v1/functions/{name}": {
        "get": {
            "tags": ["actgrad"],
            "summary": "One function, by name or alias",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": _ref("ActgradFunction")}},
                },
                "404": _ERROR_ANSWERS["404"],
            },
        }
    },
    "/v1/activate": _post(
        "f(x): a function applied to x",
        _object(
            {
                "x": _X,
                "function": _FUNCTION,
                "params": _ref("ActgradParams"),
                "dtype": _REQUEST_DTYPE,
                "encoding": _ENCODING,
            },
            ("x", "function"),
        ),
        _object({"output": _TENSOR, "dtype": _ANSWER_DTYPE}),
    ),
    "/v1/gradient": _post(
        "The vector-Jacobian product grad_output * f'(x), with the tensor parameters' "
        "gradients (prelu's slope)",
        _object(
            {
                "x": _X,
                "function": _FUNCTION,
                "params": _ref("ActgradParams"),
                "grad_output": {**_TENSOR, "description": "x's shape; absent: ones"},
                "return_output": _flag("Also return f(x)."),
                "dtype": _REQUEST_DTYPE,
                "encoding": _ENCODING,
            },
            ("x", "function"),
        ),
        _object(
            {
                "grad_input": _TENSOR,
                "grad_params": _TENSORS,
                "output": _TENSOR,
                "dtype": _ANSWER_DTYPE,
            }
        ),
    ),
    "/v1/softmax": _post(
        "Softmax of x / temperature along an axis (log-softmax with log)",
        _object(
            {
                "x": _X,
                "axis": {"type": "integer", "default": _SOFTMAX["axis"].default},
                "temperature": {
                    "type": "number",
                    "default": _SOFTMAX["temperature"].default,
                    "exclusiveMinimum": _SOFTMAX["temperature"].minimum,
                },
                "log": {"type": "boolean", "default": _SOFTMAX["log"].default},
                "dtype": _REQUEST_DTYPE,
                "encoding": _ENCODING,
            },
            ("x",),
        ),
        _object({"output": _TENSOR, "dtype": _ANSWER_DTYPE}),
    ),
    "/v1/dense": _post(
        "A dense layer: activation(x . weight^T + bias)",
        _object(_DENSE_REQUEST, ("x", "weight")),
        _object({"output": _TENSOR, "net_output": _TENSOR, "dtype": _ANSWER_DTYPE}),
    ),
    "/v1/dense_vjp": _post(
        "A dense layer's gradients with respect to x, weight, bias and tensor parameters",
        _object(
            {
                **_DENSE_REQUEST,
                "grad_output": {**_TENSOR, "description": "[..., out]; absent: ones"},
                "return_output": _flag("Also return the output."),
            },
            ("x", "weight"),
        ),
        _object(
            {
                "grad_input": _TENSOR,
                "grad_weight": _TENSOR,
                "grad_bias": _TENSOR,
                "grad_params": _TENSORS,
                "output": _TENSOR,
                "net_output": _TENSOR,
                "dtype": _ANSWER_DTYPE,
            }
        ),
    ),
    "/v1/gradient_flow": _post(
        "How gradients survive a deep square network of a function (the probe of "
        "docs/vanishing-gradients.md)",
        _object(
            {
                "function": _FUNCTION,
                "params": _ref("ActgradParams"),
                "depth": {"type": "integer", "minimum": 1, "default": _FLOW["depth"]},
                "width": {"type": "integer", "minimum": 1, "default": _FLOW["width"]},
                "batch": {"type": "integer", "minimum": 1, "default": _FLOW["batch"]},
                "init": {
                    "type": "string",
                    "enum": list(neuron.INITS),
                    "default": _FLOW["init"],
                },
                "init_std": {"type": "number", "description": "only with init 'normal'"},
                "seed": {"type": "integer", "minimum": 0, "default": _FLOW["seed"]},
                "residual": _flag("h_l = f(z_l) + h_{l-1}"),
                "normalize": _flag("z_l standardised per unit over the batch"),
                "dtype": {
                    "type": "string",
                    "enum": list(neuron.FLOW_DTYPES),
                    "default": _FLOW["dtype"],
                },
            },
            ("function",),
        ),
        _object(
            {
                name: {"type": "array", "items": _NUMBER}
                for name in ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead")
            }
            | {"ratio": _NUMBER}
        ),
    ),
}
