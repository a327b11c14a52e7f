"""The same-host fast path: tensors in shared memory, against real servers on port 0.

Every case runs through both clients. Results must equal the message path's bit
for bit (same server, same graphs), the tensor bytes must not travel in the
messages, a server without --allow-shared-memory must refuse regions and the SDK
not try them there, a server that cannot open the segments must make the SDK fall
back once, and no segment may outlive its client.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from _common import TEST_SETTINGS, AsyncAdapter

import actgrad
from actgrad import AsyncClient, Client, _shm, wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc, tensor_pb2
from actgrad_server import shm
from actgrad_server.api import activation
from actgrad_server.app import ActgradServer

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
SERVICE = "actgrad.v1.ActivationService"
SHM_DIR = "/dev/shm"
# Shared memory for every non-empty input, however small, so that tests stay small.
SHARED = {"shared_memory": True, "shared_memory_min_bytes": 0, "timeout": 30.0}
# The shared-memory server's message limit; clients that fall back must stream under it.
MESSAGE_LIMIT = 256 << 10

pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHM_DIR), reason="POSIX shared memory (/dev/shm) is Linux-only"
)


@pytest.fixture(scope="module")
def shm_server() -> Iterator[ActgradServer]:
    # A message limit far below the tensors used: shared memory must not need it.
    settings = dataclasses.replace(
        TEST_SETTINGS, allow_shared_memory=True, max_message_bytes=MESSAGE_LIMIT
    )
    srv = ActgradServer(settings)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0).wait(10)


@pytest.fixture(scope="module")
def elsewhere_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActgradServer]:
    """A server that allows shared memory but sees another /dev/shm (as from another
    container): every client segment is missing there."""
    directory = tmp_path_factory.mktemp("elsewhere")
    settings = dataclasses.replace(TEST_SETTINGS, allow_shared_memory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            activation,
            "SharedMemory",
            functools.partial(shm.SharedMemory, directory=str(directory)),
        )
        srv = ActgradServer(settings)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0).wait(10)


def _open(kind: str, target: str, **options: Any) -> Any:
    return Client(target, **options) if kind == "sync" else AsyncAdapter(target, **options)


def _sdk(client: Any) -> Client | AsyncClient:
    """The SDK object behind a test client (AsyncAdapter wraps an AsyncClient)."""
    return client._client if isinstance(client, AsyncAdapter) else client


@pytest.fixture(params=["sync", "async"])
def pair(request: pytest.FixtureRequest, shm_server: ActgradServer) -> Iterator[tuple[Any, Any]]:
    """(shared-memory client, message client) of the same kind against the shm server."""
    target = f"127.0.0.1:{shm_server.port}"
    shared = _open(request.param, target, **SHARED, max_message_bytes=MESSAGE_LIMIT)
    plain = _open(request.param, target, timeout=30.0, max_message_bytes=MESSAGE_LIMIT)
    try:
        yield shared, plain
    finally:
        shared.close()
        plain.close()


def _received(server: ActgradServer, rpc: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "actgrad_requests_received_total", {"protocol": "grpc", "rpc": f"{SERVICE}/{rpc}"}
    )
    return value or 0.0


def _request_bytes(server: ActgradServer, *rpcs: str) -> float:
    total = 0.0
    for rpc in rpcs:
        value = server.metrics.registry.get_sample_value(
            "actgrad_request_bytes_total", {"protocol": "grpc", "rpc": f"{SERVICE}/{rpc}"}
        )
        total += value or 0.0
    return total


def _answered(server: ActgradServer, code: str) -> float:
    """actgrad.v1 calls that ended with status `code`, whatever their function and dtype."""
    total = 0.0
    for family in server.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "actgrad_requests_total" and sample.labels.get("code") == code:
                total += sample.value
    return total


def _own_segments() -> list[str]:
    """Segments in /dev/shm made by this process's clients (the SDK puts its pid in)."""
    stem = f"{_shm.PREFIX}{os.getpid()}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(stem))


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


