"""The Open Inference Protocol's REST binding (KServe v2 / Triton): JSON -> DataPlane.

Each route converts its request into the plain values of `oip.dataplane`, calls the
one DataPlane of the process (shared with the gRPC front end, and so its statistics),
and writes the result as the protocol's JSON, as `tritonclient.http` and curl expect.
Inference takes tensors as JSON numbers (`data` flat or nested as `shape`) or with
Triton's binary tensor extension: the body is the JSON header
(`Inference-Header-Content-Length` bytes) followed by each binary input's bytes
(`parameters.binary_data_size`), and outputs come back binary when the request asks
(`binary_data_output`, or an output's `binary_data`). Decoding and computing run on
the front end's thread pool, never on the event loop.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actgrad_server.errors import InvalidArgument, shown
from actgrad_server.http.responses import (
    HttpError,
    error_response,
    json_response,
    parse_json,
)
from actgrad_server.http.runner import Runner
from actgrad_server.oip import dataplane as dp
from actgrad_server.oip import model_table as models

__all__ = ["HEADER_LENGTH", "OPENAPI_COMPONENTS", "OPENAPI_PATHS", "OipRoutes"]

#: Triton's binary tensor extension: the JSON header's length in the body.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Extensions served over REST: the core's, and the binary tensor data of this binding.
EXTENSIONS = (*dp.EXTENSIONS, "binary_tensor_data")
_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
# Triton's ModelConfig datatype names.
_CONFIG_TYPES = {name: f"TYPE_{name}" for name in models.DATATYPES}
_NOT_READY = "the server is not ready (warming up or draining)"

Array = npt.NDArray[Any]
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Awaitable[Response]])


def _answers(endpoint: _Endpoint) -> _Endpoint:
    """Turns whatever an endpoint raises into the protocol's error answer."""

    @wraps(endpoint)
    async def wrapper(self: OipRoutes, request: Request) -> Response:
        try:
            return await endpoint(self, request)
        except Exception as exc:
            return error_response(exc, f"{request.method} {request.url.path}")

    return wrapper  # type: ignore[return-value]


