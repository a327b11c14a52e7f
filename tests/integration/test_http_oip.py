"""The Open Inference Protocol's REST binding against a real server (HTTP on port 0).

Triton's own HTTP client (`tritonclient.http`) for metadata, readiness, the
configuration, the repository index, statistics and inference of every model in every
served datatype, as JSON and with Triton's binary tensor extension; the results must
equal actgrad.v1's for the same call (one engine behind every front end). httpx for
what a client library would never send: the errors, each a 4xx with the protocol's
``{"error": ...}`` body, never a 500, the server answering throughout.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from _common import TEST_SETTINGS
from _oip_cases import PARAMS, model_arrays, v1_answers
from tritonclient.utils import InferenceServerException

from actgrad import Client
from actgrad_server.app import ActgradServer
from actgrad_server.oip import model_table as models

DTYPES = {
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "FP16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
# tritonclient sends BF16 only as binary data (JSON has no bfloat16).
CASES = [
    (model, datatype, binary)
    for model in models.MODELS
    for datatype in DTYPES
    for binary in (True, False)
    if binary or datatype != "BF16"
]


@pytest.fixture(scope="module")
def http_url(server: ActgradServer) -> str:
    assert server.http_port
    return f"127.0.0.1:{server.http_port}"


@pytest.fixture(scope="module")
def triton_client(http_url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(http_url, network_timeout=60.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def http(http_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{http_url}", timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(server: ActgradServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=30.0) as client:
        yield client


# -- tritonclient.http ---------------------------------------------------------------


def test_server_metadata_and_health(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "actgrad"
    assert {"binary_tensor_data", "statistics", "model_configuration"} <= set(
        metadata["extensions"]
    )


def test_model_metadata_config_and_readiness(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_model_ready("gelu")
    assert triton_client.is_model_ready("silu_grad")  # an alias
    assert triton_client.is_model_ready("gelu", "1")
    assert not triton_client.is_model_ready("no_such_model")
    metadata = triton_client.get_model_metadata("prelu_grad")
    assert metadata["name"] == "prelu_grad" and metadata["versions"] == ["1"]
    assert [t["name"] for t in metadata["inputs"]] == ["x", "grad_output", "slope"]
    assert [t["name"] for t in metadata["outputs"]] == ["grad_input", "grad_slope"]
    assert metadata["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1]}
    assert metadata["parameters"]["datatypes"] == "FP32,FP64,FP16,BF16"
    config = triton_client.get_model_config("prelu_grad")
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 0
    assert config["input"][1] == {
        "name": "grad_output",
        "data_type": "TYPE_FP32",
        "dims": [-1],
        "optional": True,
    }
    assert config["parameters"]["max_rank"] == {"string_value": str(TEST_SETTINGS.max_rank)}
    with pytest.raises(InferenceServerException) as info:
        triton_client.get_model_metadata("no_such_model")
    assert info.value.status() == "404" and "no_such_model" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton_client.get_model_metadata("gelu", "2")
    assert info.value.status() == "404"


def test_repository_index(triton_client: triton.InferenceServerClient) -> None:
    index = triton_client.get_model_repository_index()
    assert [entry["name"] for entry in index] == [m.name for m in models.MODELS]
    assert {entry["state"] for entry in index} == {"READY"}


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{m.name}-{d}-{'binary' if b else 'json'}" for m, d, b in CASES]
)
def test_infer_equals_actgrad_v1(
    triton_client: triton.InferenceServerClient,
    sdk: Client,
    case: tuple[models.Model, str, bool],
) -> None:
    model, datatype, binary = case
    arrays = model_arrays(model, DTYPES[datatype])
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in model.outputs]
    result = triton_client.infer(
        model.name,
        inputs,
        outputs=outputs,
        parameters=PARAMS.get(model.function.name),
        request_id="case-1",
    )
    response = result.get_response()
    assert response["model_name"] == model.name and response["id"] == "case-1"
    for name, want in v1_answers(sdk, model, arrays).items():
        got = result.as_numpy(name)
        if datatype == "BF16":  # tritonclient reads BF16 outputs as float32
            got = got.astype(want.dtype)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_outputs_binary_by_default_and_by_choice(
    triton_client: triton.InferenceServerClient, sdk: Client
) -> None:
    arrays = model_arrays(models.lookup_model("prelu_grad"), np.dtype(np.float32))
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    want = v1_answers(sdk, models.lookup_model("prelu_grad"), arrays)
    # No outputs named: every output, binary (tritonclient asks binary_data_output).
    result = triton_client.infer("prelu_grad", inputs)
    assert {o["name"] for o in result.get_response()["outputs"]} == set(want)
    # One output, as JSON.
    result = triton_client.infer(
        "prelu_grad", inputs, outputs=[triton.InferRequestedOutput("grad_slope", False)]
    )
    [only] = result.get_response()["outputs"]
    assert only["name"] == "grad_slope" and "data" in only
    np.testing.assert_array_equal(result.as_numpy("grad_slope"), want["grad_slope"])


def test_statistics_are_shared_with_grpc(
    triton_client: triton.InferenceServerClient, server: ActgradServer
) -> None:
    def count() -> int:
        stats = triton_client.get_inference_statistics("tanh_grad")["model_stats"]
        return int(stats[0]["inference_count"])

    before = count()
    x = np.ones((4,), dtype=np.float32)
    tensor = triton.InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(x)
    triton_client.infer("tanh_grad", [tensor])
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.port}") as grpc_client:
        grpc_tensor = triton_grpc.InferInput("x", [4], "FP32")
        grpc_tensor.set_data_from_numpy(x)
        grpc_client.infer("tanh_grad", [grpc_tensor])
        grpc_stats = grpc_client.get_inference_statistics("tanh_grad", as_json=True)
    assert count() == before + 2
    assert int(grpc_stats["model_stats"][0]["inference_count"]) == before + 2
    every = triton_client.get_inference_statistics()["model_stats"]
    assert len(every) == len(models.MODELS)
    stats = triton_client.get_inference_statistics("tanh_grad", "1")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == stats["inference_count"]
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0


def test_errors_reach_tritonclient_with_their_status(
    triton_client: triton.InferenceServerClient,
) -> None:
    tensor = triton.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.ones(2, dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton_client.infer("leaky_relu", [tensor], parameters={"alpha": "much"})
    assert info.value.status() == "400" and "alpha" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton_client.infer("nope", [tensor])
    assert info.value.status() == "404"


# -- raw HTTP: what a client library would not send ------------------------------------


def _request(x: Any, datatype: str = "FP32", shape: Any = None, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": datatype, "shape": [3] if shape is None else shape}
    tensor["data"] = x
    return {"inputs": [tensor], **extra}


def test_json_data_flat_or_nested_and_parameters(http: httpx.Client, sdk: Client) -> None:
    x = [[-1.0, 0.5], [2.0, 3.0]]
    want = sdk.activate(np.array(x, dtype=np.float64), "leaky_relu", alpha=0.3)
    for data in (x, [-1.0, 0.5, 2.0, 3.0]):
        answer = http.post(
            "/v2/models/leaky_relu/infer",
            json=_request(data, "FP64", [2, 2], parameters={"alpha": 0.3}, id="r1"),
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["id"] == "r1" and body["model_version"] == "1"
        [y] = body["outputs"]
        assert y["shape"] == [2, 2] and y["datatype"] == "FP64"
        np.testing.assert_array_equal(np.array(y["data"]).reshape(2, 2), want)


def test_binary_request_and_response_by_hand(http: httpx.Client, sdk: Client) -> None:
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [8],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    answer = http.post(
        "/v2/models/sigmoid/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "a/b"},
    )
    assert answer.status_code == 200, answer.text
    split = int(answer.headers["Inference-Header-Content-Length"])
    document = orjson.loads(answer.content[:split])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": x.nbytes}
    y = np.frombuffer(answer.content[split:], dtype=np.float32)
    np.testing.assert_array_equal(y, sdk.activate(x, "sigmoid"))


def _body(
    tensor: str = '"data":[1]', shape: str = "[1]", datatype: str = "FP32", **top: str
) -> bytes:
    """A request of one input x, written as JSON text so that it may be anything."""
    fields = [f'"inputs":[{{"name":"x","datatype":"{datatype}","shape":{shape},{tensor}}}]']
    fields += [f'"{key}":{value}' for key, value in top.items()]
    return ("{" + ",".join(fields) + "}").encode()


_SHORT = _body('"parameters":{"binary_data_size":12}', "[2]")
_HEADER = "Inference-Header-Content-Length"
BAD_BODIES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("not json", b"{inputs", {}, "body: not valid JSON"),
    ("NaN token", _body('"data":[NaN]'), {}, "JSON"),
    ("Infinity", _body('"data":[Infinity]'), {}, "JSON"),
    ("huge number", _body('"data":[1e999]'), {}, "JSON"),
    ("huge integer", _body('"data":[' + "9" * 400 + "]"), {}, "JSON"),
    ("deep nesting", b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", {}, "JSON"),
    ("not an object", b"[1, 2]", {}, "body: must be a JSON object"),
    ("empty body", b"", {}, "body: not valid JSON"),
    ("no inputs", b"{}", {}, "inputs: must be an array"),
    ("input not object", b'{"inputs":[3]}', {}, "inputs[0]: must be an object"),
    ("no name", b'{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}', {}, "inputs[0].name"),
    ("bad datatype", _body(datatype="INT8"), {}, "inputs[0].datatype"),
    ("shape not ints", _body(shape='["1"]'), {}, "inputs[0].shape"),
    ("shape bool", _body(shape="[true]"), {}, "inputs[0].shape"),
    ("negative dim", _body(shape="[-2]"), {}, "inputs[0].shape"),
    ("rank over limit", _body(shape=str([1] * 40)), {}, "inputs[0].shape"),
    ("elements over limit", _body(shape="[100000000]"), {}, "inputs[0].shape"),
    ("count mismatch", _body('"data":[1,2]', "[3]"), {}, "inputs[0].data"),
    ("nesting mismatch", _body('"data":[[1,2,3,4]]', "[2,2]"), {}, "inputs[0].data"),
    ("ragged", _body('"data":[[1,2],[3]]', "[3]"), {}, "inputs[0].data"),
    ("strings", _body('"data":["1"]'), {}, "inputs[0].data"),
    ("nulls", _body('"data":[null]'), {}, "inputs[0].data"),
    ("no data", _body('"parameters":{}'), {}, "inputs[0].data"),
    ("unknown input", _body().replace(b'"x"', b'"z"'), {}, "inputs[0].name"),
    ("unknown output", _body(outputs='[{"name":"q"}]'), {}, "outputs[0].name"),
    ("param object", _body(parameters='{"alpha":{}}'), {}, "parameters['alpha']"),
    ("params not object", _body(parameters="[1]"), {}, "parameters: must be an object"),
    ("id not string", _body(id="3"), {}, "id:"),
    ("header length words", b"{}", {_HEADER: "many"}, _HEADER),
    ("header length too long", b"{}", {_HEADER: "99"}, _HEADER),
    ("binary short", _SHORT + b"\0\0", {_HEADER: str(len(_SHORT))}, "binary_data_size"),
    ("binary size wrong", _SHORT + b"\0" * 12, {_HEADER: str(len(_SHORT))}, "(binary data)"),
    ("binary leftover", _body() + b"\0" * 4, {_HEADER: str(len(_body()))}, "not claimed"),
    ("form content", _body('"data":["a"]'), {"Content-Type": "text/plain"}, "inputs[0].data"),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_requests_are_400_naming_the_field(
    http: httpx.Client, case: tuple[str, bytes, dict[str, str], str]
) -> None:
    _, body, headers, named = case
    answer = http.post("/v2/models/leaky_relu/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert named in error and "Traceback" not in error
    assert http.get("/v2/health/ready").status_code == 200


def test_statuses_of_routes_and_models(http: httpx.Client) -> None:
    assert http.get("/v2/models/nope").status_code == 404
    assert http.post("/v2/models/nope/infer", json=_request([1, 2, 3])).status_code == 404
    assert http.get("/v2/models/gelu/versions/7/ready").status_code == 404
    answer = http.get("/v2/no/such/route")
    assert answer.status_code == 404 and "error" in answer.json()
    answer = http.get("/v2/models/gelu/infer")
    assert answer.status_code == 405 and "error" in answer.json()
    answer = http.post("/v2/repository/index", content=b"[")
    assert answer.status_code == 400
    answer = http.post("/v2/repository/index", json={"ready": "yes"})
    assert answer.status_code == 400


def test_a_body_over_the_limit_is_413(http: httpx.Client) -> None:
    limit = TEST_SETTINGS.max_message_bytes
    answer = http.post("/v2/models/gelu/infer", content=b" " * (limit + 1))
    assert answer.status_code == 413 and "max-message-bytes" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(limit // (1 << 20) + 1):
            yield b" " * (1 << 20)

    answer = http.post("/v2/models/gelu/infer", content=chunks())
    assert answer.status_code == 413
    assert http.get("/v2/health/ready").status_code == 200


def test_request_id_in_and_out(http: httpx.Client) -> None:
    answer = http.get("/v2", headers={"X-Request-Id": "trace-me-7"})
    assert answer.headers["x-request-id"] == "trace-me-7"
    answer = http.get("/v2", headers={"X-Request-Id": "x" * 500})
    assert len(answer.headers["x-request-id"]) == 32  # too long: a new one


def test_openapi_document_lists_every_route(http: httpx.Client, server: ActgradServer) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    paths = set(document["paths"])
    assert server.http is not None
    for route in server.http.app.routes.routes:
        path = getattr(route, "path", "")
        if path != "/openapi.json":
            assert path in paths, path


def _mutations(seed: int, count: int) -> Iterator[tuple[bytes, dict[str, str]]]:
    """Seeded mutations of good requests: bytes flipped, cut, repeated, and values
    swapped for other JSON values, with and without the binary extension's header."""
    rng = np.random.default_rng(seed)
    good = _request([1.0, -2.0, 3.5], parameters={"alpha": 0.3}, outputs=[{"name": "y"}])
    values: list[Any] = [None, True, -1, 0, 2**70, 1e308, "x", "", [], {}, [[[]]], [1] * 70]
    for _ in range(count):
        kind = rng.integers(4)
        if kind == 0:  # a JSON value replaced somewhere
            request = orjson.loads(orjson.dumps(good))
            tensor = request["inputs"][0]
            key = ["name", "datatype", "shape", "data", "parameters"][rng.integers(5)]
            tensor[key] = values[rng.integers(len(values))]
            body = json.dumps(request).encode()
        else:
            body = bytearray(orjson.dumps(good))
            position = int(rng.integers(len(body)))
            if kind == 1:
                body[position] = int(rng.integers(256))
            elif kind == 2:
                del body[position:]
            else:
                body[position:position] = body[: int(rng.integers(1, 40))]
            body = bytes(body)
        headers = {}
        if rng.integers(4) == 0:
            headers["Inference-Header-Content-Length"] = str(int(rng.integers(-1, len(body) + 2)))
        yield body, headers