VERBS = ("Activate", "Gradient", "Softmax")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_verb_equals_the_message_path(
    pair: tuple[Any, Any], shm_server: ActgradServer, dtype: Any
) -> None:
    shared, plain = pair
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3, size=(8, 3, 40)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float64).reshape(3, 1)

    def every_verb(client: Any) -> list[np.ndarray]:
        a = client.vjp(x, "prelu", slope=slope, grad_output=g, return_output=True)
        # No grad_output (ones) and the forward value laid after the input.
        c = client.vjp(x, "tanh", return_output=True)
        return [
            client.activate(x, "gelu"),
            client.activate(x, "leaky_relu", alpha=0.2),
            a.grad_input,
            a.output,
            a.grad_params["slope"],
            c.grad_input,
            c.output,
            client.gradient(x, "silu", grad_output=g),
            *(client.softmax(x, axis=1, temperature=0.7, log=log) for log in (False, True)),
        ]

    calls = {rpc: _received(shm_server, rpc) for rpc in VERBS}
    sent = _request_bytes(shm_server, *VERBS)
    ours = every_verb(shared)
    # 7 calls, none of whose tensor bytes (x.nbytes each, twice with g) travelled.
    assert _request_bytes(shm_server, *VERBS) - sent < 7 * 512
    assert {rpc: _received(shm_server, rpc) - calls[rpc] for rpc in VERBS} == {
        "Activate": 2,
        "Gradient": 3,
        "Softmax": 2,
    }
    for a, b in zip(ours, every_verb(plain), strict=True):
        _same_bits(a, b)
    assert _sdk(shared).shared_memory


def test_large_tensors_computed_chunk_by_chunk_equal_the_message_path(
    pair: tuple[Any, Any],
) -> None:
    """Above the engine's 64 Ki-element chunks the server reads a region and writes its
    result a chunk at a time (softmax along axis 0 excepted: read whole); the plain
    client streams the same tensors in messages. Every result is the same, bit for bit."""
    shared, plain = pair
    rng = np.random.default_rng(11)
    x = rng.normal(scale=3, size=(96, 1024)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)

    def every_verb(client: Any) -> list[np.ndarray]:
        vjp = client.vjp(x, "tanh", grad_output=g, return_output=True)
        return [
            client.activate(x, "gelu"),
            client.gradient(x, "swish"),
            vjp.grad_input,
            vjp.output,
            client.softmax(x, axis=-1),
        ]

    for a, b in zip(every_verb(shared), every_verb(plain), strict=True):
        _same_bits(a, b)
    # Along axis 0 the server reads the region whole and computes it in column
    # blocks of its own width, the plain client streams column blocks of another:
    # reductions over blocks of different widths may differ in the last bit.
    ours, theirs = (c.softmax(x, axis=0, log=True) for c in (shared, plain))
    np.testing.assert_allclose(ours, theirs, rtol=4e-7, atol=0)
    assert _sdk(shared).shared_memory


def test_results_are_copies_not_views_of_a_segment(pair: tuple[Any, Any]) -> None:
    shared, _ = pair
    x = np.linspace(-2, 2, 1000, dtype=np.float32)
    first = shared.activate(x, "relu")
    kept = first.copy()
    second = shared.activate(-x, "relu")  # the same segment, reused
    assert first.flags.owndata and second.flags.owndata
    np.testing.assert_array_equal(first, np.maximum(x, 0))  # relu is exact
    np.testing.assert_array_equal(second, np.maximum(-x, 0))
    np.testing.assert_array_equal(first, kept)
    first[0] = 42.0  # writable: it is the caller's own array
    np.testing.assert_array_equal(x, np.linspace(-2, 2, 1000, dtype=np.float32))  # untouched


def test_tensor_bytes_do_not_travel_in_messages(
    pair: tuple[Any, Any], shm_server: ActgradServer
) -> None:
    shared, _ = pair
    # 4 MiB: 16 times the server's 256 KiB message limit, in one call, unstreamed.
    x = np.random.default_rng(5).normal(size=(1024, 1024)).astype(np.float32)
    calls = _received(shm_server, "Activate")
    streamed = _received(shm_server, "ActivateStream")
    sent = _request_bytes(shm_server, "Activate")
    y = shared.activate(x, "sigmoid")
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)
    assert _received(shm_server, "Activate") == calls + 1
    assert _received(shm_server, "ActivateStream") == streamed
    assert _request_bytes(shm_server, "Activate") - sent < 1024


