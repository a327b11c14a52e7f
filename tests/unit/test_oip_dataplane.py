"""The OIP core called with plain values (no protobuf, no gRPC): operations, errors,
statistics."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from actgrad_server import catalog
from actgrad_server.config import Limits
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument, NotFound
from actgrad_server.oip import model_table as models
from actgrad_server.oip.dataplane import (
    DataPlane,
    InferInput,
    InferRequest,
    RequestedOutput,
)

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=1000, max_rank=4, max_concurrent_rpcs=4)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=32)


@pytest.fixture
def plane(engine: Engine) -> DataPlane:
    return DataPlane(engine, LIMITS)


def _request(model: str, **inputs: Any) -> InferRequest:
    return InferRequest(model, [InferInput(name, np.asarray(a)) for name, a in inputs.items()])


def test_infer_takes_and_returns_arrays(plane: DataPlane, engine: Engine) -> None:
    x = np.linspace(-3, 3, 12, dtype=np.float64).reshape(3, 4)
    response = plane.infer(
        InferRequest("leaky_relu", [InferInput("x", x)], id="r1", parameters={"alpha": 0.2})
    )
    assert (response.model_name, response.model_version, response.id) == ("leaky_relu", "1", "r1")
    (output,) = response.outputs
    assert (output.name, output.datatype, output.shape) == ("y", "FP64", (3, 4))
    call = catalog.bind(
        catalog.lookup("leaky_relu"), {"alpha": 0.2}, x_shape=x.shape, x_dtype=x.dtype
    )
    np.testing.assert_array_equal(output.data, engine.activate(call, x))


def test_requested_outputs_select_and_order(plane: DataPlane) -> None:
    x = np.ones(5, dtype=np.float32)
    slope = np.array([0.5], dtype=np.float32)
    request = InferRequest(
        "prelu_grad",
        [InferInput("x", x), InferInput("slope", slope)],
        outputs=[RequestedOutput("grad_slope"), RequestedOutput("grad_input")],
    )
    assert [o.name for o in plane.infer(request).outputs] == ["grad_slope", "grad_input"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request("relu", x=np.zeros(3, dtype=np.int32)), "inputs[0].datatype"),
        (_request("relu", y=np.zeros(3)), "inputs[0].name"),
        (_request("prelu", x=np.zeros(3)), "'slope' is required"),
        (InferRequest("gelu", [InferInput("x", np.zeros(3))], parameters={"approximate": None}),
         "parameters['approximate']"),
        (InferRequest("relu", [InferInput("x", np.zeros(3))], outputs=[RequestedOutput("z")]),
         "outputs[0].name"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(plane: DataPlane, request_: InferRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        plane.infer(request_)
    assert field in info.value.message


def test_unknown_models_and_versions_are_not_found(plane: DataPlane) -> None:
    for call in [
        lambda: plane.infer(_request("gelu_gard", x=np.zeros(1))),
        lambda: plane.model_metadata("nope"),
        lambda: plane.model_ready("gelu", "2"),
        lambda: plane.model_config("nope"),
        lambda: plane.model_statistics("nope"),
        lambda: plane.model_statistics("gelu", "2"),
        lambda: plane.model_statistics("", "2"),
    ]:
        with pytest.raises(NotFound):
            call()


def test_metadata_and_config_say_what_the_model_accepts(plane: DataPlane) -> None:
    metadata = plane.model_metadata("silu_grad")
    assert metadata.name == "swish_grad" and metadata.versions == ("1",)
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [
        ("x", "FP32", (-1,)),
        ("grad_output", "FP32", (-1,)),
    ]
    assert metadata.parameters["datatypes"] == "FP32,FP64,FP16,BF16"
    assert metadata.parameters["max_rank"] == "4"
    config = plane.model_config("prelu")
    assert config.parameters == plane.model_metadata("prelu").parameters
    assert "slope: broadcastable to x" in config.parameters["shapes"]
    assert [(t.name, t.optional) for t in plane.model_config("tanh_grad").inputs] == [
        ("x", False),
        ("grad_output", True),
    ]


def test_repository_index_lists_every_model_with_its_state(engine: Engine) -> None:
    state = {"ready": False}
    plane = DataPlane(engine, LIMITS, is_ready=lambda: state["ready"])
    index = plane.repository_index()
    assert [e.name for e in index] == [m.name for m in models.MODELS]
    assert {(e.version, e.state) for e in index} == {("1", "UNAVAILABLE")}
    assert all(e.reason for e in index)
    assert plane.repository_index(ready_only=True) == ()
    state["ready"] = True
    assert {(e.state, e.reason) for e in plane.repository_index(ready_only=True)} == {("READY", "")}
    assert plane.server_live() and plane.server_ready()


def test_statistics_count_successes_failures_and_stages(plane: DataPlane) -> None:
    (before,) = plane.model_statistics("tanh")
    assert before.inference_count == 0 and before.last_inference == 0
    for _ in range(3):
        plane.infer(_request("tanh", x=np.ones(4, dtype=np.float32)))
    with pytest.raises(InvalidArgument):
        plane.infer(_request("tanh", x=np.ones(4), grad_output=np.ones(4)))
    plane.decode_failed("tanh", "", started_ns=0)
    with pytest.raises(NotFound):  # an unknown model is nobody's failure
        plane.decode_failed("tanhh", "", started_ns=0)
    (after,) = plane.model_statistics("tanh", "1")
    assert (after.name, after.version) == ("tanh", "1")
    assert after.inference_count == after.execution_count == 3
    assert after.last_inference > 0
    stats = after.inference_stats
    assert stats.success.count == 3 and stats.fail.count == 2 and stats.fail.ns > 0
    stages = [stats.compute_input, stats.compute_infer, stats.compute_output]
    assert all(s.count == 3 and s.ns > 0 for s in stages)
    assert sum(s.ns for s in stages) == stats.success.ns
    assert (stats.queue.count, stats.queue.ns) == (0, 0)
    (gradient,) = plane.model_statistics("tanh_grad")
    assert gradient.inference_count == 0
    assert len(plane.model_statistics()) == len(models.MODELS)


def test_statistics_are_exact_under_concurrent_calls(plane: DataPlane) -> None:
    threads, calls = 8, 25
    x = np.ones(3, dtype=np.float32)

    def work() -> None:
        for _ in range(calls):
            plane.infer(_request("relu", x=x))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    (stats,) = plane.model_statistics("relu")
    assert stats.inference_count == threads * calls
    assert stats.inference_stats.compute_infer.count == threads * calls


def test_decoding_helpers_apply_the_limits(plane: DataPlane) -> None:
    assert plane.input_dtype("BF16", "f").name == "bfloat16"
    with pytest.raises(InvalidArgument, match=r"inputs\[0\]\.datatype"):
        plane.input_dtype("INT8", "inputs[0].datatype")
    assert plane.check_input_shape((2, 3), "s") == 6
    with pytest.raises(InvalidArgument, match="shape"):
        plane.check_input_shape((1,) * 5, "shape")
    array = plane.from_bytes(b"\x00" * 24, "FP32", np.dtype("<f4"), (2, 3), "raw")
    assert array.shape == (2, 3) and not array.flags.writeable
    with pytest.raises(InvalidArgument, match="raw: has 7 bytes"):
        plane.from_bytes(b"\x00" * 7, "FP32", np.dtype("<f4"), (2,), "raw")
