"""Triton's Python client (sync and asyncio) against a real actgrad server.

Every function and gradient, in float32 and float64, through `InferInput.
set_data_from_numpy` / `as_numpy`, must equal what actgrad.v1 returns for the same
call (one engine behind both protocols: the results are bitwise identical).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from _oip_cases import PARAMS, model_arrays, v1_answers
from tritonclient.utils import InferenceServerException

from actgrad import Client
from actgrad_server import catalog
from actgrad_server.app import ActgradServer
from actgrad_server.oip import grpc_predict_v2_pb2 as pb
from actgrad_server.oip import grpc_predict_v2_pb2_grpc
from actgrad_server.oip import model_table as models

DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}
CASES = [(m, d) for m in models.MODELS for d in DTYPES]


def _ids(case: tuple[models.Model, np.dtype[Any]]) -> str:
    return f"{case[0].name}-{case[1].name}"


def _inputs(arrays: dict[str, np.ndarray[Any, Any]], module: Any) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), DTYPES[array.dtype])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _check(result: Any, expected: dict[str, np.ndarray[Any, Any]]) -> None:
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got is not None, name
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.fixture(scope="module")
def target(server: ActgradServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def v1(target: str) -> Iterator[Client]:
    with Client(target, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def sync_client(target: str) -> Iterator[Any]:
    client = triton.InferenceServerClient(target)
    try:
        yield client
    finally:
        client.close()


def test_health_and_metadata_sync(sync_client: Any) -> None:
    assert sync_client.is_server_live()
    assert sync_client.is_server_ready()
    assert sync_client.is_model_ready("gelu_grad")
    server = sync_client.get_server_metadata()
    assert server.name == "actgrad"
    metadata = sync_client.get_model_metadata("prelu")
    assert metadata.name == "prelu" and list(metadata.versions) == ["1"]
    assert [t.name for t in metadata.inputs] == ["x", "slope"]
    assert [t.name for t in metadata.outputs] == ["y"]
    config = sync_client.get_model_config("leaky_relu_grad").config
    assert config.backend == "onnxruntime"
    assert [i.name for i in config.input] == ["x", "grad_output"]


@pytest.mark.parametrize(("model", "dtype"), CASES, ids=[_ids(c) for c in CASES])
def test_infer_matches_actgrad_v1_sync(
    sync_client: Any, v1: Client, model: models.Model, dtype: np.dtype[Any]
) -> None:
    arrays = model_arrays(model, dtype)
    parameters = PARAMS.get(model.function.name) or None
    result = sync_client.infer(
        model.name, _inputs(arrays, triton), parameters=parameters, client_timeout=30
    )
    _check(result, v1_answers(v1, model, arrays))


async def test_every_model_matches_actgrad_v1_asyncio(target: str, v1: Client) -> None:
    client = triton_aio.InferenceServerClient(target)
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        metadata = await client.get_model_metadata("softmax_grad")
        assert [t.name for t in metadata.inputs] == ["x", "grad_output"]
        for model, dtype in CASES:
            arrays = model_arrays(model, dtype)
            result = await client.infer(
                model.name,
                _inputs(arrays, triton_aio),
                parameters=PARAMS.get(model.function.name) or None,
                client_timeout=30,
            )
            _check(result, v1_answers(v1, model, arrays))
        with pytest.raises(InferenceServerException) as info:
            await client.infer("no_such_model", _inputs({"x": np.zeros(2)}, triton_aio))
        assert info.value.status() == str(grpc.StatusCode.NOT_FOUND)
    finally:
        await client.close()


def test_unknown_model_is_not_found(sync_client: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        sync_client.infer("no_such_model", _inputs({"x": np.zeros(2)}, triton))
    assert info.value.status() == str(grpc.StatusCode.NOT_FOUND)
    with pytest.raises(InferenceServerException) as info:
        sync_client.get_model_metadata("gelu_gradient")
    assert info.value.status() == str(grpc.StatusCode.NOT_FOUND)


def test_bad_input_is_invalid_argument(sync_client: Any) -> None:
    inputs = _inputs({"x": np.zeros(3), "grad_output": np.zeros(4)}, triton)
    with pytest.raises(InferenceServerException) as info:
        sync_client.infer("tanh_grad", inputs)
    assert info.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "grad_output" in (info.value.message() or "")
    with pytest.raises(InferenceServerException) as info:
        sync_client.infer(
            "softmax", _inputs({"x": np.zeros(3)}, triton), parameters={"temperature": -1.0}
        )
    assert info.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)


def test_other_rpcs_are_unimplemented(sync_client: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        sync_client.get_system_shared_memory_status()
    assert info.value.status() == str(grpc.StatusCode.UNIMPLEMENTED)
    with pytest.raises(InferenceServerException) as info:
        sync_client.load_model("gelu")
    assert info.value.status() == str(grpc.StatusCode.UNIMPLEMENTED)


def test_repository_index_lists_every_model_with_its_state(sync_client: Any) -> None:
    index = sync_client.get_model_repository_index()
    assert sorted(m.name for m in index.models) == sorted(m.name for m in models.MODELS)
    assert {(m.version, m.state, m.reason) for m in index.models} == {("1", "READY", "")}
    ready = sync_client.get_model_repository_index(as_json=True)
    assert len(ready["models"]) == len(models.MODELS)


def _stats(client: Any, name: str) -> Any:
    (stats,) = client.get_inference_statistics(name).model_stats
    return stats


def test_statistics_count_calls_failures_and_durations(target: str, sync_client: Any) -> None:
    before = _stats(sync_client, "swish")
    started_ms = time.time_ns() // 1_000_000
    x = np.linspace(-2, 2, 6, dtype=np.float32)
    for _ in range(2):
        sync_client.infer("silu", _inputs({"x": x}, triton))  # an alias counts for its model
    with pytest.raises(InferenceServerException):  # refused by the core: a bad parameter
        sync_client.infer("swish", _inputs({"x": x}, triton), parameters={"beta": "high"})
    request = pb.ModelInferRequest(model_name="swish")  # refused while decoding: short bytes
    request.inputs.add(name="x", datatype="FP32", shape=[2])
    request.raw_input_contents.append(b"\x00" * 7)
    with grpc.insecure_channel(target) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as rpc_error:
            stub.ModelInfer(request, timeout=30)
    assert rpc_error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = _stats(sync_client, "silu")
    assert (after.name, after.version) == ("swish", "1")
    assert after.inference_count == before.inference_count + 2
    assert after.execution_count == before.execution_count + 2
    stats, old = after.inference_stats, before.inference_stats
    assert stats.success.count == old.success.count + 2 and stats.success.ns > old.success.ns
    assert stats.fail.count == old.fail.count + 2 and stats.fail.ns > old.fail.ns
    for stage in ("compute_input", "compute_infer", "compute_output"):
        now, then = getattr(stats, stage), getattr(old, stage)
        assert now.count == then.count + 2 and now.ns > then.ns, stage
    assert (stats.queue.count, stats.queue.ns) == (0, 0)  # not measured, said as 0
    assert after.last_inference >= started_ms
    everything = sync_client.get_inference_statistics().model_stats
    assert sorted(s.name for s in everything) == sorted(m.name for m in models.MODELS)


def test_statistics_of_an_unknown_model_are_not_found(sync_client: Any) -> None:
    for name, version in [("no_such_model", ""), ("gelu", "2")]:
        with pytest.raises(InferenceServerException) as info:
            sync_client.get_inference_statistics(name, version)
        assert info.value.status() == str(grpc.StatusCode.NOT_FOUND)


def test_model_config_says_what_metadata_cannot(sync_client: Any) -> None:
    parameters = sync_client.get_model_config("prelu_grad").config.parameters
    assert parameters["datatypes"].string_value == "FP32,FP64,FP16,BF16"
    assert "any shape" in parameters["shapes"].string_value
    assert "slope and grad_slope: broadcastable" in parameters["shapes"].string_value


def test_typed_contents_over_the_wire(target: str, v1: Client) -> None:
    x = np.array([[-1.5, 0.0, 2.5]])
    request = pb.ModelInferRequest(model_name="xsin")
    request.inputs.add(name="x", datatype="FP64", shape=[1, 3]).contents.fp64_contents.extend(
        x.ravel().tolist()
    )
    with grpc.insecure_channel(target) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.ModelInfer(request, timeout=30)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP64", [1, 3])
    y = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(1, 3)
    np.testing.assert_array_equal(y, v1.activate(x, "xsin"))
    np.testing.assert_allclose(y, x * np.sin(x), rtol=1e-14)


def test_catalog_and_models_agree() -> None:
    assert len(models.MODELS) == 2 * len(catalog.CATALOG)