def test_inputs_over_the_element_limit_go_in_messages(
    pair: tuple[Any, Any], shm_server: ActgradServer
) -> None:
    shared, _ = pair
    x = np.linspace(-1, 1, TEST_SETTINGS.max_elements + 1, dtype=np.float16)
    shared.activate(x[:10], "relu")  # the client learns the limit before its first call
    calls = _received(shm_server, "Activate")
    streamed = _received(shm_server, "ActivateStream")
    y = shared.activate(x, "relu")
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert _received(shm_server, "Activate") == calls
    assert _received(shm_server, "ActivateStream") > streamed
    assert _sdk(shared).shared_memory  # not a refusal: the next small call shares again


def test_request_errors_keep_their_codes(pair: tuple[Any, Any]) -> None:
    shared, _ = pair
    x = np.ones((4, 5), dtype=np.float32)
    with pytest.raises(actgrad.NotFoundError):
        shared.activate(x, "no_such_function")
    with pytest.raises(actgrad.InvalidArgumentError):
        shared.softmax(x, axis=5)
    with pytest.raises(actgrad.InvalidArgumentError):
        shared.activate(x, "leaky_relu", alpha="high")
    with pytest.raises(actgrad.InvalidArgumentError):
        shared.gradient(x, "tanh", grad_output=np.ones((5, 4)))  # in the message, refused
    assert _sdk(shared).shared_memory
    np.testing.assert_array_equal(shared.activate(x, "relu"), x)


