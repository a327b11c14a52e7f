"""The same-host fast path: tensors in shared memory, against real servers on port 0.

Every case runs through both clients. Results must equal the message path's bit
for bit (same server, same graphs), the tensor bytes must not travel in the
messages, a server without --allow-shared-memory must refuse and the SDK fall
back once, and no segment may outlive its client.
"""

from __future__ import annotations

import dataclasses
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
from actgrad import AsyncClient, Client, _shm
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc
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
        "actgrad_requests_received_total", {"rpc": f"{SERVICE}/{rpc}"}
    )
    return value or 0.0


def _request_bytes(server: ActgradServer, rpc: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "actgrad_request_bytes_total", {"rpc": f"{SERVICE}/{rpc}"}
    )
    return value or 0.0


def _own_segments() -> list[str]:
    """Segments in /dev/shm made by this process's clients (the SDK puts its pid in)."""
    stem = f"{_shm.PREFIX}{os.getpid()}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(stem))


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_verb_equals_the_message_path(
    pair: tuple[Any, Any], shm_server: ActgradServer, dtype: Any
) -> None:
    shared, plain = pair
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3, size=(8, 3, 40)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float64).reshape(3, 1)
    before = {rpc: _received(shm_server, rpc) for rpc in ("ActivateShared", "GradientShared")}
    before["SoftmaxShared"] = _received(shm_server, "SoftmaxShared")

    _same_bits(shared.activate(x, "gelu"), plain.activate(x, "gelu"))
    _same_bits(
        shared.activate(x, "leaky_relu", alpha=0.2), plain.activate(x, "leaky_relu", alpha=0.2)
    )
    a = shared.vjp(x, "prelu", slope=slope, grad_output=g, return_output=True)
    b = plain.vjp(x, "prelu", slope=slope, grad_output=g, return_output=True)
    _same_bits(a.grad_input, b.grad_input)
    assert a.output is not None and b.output is not None
    _same_bits(a.output, b.output)
    assert a.grad_params.keys() == b.grad_params.keys() == {"slope"}
    _same_bits(a.grad_params["slope"], b.grad_params["slope"])
    # No grad_output (ones) and the forward value laid after the input.
    c = shared.vjp(x, "tanh", return_output=True)
    d = plain.vjp(x, "tanh", return_output=True)
    _same_bits(c.grad_input, d.grad_input)
    assert c.output is not None and d.output is not None
    _same_bits(c.output, d.output)
    _same_bits(shared.gradient(x, "silu", grad_output=g), plain.gradient(x, "silu", grad_output=g))
    for log in (False, True):
        _same_bits(
            shared.softmax(x, axis=1, temperature=0.7, log=log),
            plain.softmax(x, axis=1, temperature=0.7, log=log),
        )

    assert _sdk(shared).shared_memory
    assert _received(shm_server, "ActivateShared") == before["ActivateShared"] + 2
    assert _received(shm_server, "GradientShared") == before["GradientShared"] + 3
    assert _received(shm_server, "SoftmaxShared") == before["SoftmaxShared"] + 2


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


def test_tensor_bytes_do_not_travel_in_messages(
    pair: tuple[Any, Any], shm_server: ActgradServer
) -> None:
    shared, _ = pair
    # 4 MiB: 16 times the server's 256 KiB message limit, in one call, unstreamed.
    x = np.random.default_rng(5).normal(size=(1024, 1024)).astype(np.float32)
    calls = _received(shm_server, "ActivateShared")
    streamed = _received(shm_server, "ActivateStream")
    sent = _request_bytes(shm_server, "ActivateShared")
    y = shared.activate(x, "sigmoid")
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)
    assert _received(shm_server, "ActivateShared") == calls + 1
    assert _received(shm_server, "ActivateStream") == streamed
    assert _request_bytes(shm_server, "ActivateShared") - sent < 1024


def test_inputs_over_the_element_limit_go_in_messages(
    pair: tuple[Any, Any], shm_server: ActgradServer
) -> None:
    shared, _ = pair
    x = np.linspace(-1, 1, TEST_SETTINGS.max_elements + 1, dtype=np.float16)
    shared.activate(x[:10], "relu")  # the client learns the limit before its first call
    calls = _received(shm_server, "ActivateShared")
    streamed = _received(shm_server, "ActivateStream")
    y = shared.activate(x, "relu")
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert _received(shm_server, "ActivateShared") == calls
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
    assert _sdk(shared).shared_memory


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
def test_refusal_falls_back_once(
    server: ActgradServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The session server runs without --allow-shared-memory."""
    target = f"127.0.0.1:{server.port}"
    x = np.random.default_rng(4).normal(size=(50, 60))
    refusals = _received(server, "ActivateShared") + _received(server, "GradientShared")
    caplog.set_level(logging.WARNING, logger="actgrad._client")
    client = _open(kind, target, **SHARED)
    plain = _open(kind, target, timeout=30.0)
    try:
        assert _sdk(client).shared_memory
        _same_bits(client.activate(x, "gelu"), plain.activate(x, "gelu"))
        assert not _sdk(client).shared_memory
        assert _own_segments() == []  # unlinked at the refusal
        _same_bits(client.gradient(x, "gelu"), plain.gradient(x, "gelu"))
        _same_bits(client.softmax(x), plain.softmax(x))
    finally:
        client.close()
        plain.close()
    # One shared call was refused; the others went in messages at once.
    assert _received(server, "ActivateShared") + _received(server, "GradientShared") == (
        refusals + 1
    )
    warnings = [r for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1
    assert "FAILED_PRECONDITION" in warnings[0].getMessage()


def test_server_refuses_shared_memory_unless_allowed(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        region = pb.SharedMemoryRegion(segment="actgrad-x", offset=0, size=4)
        request = pb.ActivateSharedRequest(
            request=pb.ActivateRequest(function="relu"), input=region, output=region
        )
        request.request.input.dtype = 1
        request.request.input.shape.append(1)
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateShared(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


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
        region = pb.SharedMemoryRegion(segment=segment, offset=offset, size=4 * elements)
        request = pb.SoftmaxSharedRequest(request=pb.SoftmaxRequest(), input=region, output=region)
        request.request.input.dtype = 1
        request.request.input.shape.append(elements)
        with pytest.raises(grpc.RpcError) as info:
            stub.SoftmaxShared(request, timeout=10)
    assert info.value.code() is code