class OipRoutes:
    """The REST routes over one DataPlane; `run` runs a function on the front end's pool
    (or inline, for a small request: `Runner.small`)."""

    def __init__(self, plane: dp.DataPlane, run: Runner, *, max_body_bytes: int) -> None:
        self._plane = plane
        self._run = run
        self._max_body = max_body_bytes

    def routes(self) -> list[BaseRoute]:
        model = "/v2/models/{model_name}"
        version = "/v2/models/{model_name}/versions/{model_version}"
        table: list[BaseRoute] = [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/models/stats", self.statistics, methods=["GET"]),
        ]
        for prefix in (model, version):
            table += [
                Route(prefix, self.model_metadata, methods=["GET"]),
                Route(f"{prefix}/ready", self.model_ready, methods=["GET"]),
                Route(f"{prefix}/config", self.model_config, methods=["GET"]),
                Route(f"{prefix}/stats", self.statistics, methods=["GET"]),
                Route(f"{prefix}/infer", self.infer, methods=["POST"]),
            ]
        return table

    # -- health and metadata ----------------------------------------------------

    @_answers
    async def server_metadata(self, request: Request) -> Response:
        metadata = self._plane.server_metadata()
        return json_response(
            {"name": metadata.name, "version": metadata.version, "extensions": EXTENSIONS}
        )

    @_answers
    async def live(self, request: Request) -> Response:
        return json_response({"live": self._plane.server_live()})

    @_answers
    async def ready(self, request: Request) -> Response:
        if self._plane.server_ready():
            return json_response({"ready": True})
        return json_response({"ready": False, "error": _NOT_READY}, 503, {"Retry-After": "1"})

    @_answers
    async def model_ready(self, request: Request) -> Response:
        name, version = _model_of(request)
        if self._plane.model_ready(name, version):
            return json_response({"name": name, "ready": True})
        return json_response(
            {"name": name, "ready": False, "error": _NOT_READY}, 503, {"Retry-After": "1"}
        )

    @_answers
    async def model_metadata(self, request: Request) -> Response:
        metadata = self._plane.model_metadata(*_model_of(request))
        return json_response(
            {
                "name": metadata.name,
                "versions": list(metadata.versions),
                "platform": metadata.platform,
                "inputs": [_tensor_metadata(t) for t in metadata.inputs],
                "outputs": [_tensor_metadata(t) for t in metadata.outputs],
                # Not in Triton's metadata (its gRPC message has no room for them); the
                # REST binding has, as MLServer's: what the model accepts beyond FP32/[-1].
                "parameters": dict(metadata.parameters),
            }
        )

    @_answers
    async def model_config(self, request: Request) -> Response:
        config = self._plane.model_config(*_model_of(request))
        # Triton's JSON form of its ModelConfig message (snake_case names, dims as numbers).
        return json_response(
            {
                "name": config.name,
                "platform": models.PLATFORM,
                "backend": config.backend,
                "max_batch_size": config.max_batch_size,
                "default_model_filename": config.default_model_filename,
                "input": [
                    {
                        "name": t.name,
                        "data_type": _CONFIG_TYPES[t.datatype],
                        "dims": list(t.dims),
                        "optional": t.optional,
                    }
                    for t in config.inputs
                ],
                "output": [
                    {"name": t.name, "data_type": _CONFIG_TYPES[t.datatype], "dims": list(t.dims)}
                    for t in config.outputs
                ],
                "parameters": {k: {"string_value": v} for k, v in config.parameters.items()},
            }
        )

    @_answers
    async def repository_index(self, request: Request) -> Response:
        body = await request.body()
        ready_only = False
        if body.strip():
            document = parse_json(body)
            if not isinstance(document, dict):
                raise HttpError(400, "body: must be a JSON object")
            ready_only = document.get("ready", False)
            if not isinstance(ready_only, bool):
                raise HttpError(400, "ready: must be true or false")
        return json_response(
            [
                {
                    "name": entry.name,
                    "version": entry.version,
                    "state": entry.state,
                    **({"reason": entry.reason} if entry.reason else {}),
                }
                for entry in self._plane.repository_index(ready_only=ready_only)
            ]
        )

    @_answers
    async def statistics(self, request: Request) -> Response:
        name, version = _model_of(request)
        return json_response(
            {
                "model_stats": [
                    _statistics(stats) for stats in self._plane.model_statistics(name, version)
                ]
            }
        )

    # -- inference --------------------------------------------------------------

    @_answers
    async def infer(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        name, version = _model_of(request)
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        encoding = request.headers.get("content-encoding")
        content, headers = await self._run.small(
            len(body), self._infer, name, version, body, header_length, encoding, started
        )
        return Response(content, headers=headers)

    def _infer(
        self,
        name: str,
        version: str,
        body: bytes,
        header_length: str | None,
        encoding: str | None,
        started: int,
    ) -> tuple[bytes, dict[str, str]]:
        try:
            body = _decompressed(body, encoding, self._max_body)
            request, binary_output = _request(self._plane, name, version, body, header_length)
        except (HttpError, InvalidArgument):
            self._plane.decode_failed(name, version, started)
            raise
        result = self._plane.infer(
            dp.InferRequest(
                model_name=name,
                model_version=version,
                id=request.id,
                inputs=request.inputs,
                parameters=request.parameters,
                outputs=request.outputs,
                started_ns=started,
            )
        )
        return _response(result, request.outputs, binary_output)


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    id: str
    inputs: list[dp.InferInput]
    parameters: dict[str, dp.ParameterValue | None]
    outputs: list[dp.RequestedOutput]


def _decompressed(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body of a compressed request (tritonclient's request_compression_algorithm:
    gzip or deflate, which is zlib's format), at most `limit` bytes once inflated."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise HttpError(
            415, f"Content-Encoding: {shown(encoding)} is not served (gzip, deflate, identity)"
        )
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"body: not valid {kind} data ({exc})") from None
    if len(data) > limit:
        raise HttpError(
            413,
            f"body: over the server's limit of {limit} bytes once inflated (--max-message-bytes)",
        )
    if not inflater.eof:
        raise HttpError(400, f"body: truncated {kind} data")
    return data


def _model_of(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params.get("model_name", ""), params.get("model_version", "")


def _request(
    plane: dp.DataPlane, name: str, version: str, body: bytes, header_length: str | None
) -> tuple[_Decoded, bool]:
    """The request of a body (JSON, or JSON then binary tensors), and whether outputs
    come back binary by default (`binary_data_output`)."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[:0]
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise HttpError(
                400,
                f"{HEADER_LENGTH}: {shown(header_length)} is not a length within the body "
                f"({len(body)} bytes)",
            )
        split = int(header_length)
        header, binary = view[:split], view[split:]
    document = parse_json(header, "body" if header_length is None else "the JSON header")
    if not isinstance(document, dict):
        raise HttpError(400, "body: must be a JSON object (an inference request)")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("id: must be a string")
    parameters = _parameters(document.get("parameters"), "parameters")
    binary_output = parameters.pop("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidArgument("parameters['binary_data_output']: must be true or false")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidArgument("inputs: must be an array of tensors")
    inputs = []
    offset = 0
    for index, tensor in enumerate(raw_inputs):
        decoded, used = _input(plane, tensor, index, binary[offset:])
        inputs.append(decoded)
        offset += used
    if offset != len(binary):
        raise InvalidArgument(
            f"body: {len(binary) - offset} bytes after the JSON header are not claimed by "
            "any input's binary_data_size"
        )
    raw_outputs = document.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidArgument("outputs: must be an array")
    outputs = []
    for index, output in enumerate(raw_outputs):
        where = f"outputs[{index}]"
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidArgument(f"{where}.name: required, a string")
        outputs.append(
            dp.RequestedOutput(
                output["name"], _values(_parameters(output.get("parameters"), where))
            )
        )
    return _Decoded(request_id, inputs, parameters, outputs), binary_output


def _parameters(raw: Any, where: str) -> dict[str, dp.ParameterValue | None]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: must be an object of parameters")
    for name, value in raw.items():
        if value is not None and not isinstance(value, bool | int | float | str):
            raise InvalidArgument(f"{where}[{shown(name)}]: must be a boolean, number or string")
    return dict(raw)


def _input(
    plane: dp.DataPlane, tensor: Any, index: int, binary: memoryview
) -> tuple[dp.InferInput, int]:
    """One input and how many bytes of the binary part it took."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidArgument(f"{where}: must be an object (name, datatype, shape, data)")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InvalidArgument(f"{where}.name: required, a string")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidArgument(f"{where}.datatype: required, a string (FP32, FP64, FP16, BF16)")
    dtype = plane.input_dtype(datatype, f"{where}.datatype")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidArgument(f"{where}.shape: required, an array of integers")
    count = plane.check_input_shape(shape, f"{where}.shape")
    parameters = _parameters(tensor.get("parameters"), f"{where}.parameters")
    size = parameters.pop("binary_data_size", None)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{where}.parameters['binary_data_size']: must be a byte count")
        if "data" in tensor:
            raise InvalidArgument(f"{where}.data: must be absent with binary_data_size")
        if size > len(binary):
            raise InvalidArgument(
                f"{where}.parameters['binary_data_size']: {size} bytes, but only "
                f"{len(binary)} follow the JSON header"
            )
        # A view of the body's bytes where they start at a multiple of the item size;
        # else (the JSON header before them has any length) copied once, as bytes: a
        # memcpy, where numpy copies an unaligned array value by value.
        raw = binary[:size]
        field = f"{where} (binary data)"
        data = plane.from_bytes(raw, datatype, dtype, shape, field)
        if not data.flags.aligned:
            data = plane.from_bytes(bytes(raw), datatype, dtype, shape, field)
        return dp.InferInput(name, data, _values(parameters)), size
    if "data" not in tensor:
        raise InvalidArgument(f"{where}.data: required (or parameters.binary_data_size)")
    data = _numbers(tensor["data"], dtype, tuple(shape), count, f"{where}.data")
    return dp.InferInput(name, data, _values(parameters)), 0


def _values(parameters: Mapping[str, dp.ParameterValue | None]) -> dict[str, dp.ParameterValue]:
    return {k: v for k, v in parameters.items() if v is not None}


def _numbers(
    data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], count: int, where: str
) -> Array:
    """JSON numbers, flat or nested as `shape`, as an array of `dtype` in `shape`."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(f"{where}: must be numbers, flat or nested as the shape") from None
    if array.dtype.kind not in "iuf":
        raise InvalidArgument(f"{where}: must be numbers, flat or nested as the shape")
    if array.ndim > 1 and array.shape != shape:
        raise InvalidArgument(
            f"{where}: nested as {list(array.shape)}, but the shape is {list(shape)}"
        )
    if array.size != count:
        raise InvalidArgument(
            f"{where}: has {array.size} values but shape {list(shape)} needs {count}"
        )
    # Numbers beyond the datatype's range become infinities, as in a C cast.
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(dtype).reshape(shape)


# -- responses --------------------------------------------------------------------


def _response(
    result: dp.InferResponse, requested: list[dp.RequestedOutput], binary_output: bool
) -> tuple[bytes, dict[str, str]]:
    binary_by_name = {
        o.name: o.parameters["binary_data"]
        for o in requested
        if isinstance(o.parameters.get("binary_data"), bool)
    }
    outputs = []
    blobs: list[memoryview] = []
    for output in result.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if binary_by_name.get(output.name, binary_output):
            # The array's own bytes, copied once: into the answer's body below.
            blob = np.ascontiguousarray(output.data).reshape(-1).view(np.uint8)
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob.data)
        else:
            flat = output.data.reshape(-1)
            if flat.dtype.itemsize < 4:  # FP16, BF16: orjson writes float32 and up
                flat = flat.astype(np.float32)
            entry["data"] = flat
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
    }
    if result.id:
        document["id"] = result.id
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *blobs]), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def _tensor_metadata(tensor: dp.TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _statistics(stats: dp.ModelStatistics) -> dict[str, Any]:
    durations = {}
    for name in _DURATIONS:
        duration: dp.StatisticDuration = getattr(stats.inference_stats, name)
        durations[name] = {"count": duration.count, "ns": duration.ns}
    return {
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": durations,
        "batch_stats": [],
    }


# -- OpenAPI ----------------------------------------------------------------------

_ERROR = {"$ref": "#/components/schemas/OipError"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


_ERRORS = {
    "400": _answer("a bad request; the message names the field", _ERROR),
    "401": _answer("a missing or wrong bearer token (with --auth-token-file)", _ERROR),
    "404": _answer("an unknown model or version", _ERROR),
    "503": _answer("draining or warming up (Retry-After)", _ERROR),
}
_MODEL_PARAMS = [
    {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}},
]
_VERSION_PARAMS = [
    *_MODEL_PARAMS,
    {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}},
]


def _get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["Open Inference Protocol"],
        "summary": summary,
        "responses": {"200": _answer("OK", schema), **_ERRORS},
    }
    if params:
        operation["parameters"] = params
    return {"get": operation}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata", _ref("ServerMetadata"), []),
        "/v2/health/live": _get("Liveness: 200 whenever the server answers", _ref("Live"), []),
        "/v2/health/ready": _get("Readiness: 200 when serving, 503 otherwise", _ref("Ready"), []),
        "/v2/repository/index": {
            "post": {
                "tags": ["Open Inference Protocol"],
                "summary": "Every model with its state (Triton's repository index)",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"ready": {"type": "boolean"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _answer("OK", {"type": "array", "items": _ref("RepositoryEntry")}),
                    **_ERRORS,
                },
            }
        },
        "/v2/models/stats": _get("Every model's statistics", _ref("Statistics"), []),
    }
    for prefix, params in (
        ("/v2/models/{model_name}", _MODEL_PARAMS),
        ("/v2/models/{model_name}/versions/{model_version}", _VERSION_PARAMS),
    ):
        paths[prefix] = _get("Model metadata", _ref("ModelMetadata"), params)
        paths[f"{prefix}/ready"] = _get("Model readiness (200 or 503)", _ref("ModelReady"), params)
        paths[f"{prefix}/config"] = _get(
            "Model configuration (Triton's)", {"type": "object"}, params
        )
        paths[f"{prefix}/stats"] = _get("Model statistics", _ref("Statistics"), params)
        paths[f"{prefix}/infer"] = {
            "post": {
                "tags": ["Open Inference Protocol"],
                "summary": "Inference: JSON tensors, or Triton's binary tensor extension",
                "parameters": [
                    *params,
                    {
                        "name": HEADER_LENGTH,
                        "in": "header",
                        "required": False,
                        "description": "binary extension: the JSON header's length in bytes; "
                        "the binary inputs follow it in the body",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("InferRequest")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "the outputs (binary ones after the JSON header, whose "
                        f"length is in {HEADER_LENGTH})",
                        "content": {
                            "application/json": {"schema": _ref("InferResponse")},
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **_ERRORS,
                    "413": _answer("a body over --max-message-bytes", _ERROR),
                },
            }
        }
    return paths


_PARAMETERS = {
    "type": "object",
    "additionalProperties": {"type": ["boolean", "number", "string"]},
}
_TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_DURATION = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}},
}
_NUMBERS = {"oneOf": [{"type": "number"}, {"type": "array"}]}

OPENAPI_COMPONENTS: dict[str, Any] = {
    "schemas": {
        "OipError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "TensorMetadata": _TENSOR_METADATA,
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "RepositoryEntry": {
            "type": "object",
            "required": ["name", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string", "enum": [dp.READY, dp.UNAVAILABLE]},
                "reason": {"type": "string"},
            },
        },
        "Statistics": {
            "type": "object",
            "properties": {
                "model_stats": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "last_inference": {"type": "integer"},
                            "inference_count": {"type": "integer"},
                            "execution_count": {"type": "integer"},
                            "inference_stats": {
                                "type": "object",
                                "properties": {name: _DURATION for name in _DURATIONS},
                            },
                            "batch_stats": {"type": "array"},
                        },
                    },
                }
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": _PARAMETERS,
                "inputs": {
                    "type": "array",
                    "items": {
                        **_TENSOR_METADATA,
                        "properties": {
                            **_TENSOR_METADATA["properties"],  # type: ignore[dict-item]
                            "parameters": _PARAMETERS,
                            "data": _NUMBERS,
                        },
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        **_TENSOR_METADATA,
                        "properties": {
                            **_TENSOR_METADATA["properties"],  # type: ignore[dict-item]
                            "parameters": _PARAMETERS,
                            "data": {"type": "array", "items": {"type": ["number", "null"]}},
                        },
                    },
                },
            },
        },
    }
}

OPENAPI_PATHS: dict[str, Any] = _paths()