def test_concurrent_calls_share_one_client(shm_server: ActgradServer) -> None:
    rng = np.random.default_rng(9)
    inputs = [rng.normal(size=(64, 1000 + k)).astype(np.float32) for k in range(16)]
    with Client(f"127.0.0.1:{shm_server.port}", **SHARED) as client:
        with futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda x: client.activate(x, "tanh"), inputs))
        assert client.shared_memory
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_no_segment_outlives_close(shm_server: ActgradServer, kind: str) -> None:
    assert _own_segments() == []
    client = _open(kind, f"127.0.0.1:{shm_server.port}", **SHARED)
    try:
        client.activate(np.ones((300, 300)), "gelu")
        client.vjp(np.ones((300, 300)), "gelu", grad_output=np.ones((300, 300)), return_output=True)
        assert _own_segments() != []  # kept for reuse while open
    finally:
        client.close()
    assert _own_segments() == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_server_without_shared_memory_is_not_tried(
    server: ActgradServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The session server runs without --allow-shared-memory and says so in GetServerInfo."""
    target = f"127.0.0.1:{server.port}"
    x = np.random.default_rng(4).normal(size=(50, 60))
    refusals = _answered(server, "FAILED_PRECONDITION")
    asked = _received(server, "GetServerInfo")
    caplog.set_level(logging.WARNING, logger="actgrad._requests")
    client = _open(kind, target, **SHARED)
    plain = _open(kind, target, timeout=30.0)
    try:
        assert _sdk(client).shared_memory
        _same_bits(client.activate(x, "gelu"), plain.activate(x, "gelu"))
        assert not _sdk(client).shared_memory
        _same_bits(client.gradient(x, "gelu"), plain.gradient(x, "gelu"))
        _same_bits(client.softmax(x), plain.softmax(x))
        assert _own_segments() == []  # none was ever made
    finally:
        client.close()
        plain.close()
    assert _answered(server, "FAILED_PRECONDITION") == refusals
    assert _received(server, "GetServerInfo") == asked + 1
    warnings = [r for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1
    assert "does not allow" in warnings[0].getMessage()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_segments_the_server_cannot_open_fall_back_once(
    elsewhere_server: ActgradServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = f"127.0.0.1:{elsewhere_server.port}"
    x = np.random.default_rng(6).normal(size=(40, 30))
    refusals = _answered(elsewhere_server, "FAILED_PRECONDITION")
    caplog.set_level(logging.WARNING, logger="actgrad._requests")
    client = _open(kind, target, **SHARED)
    plain = _open(kind, target, timeout=30.0)
    try:
        _same_bits(client.softmax(x, axis=0), plain.softmax(x, axis=0))
        assert not _sdk(client).shared_memory
        assert _own_segments() == []  # unlinked at the refusal
        r = client.vjp(x, "tanh", return_output=True)
        _same_bits(r.grad_input, plain.gradient(x, "tanh"))
        _same_bits(client.activate(x, "gelu"), plain.activate(x, "gelu"))
    finally:
        client.close()
        plain.close()
    # One shared call was refused; the others went in messages at once.
    assert _answered(elsewhere_server, "FAILED_PRECONDITION") == refusals + 1
    warnings = [r for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1
    assert "FAILED_PRECONDITION" in warnings[0].getMessage()


def _region_tensor(segment: str, offset: int, elements: int) -> tensor_pb2.Tensor:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[elements])
    tensor.region.segment = segment
    tensor.region.offset = offset
    tensor.region.size = 4 * elements
    return tensor


def test_server_refuses_shared_memory_unless_allowed(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        assert not stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).shared_memory
        request = pb.ActivateRequest(function="relu", input=_region_tensor("actgrad-x", 0, 1))
        with pytest.raises(grpc.RpcError) as info:
            stub.Activate(request, timeout=10)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        # An output region alone, the input in the message.
        request = pb.SoftmaxRequest(input=wire.encode(np.ones(4, np.float32)))
        request.output_region.CopyFrom(_region_tensor("actgrad-x", 0, 4).region)
        with pytest.raises(grpc.RpcError) as info:
            stub.Softmax(request, timeout=10)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        # The same call in the message is served.
        request.ClearField("output_region")
        output = stub.Softmax(request, timeout=10).output
        np.testing.assert_allclose(wire.decode(output), 0.25)


@pytest.mark.parametrize(
    ("segment", "offset", "code"),
    [
        ("not-ours", 0, grpc.StatusCode.INVALID_ARGUMENT),  # no actgrad- prefix
        ("actgrad-../etc", 0, grpc.StatusCode.INVALID_ARGUMENT),  # a path
        ("actgrad-does-not-exist-here", 0, grpc.StatusCode.FAILED_PRECONDITION),
        ("actgrad-does-not-exist-here", 2**64 - 1, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_raw_requests_for_foreign_segments(
    shm_server: ActgradServer, segment: str, offset: int, code: grpc.StatusCode
) -> None:
    # The last case: shape and size are checked (and refused) before any segment.
    elements = 4 if offset == 0 else TEST_SETTINGS.max_elements + 1
    with grpc.insecure_channel(f"127.0.0.1:{shm_server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.SoftmaxRequest(input=_region_tensor(segment, offset, elements))
        request.output_region.CopyFrom(request.input.region)
        with pytest.raises(grpc.RpcError) as info:
            stub.Softmax(request, timeout=10)
        assert info.value.code() is code
        # Then a valid call on the same channel.
        valid = pb.SoftmaxRequest(input=wire.encode(np.zeros(2, np.float32)))
        np.testing.assert_allclose(wire.decode(stub.Softmax(valid, timeout=10).output), 0.5)


def test_raw_stream_with_regions_per_chunk(shm_server: ActgradServer) -> None:
    """Each chunk of a stream names its own regions (here in place, one segment)."""
    pool = _shm.SegmentPool()
    segment = pool.acquire(4096)
    try:
        x = np.linspace(-4, 4, 256, dtype=np.float32)
        chunks = np.split(x, 4)
        requests = []
        for k, chunk in enumerate(chunks):
            segment.array(256 * k, chunk.dtype, chunk.shape)[...] = chunk
            request = pb.GradientRequest(
                function="sigmoid",
                input=_region_tensor(segment.name, 256 * k, chunk.size),
                return_output=True,
            )
            request.grad_input_region.CopyFrom(request.input.region)
            request.output_region.CopyFrom(_region_tensor(segment.name, 2048 + 256 * k, 64).region)
            requests.append(request)
        with grpc.insecure_channel(f"127.0.0.1:{shm_server.port}") as channel:
            stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
            responses = list(stub.GradientStream(iter(requests), timeout=30))
        assert [r.grad_input.region for r in responses] == [r.input.region for r in requests]
        s = 1 / (1 + np.exp(-x.astype(np.float64)))
        np.testing.assert_allclose(
            segment.array(0, np.dtype(np.float32), x.shape), s * (1 - s), rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            segment.array(2048, np.dtype(np.float32), x.shape), s, rtol=1e-6, atol=1e-7
        )
    finally:
        pool.release(segment)
        pool.close()