def test_fuzzed_requests_are_never_a_500(http: httpx.Client) -> None:
    statuses: dict[int, int] = {}
    for body, headers in _mutations(seed=21, count=400):
        answer = http.post("/v2/models/leaky_relu/infer", content=body, headers=headers)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (body, headers, answer.text)
        if answer.status_code != 200:
            assert "Traceback" not in answer.text and "error" in answer.json()
    assert statuses.get(400, 0) > 100, statuses
    assert http.get("/v2/health/ready").status_code == 200


def test_a_deeply_nested_data_array_is_400(http: httpx.Client) -> None:
    data: Any = [1.0]
    for _ in range(80):
        data = [data]
    answer = http.post("/v2/models/relu/infer", json=_request(data, shape=[1]))
    assert answer.status_code == 400 and "inputs[0].data" in answer.json()["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_from_tritonclient(
    triton_client: triton.InferenceServerClient, sdk: Client, algorithm: str
) -> None:
    x = np.linspace(-2, 2, 1000, dtype=np.float32)
    tensor = triton.InferInput("x", [1000], "FP32")
    tensor.set_data_from_numpy(x)
    result = triton_client.infer("gelu", [tensor], request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("y"), sdk.activate(x, "gelu"))


def test_bad_compressed_requests_are_4xx(http: httpx.Client) -> None:
    url = "/v2/models/relu/infer"
    body = orjson.dumps(_request([1.0, 2.0, 3.0]))
    answer = http.post(url, content=body, headers={"Content-Encoding": "br"})
    assert answer.status_code == 415 and "Content-Encoding" in answer.json()["error"]
    answer = http.post(url, content=body, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "gzip" in answer.json()["error"]
    answer = http.post(url, content=gzip.compress(body)[:-12], headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400 and "truncated" in answer.json()["error"]
    bomb = gzip.compress(b" " * (TEST_SETTINGS.max_message_bytes + 1))  # a few KiB
    answer = http.post(url, content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "inflated" in answer.json()["error"]
    ok = http.post(url, content=gzip.compress(body), headers={"Content-Encoding": "GZIP"})
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]
