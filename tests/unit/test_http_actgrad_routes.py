"""http/actgrad_routes.py on an app with only its routes (no server, no sockets: httpx's
ASGI transport): JSON in and out, base64 tensors, the OpenAPI paths, and a fuzz of bad
requests that must all be 4xx with {"error": ...}, never 500."""

from __future__ import annotations

import asyncio
import base64
import importlib
import math
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from actgrad_server import catalog
from actgrad_server.config import Limits, Settings
from actgrad_server.engine import Engine
from actgrad_server.http.actgrad_routes import OPENAPI_COMPONENTS, OPENAPI_PATHS, routes
from actgrad_server.ops import Operations

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=1000, max_rank=4, max_concurrent_rpcs=4)


@pytest.fixture(scope="module")
def ops() -> Operations:
    return Operations(Engine(device="cpu"), LIMITS)


@pytest.fixture(scope="module")
def app(ops: Operations) -> Starlette:
    return Starlette(routes=routes(ops))


def call(
    app: Starlette, path: str, body: Any = None, *, raw: bytes | None = None, method: str = "POST"
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            content = raw if raw is not None else orjson.dumps(body)
            if method == "GET":
                return await client.get(path)
            # No content type: as `curl -d` sends (application/x-www-form-urlencoded).
            return await client.post(path, content=content)

    return asyncio.run(go())


def ok(app: Starlette, path: str, body: Any) -> dict[str, Any]:
    response = call(app, path, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def b64(array: np.ndarray) -> dict[str, Any]:
    return {
        "base64": base64.b64encode(array.tobytes()).decode(),
        "shape": list(array.shape),
        "dtype": array.dtype.name,
    }


def test_the_seeds_example(app: Starlette) -> None:
    response = call(app, "/v1/softmax", raw=b'{"x": [2, 1, 0.1]}')
    assert response.status_code == 200
    result = response.json()
    assert result["dtype"] == "float64"
    assert [round(v, 3) for v in result["output"]] == [0.659, 0.242, 0.099]


def test_float64_round_trips_exactly(app: Starlette, ops: Operations) -> None:
    x = np.array([[0.1, -2.5, 1e-300], [3.0, 1 / 3, -7.25]])
    result = ok(app, "/v1/activate", {"x": x.tolist(), "function": "gelu"})
    want = ops.activate(x, "gelu")
    assert result["output"] == want.tolist()  # every bit: JSON numbers as repr writes them
    assert np.array_equal(np.array(result["output"]), want)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dtypes_named(app: Starlette, ops: Operations, dtype: str) -> None:
    x = [-1.5, 0.1, 2.0]
    result = ok(app, "/v1/activate", {"x": x, "function": "tanh", "dtype": dtype})
    assert result["dtype"] == dtype
    want = ops.activate(_as(x, dtype), "tanh").astype(np.float64)
    np.testing.assert_array_equal(_as(result["output"], dtype).astype(np.float64), want)


def _as(values: Any, dtype: str) -> np.ndarray:
    from actgrad.wire import dtype_info

    return np.asarray(values, dtype=np.float64).astype(dtype_info(dtype).numpy)


def test_base64_in_and_out(app: Starlette, ops: Operations) -> None:
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    result = ok(app, "/v1/activate", {"x": b64(x), "function": "swish", "encoding": "base64"})
    out = result["output"]
    assert out["shape"] == [3, 4] and out["dtype"] == "float32"
    y = np.frombuffer(base64.b64decode(out["base64"]), dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(y, ops.activate(x, "swish"))


def test_gradient_with_grad_output_and_slope_gradient(app: Starlette) -> None:
    result = ok(
        app,
        "/v1/gradient",
        {
            "x": [[-1, 2], [-3, -4]],
            "function": "prelu",
            "params": {"slope": [0.25, 0.5]},
            "grad_output": [[1, 1], [2, 1]],
            "return_output": True,
        },
    )
    assert result["grad_input"] == [[0.25, 1.0], [0.5, 0.5]]
    assert result["grad_params"] == {"slope": [-7.0, -4.0]}
    assert result["output"] == [[-0.25, 2.0], [-0.75, -2.0]]


def test_softmax_options_and_the_catalogs_defaults(app: Starlette, ops: Operations) -> None:
    x = [[0.5, -1.0], [2.0, 3.0]]
    result = ok(app, "/v1/softmax", {"x": x, "axis": 0, "temperature": 0.5, "log": True})
    want = ops.softmax(np.array(x), axis=0, temperature=0.5, log=True)
    assert result["output"] == want.tolist()


def test_dense_and_dense_vjp(app: Starlette, ops: Operations) -> None:
    body = {"x": [[1, 2, 3]], "weight": [[1, 1, 1], [0, 0, 1]], "bias": [0, -10]}
    result = ok(app, "/v1/dense", {**body, "activation": "relu", "return_net_output": True})
    assert result == {"output": [[6.0, 0.0]], "net_output": [[6.0, -7.0]], "dtype": "float64"}
    assert ok(app, "/v1/dense", body)["output"] == [[6.0, -7.0]]  # no activation: z, as gRPC
    vjp = ok(
        app,
        "/v1/dense_vjp",
        {**body, "activation": "prelu", "params": {"slope": 0.25}, "grad_output": [[1, 2]]},
    )
    assert vjp["grad_input"] == [[1.0, 1.0, 1.5]]
    assert vjp["grad_weight"] == [[1.0, 2.0, 3.0], [0.5, 1.0, 1.5]]
    assert vjp["grad_bias"] == [1.0, 0.5]
    assert vjp["grad_params"] == {"slope": -14.0}


def test_gradient_flow(app: Starlette, ops: Operations) -> None:
    body = {"function": "sigmoid", "depth": 3, "width": 4, "batch": 2, "seed": 7}
    result = ok(app, "/v1/gradient_flow", body)
    want = ops.gradient_flow("sigmoid", depth=3, width=4, batch=2, seed=7)
    assert result["grad_rms"] == want.grad_rms.tolist()
    assert result["ratio"] == want.ratio


def test_functions(app: Starlette) -> None:
    response = call(app, "/v1/functions", method="GET")
    functions = response.json()["functions"]
    assert [f["name"] for f in functions] == [f.name for f in catalog.CATALOG]
    leaky = next(f for f in functions if f["name"] == "leaky_relu")
    assert leaky["params"][0]["name"] == "alpha" and leaky["params"][0]["default"] == 0.01
    relu = call(app, "/v1/functions/ReLU", method="GET").json()
    assert relu["properties"]["output_max"] == "Infinity"
    assert call(app, "/v1/functions/nope", method="GET").status_code == 404


def test_non_finite_values_are_spelled_out(app: Starlette) -> None:
    result = ok(app, "/v1/activate", {"x": ["NaN", "Infinity", "-Infinity", 1], "function": "relu"})
    assert result["output"] == ["NaN", "Infinity", 0.0, 1.0]
    result = ok(app, "/v1/activate", {"x": [65000], "function": "selu", "dtype": "float16"})
    assert result["output"] == ["Infinity"]  # 1.0507 * 65000 overflows float16 when computed


NESTED_TOO_DEEP = b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"

BAD: list[tuple[str, bytes | Any, int, str]] = [
    ("/v1/softmax", b'{"x": [1, 2', 400, "body: not valid JSON"),
    ("/v1/softmax", b'{"x": [NaN]}', 400, "body: not valid JSON"),
    ("/v1/softmax", b'{"x": [Infinity]}', 400, "body: not valid JSON"),
    ("/v1/softmax", b'{"x": [1e400]}', 400, "body: not valid JSON"),
    ("/v1/softmax", NESTED_TOO_DEEP, 400, "body: not valid JSON"),
    ("/v1/softmax", b"[1, 2]", 400, "body: must be a JSON object"),
    ("/v1/softmax", b"\xff\xfe", 400, "body"),
    ("/v1/softmax", {}, 400, "x: is required"),
    ("/v1/softmax", {"x": "abc"}, 400, "x: expected numbers"),
    ("/v1/softmax", {"x": [1, "2"]}, 400, "x: expected numbers, got a string '2'"),
    ("/v1/softmax", {"x": [True, 1.0]}, 400, "x: expected numbers, got a boolean"),
    ("/v1/softmax", {"x": [[1.0, 2.0], [False, 1.0]]}, 400, "x: expected numbers, got a boolean"),
    ("/v1/gradient", {"x": [1, 2], "function": "relu", "grad_output": [1, True]}, 400, "grad_out"),
    ("/v1/softmax", {"x": [1, None]}, 400, "x: expected numbers, got null"),
    ("/v1/softmax", {"x": [1, {"a": 1}]}, 400, "x:"),
    ("/v1/softmax", {"x": [[1, 2], [3]]}, 400, "rows of one length"),
    ("/v1/softmax", {"x": True}, 400, "x: must be numbers"),
    ("/v1/softmax", {"x": [[[[[1]]]]]}, 400, "x: rank 5 exceeds the limit of 4"),
    ("/v1/softmax", {"x": [1.0] * 1001}, 413, "x: 1001 elements exceed"),
    ("/v1/softmax", {"x": [1e39], "dtype": "float32"}, 400, "beyond float32's range"),
    ("/v1/softmax", {"x": [70000], "dtype": "float16"}, 400, "beyond float16's range"),
    ("/v1/softmax", {"x": [1], "dtype": "int8"}, 400, "dtype: must be one of"),
    ("/v1/softmax", {"x": [1], "axis": True}, 400, "axis: must be an integer"),
    ("/v1/softmax", b'{"x": [1], "axis": 1000000000000000000000000000000}', 400, "request['axis']"),
    ("/v1/softmax", {"x": [1], "temperature": "hot"}, 400, "temperature: must be a number"),
    ("/v1/softmax", {"x": [1], "temperature": 0}, 400, "request['temperature']"),
    ("/v1/softmax", {"x": [1], "log": 1}, 400, "log: must be true or false"),
    ("/v1/softmax", {"x": [1], "encoding": "hex"}, 400, "encoding:"),
    ("/v1/softmax", {"x": [1], "axes": 0}, 400, "'axes': unknown field"),
    ("/v1/activate", {"x": [1]}, 400, "function: is required"),
    ("/v1/activate", {"x": [1], "function": 3}, 400, "function: must be a string"),
    ("/v1/activate", {"x": [1], "function": "relux"}, 404, "unknown function 'relux'"),
    ("/v1/activate", {"x": [1], "function": "r" * 10000}, 400, "longer than the limit"),
    ("/v1/activate", {"x": [1], "function": "elu", "params": []}, 400, "params: must be"),
    ("/v1/activate", {"x": [1], "function": "elu", "params": {"alpha": None}}, 400, "no value"),
    ("/v1/activate", {"x": [1], "function": "elu", "params": {"alpha": "x"}}, 400, "alpha"),
    ("/v1/activate", {"x": [1], "function": "elu", "params": {"beta": 1}}, 400, "'beta'"),
    ("/v1/activate", {"x": [1], "function": "prelu"}, 400, "params['slope']: is required"),
    (
        "/v1/activate",
        {"x": [1, 2], "function": "prelu", "params": {"slope": [1, 2, 3]}},
        400,
        "params['slope']: shape [3] is not broadcastable",
    ),
    ("/v1/activate", {"x": {"base64": "AAAA", "shape": [2]}, "function": "relu"}, 400, "bytes"),
    ("/v1/activate", {"x": {"base64": "@@", "shape": [0]}, "function": "relu"}, 400, "base64"),
    ("/v1/activate", {"x": {"base64": "", "shape": [-1]}, "function": "relu"}, 400, "negative"),
    ("/v1/activate", {"x": {"base64": "", "shape": [1.5]}, "function": "relu"}, 400, "shape"),
    (
        "/v1/activate",
        b'{"x": {"base64": "", "shape": [1000000000000000000000000000000]}, "function": "relu"}',
        400,
        "x.shape: must be an array of integers",
    ),
    (
        "/v1/activate",
        {"x": {"base64": "", "shape": [2**40, 0]}, "function": "relu"},
        413,
        "x.shape",
    ),
    ("/v1/activate", {"x": {"base64": 3, "shape": []}, "function": "relu"}, 400, "x.base64"),
    ("/v1/activate", {"x": {"data": [1]}, "function": "relu"}, 400, "'data': unknown field"),
    (
        "/v1/activate",
        {"x": {"base64": "AAAAAAAAAAA=", "shape": [1], "dtype": "float32"}, "function": "relu"},
        400,
        "has 12 characters but shape [1] of float32 needs 8",
    ),
    ("/v1/gradient", {"x": [1, 2], "function": "tanh", "grad_output": [1]}, 400, "grad_output"),
    (
        "/v1/gradient",
        {"x": [1], "function": "tanh", "grad_output": b64(np.ones(1, np.float32))},
        400,
        "grad_output: dtype float32 differs",
    ),
    ("/v1/gradient", {"x": [1], "function": "tanh", "return_output": "yes"}, 400, "return_out"),
    ("/v1/dense", {"x": [1]}, 400, "weight: is required"),
    ("/v1/dense", {"x": 1, "weight": [[1]]}, 400, "x: must have at least one dimension"),
    ("/v1/dense", {"x": [1, 2], "weight": [[1]]}, 400, "weight: shape [1, 1]"),
    ("/v1/dense", {"x": [[1]] * 600, "weight": [[1], [1]]}, 413, "output: shape [600, 2]"),
    ("/v1/dense", {"x": [1], "weight": [[1]], "activation": "nope"}, 404, "nope"),
    ("/v1/dense", {"x": [1], "weight": [[1]], "params": {"alpha": 1}}, 400, "no activation"),
    ("/v1/dense_vjp", {"x": [1], "weight": [[1]], "grad_output": [1, 2]}, 400, "grad_output"),
    ("/v1/gradient_flow", {}, 400, "function: is required"),
    ("/v1/gradient_flow", {"function": "prelu"}, 400, "function: the probe"),
    ("/v1/gradient_flow", {"function": "tanh"}, 413, "depth: depth * batch * width"),
    ("/v1/gradient_flow", {"function": "tanh", "depth": 0}, 400, "depth: must be >= 1"),
    ("/v1/gradient_flow", b'{"function": "tanh", "depth": 1e40}', 400, "depth: must be <= 1000"),
    ("/v1/gradient_flow", {"function": "tanh", "width": -5}, 400, "width: must be >= 1"),
    (
        "/v1/gradient_flow",
        {"function": "tanh", "seed": -1, "depth": 1, "width": 2, "batch": 2},
        400,
        "seed",
    ),
    (
        "/v1/gradient_flow",
        {"function": "tanh", "init": "zero", "depth": 1, "width": 2, "batch": 2},
        400,
        "init:",
    ),
    (
        "/v1/gradient_flow",
        {"function": "tanh", "init_std": 0.1, "depth": 1, "width": 2, "batch": 2},
        400,
        "init_std",
    ),
    (
        "/v1/gradient_flow",
        {"function": "tanh", "dtype": "float16", "depth": 1, "width": 2, "batch": 2},
        400,
        "dtype",
    ),
    ("/v1/gradient_flow", {"function": "tanh", "params": 3}, 400, "params: must be"),
    (
        "/v1/gradient_flow",
        {"function": "elu", "params": {"alpha": [1]}, "depth": 1, "width": 2, "batch": 2},
        400,
        "'alpha'",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD)
def test_bad_requests_are_refused_with_the_field(
    app: Starlette, path: str, body: Any, status: int, message: str
) -> None:
    response = call(app, path, raw=body) if isinstance(body, bytes) else call(app, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    assert "Traceback" not in error


def test_a_body_over_the_limit_is_413(app: Starlette) -> None:
    response = call(app, "/v1/softmax", raw=b" " * (LIMITS.max_message_bytes + 1))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_random_json_never_gets_a_500(app: Starlette) -> None:
    rng = np.random.default_rng(0)
    atoms: list[Any] = [None, True, 0, -1, 1.5, 1e308, 2**62, "", "NaN", "x", [], {}, [1.0]]
    keys = [
        "x",
        "function",
        "params",
        "grad_output",
        "weight",
        "bias",
        "axis",
        "dtype",
        "activation",
        "depth",
        "width",
        "init",
        "encoding",
        "temperature",
        "log",
    ]

    def value(depth: int) -> Any:
        pick = rng.integers(0, 4 if depth < 3 else 1)
        if pick == 1:
            return [value(depth + 1) for _ in range(rng.integers(0, 3))]
        if pick == 2:
            return {str(rng.choice(keys)): value(depth + 1) for _ in range(rng.integers(0, 3))}
        return atoms[rng.integers(0, len(atoms))]

    for _ in range(150):
        body = {str(rng.choice(keys)): value(0) for _ in range(rng.integers(0, 5))}
        if rng.random() < 0.5:
            body["function"] = str(rng.choice(["relu", "prelu", "softmax", "elu"]))
        for path in OPENAPI_PATHS:
            if "{" in path or path == "/v1/functions":
                continue
            response = call(app, path, body)
            assert response.status_code in (200, 400, 404, 413), (path, body, response.text)


def test_every_route_is_in_the_openapi_paths(ops: Operations) -> None:
    served = {
        (r.path, m.lower()) for r in routes(ops) if isinstance(r, Route) for m in r.methods or ()
    }
    served = {(p, m) for p, m in served if m != "head"}
    described = {(p, m) for p, ops_ in OPENAPI_PATHS.items() for m in ops_}
    assert served == described


def test_the_openapi_document_is_valid() -> None:
    validator: Any = importlib.import_module("openapi_spec_validator")  # a dev pin
    document = {
        "openapi": "3.1.0",
        "info": {"title": "actgrad", "version": "test"},
        "paths": OPENAPI_PATHS,
        "components": OPENAPI_COMPONENTS,
    }
    validator.validate(document)


def test_the_openapi_defaults_are_the_owners() -> None:
    softmax = OPENAPI_PATHS["/v1/softmax"]["post"]["requestBody"]["content"]["application/json"]
    properties = softmax["schema"]["properties"]
    for param in catalog.SOFTMAX.params:
        assert properties[param.name]["default"] == param.default
    assert not math.isnan(catalog.SOFTMAX.params_by_name["temperature"].default)


README = Path(__file__).resolve().parents[2] / "README.md"
CURL = re.compile(r"^curl (?:-d '(?P<body>[^']*)' )?localhost:8000(?P<path>/v1/\S+)$", re.M)


def test_the_readmes_examples_answer(ops: Operations) -> None:
    # The served limits, not this file's small ones: the probe's defaults need them.
    app = Starlette(routes=routes(Operations(ops.engine, Settings().limits)))
    examples = CURL.findall(README.read_text(encoding="utf-8"))
    verbs = {path for _, path in examples}
    assert verbs == {p for p in OPENAPI_PATHS if "{" not in p}, "an example per verb"
    for body, path in examples:
        response = call(app, path, raw=body.encode()) if body else call(app, path, method="GET")
        assert response.status_code == 200, (path, response.text)
    seed = call(app, "/v1/softmax", raw=b'{"x": [2, 1, 0.1]}').text
    assert f"# {seed}" in README.read_text(encoding="utf-8")
