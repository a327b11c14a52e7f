"""Prometheus metrics on --metrics-port: calls by rpc/function/dtype/code, latency,
in-flight, bytes, the session cache; one registry per server."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from _running import make_client, running, sample, scrape, settings

import actgrad
from actgrad import wire
from actgrad.v1 import activation_pb2
from actgrad_server.app import ActgradServer

ACTIVATE = "actgrad.v1.ActivationService/Activate"
GRADIENT = "actgrad.v1.ActivationService/Gradient"


@pytest.fixture(params=["sync", "async"])
def metered(request: pytest.FixtureRequest) -> Iterator[tuple[ActgradServer, object]]:
    with running(settings(metrics_port=0)) as server:
        client = make_client(request.param, f"127.0.0.1:{server.port}")
        try:
            yield server, client
        finally:
            client.close()


def test_metrics_are_off_by_default(server: ActgradServer) -> None:
    assert server.metrics_port is None


def test_calls_are_counted_by_rpc_function_dtype_and_code(
    metered: tuple[ActgradServer, object],
) -> None:
    server, client = metered
    x32 = np.linspace(-2, 2, 5, dtype=np.float32)
    for _ in range(3):
        client.activate(x32, "silu")  # type: ignore[attr-defined]
    client.gradient(x32.astype(np.float64), "leaky_relu", alpha=0.1)  # type: ignore[attr-defined]
    with pytest.raises(actgrad.NotFoundError):
        client.activate(x32, "no_such_function")  # type: ignore[attr-defined]
    with pytest.raises(actgrad.InvalidArgumentError):
        client.softmax(x32, temperature=-1.0)  # type: ignore[attr-defined]

    text = scrape(server.metrics_port or 0)

    def count(rpc: str, function: str, dtype: str, code: str) -> float | None:
        return sample(
            text, "actgrad_requests_total", rpc=rpc, function=function, dtype=dtype, code=code
        )

    # The alias is counted under the canonical name; unknown names under "unknown".
    assert count(ACTIVATE, "swish", "float32", "OK") == 3
    assert count(GRADIENT, "leaky_relu", "float64", "OK") == 1
    assert count(ACTIVATE, "unknown", "float32", "NOT_FOUND") == 1
    softmax = "actgrad.v1.ActivationService/Softmax"
    assert count(softmax, "softmax", "float32", "INVALID_ARGUMENT") == 1
    assert sample(text, "actgrad_request_duration_seconds_count", rpc=ACTIVATE) == 4
    assert sample(text, "actgrad_request_duration_seconds_count", rpc=GRADIENT) == 1
    assert sample(text, "actgrad_requests_received_total", rpc=ACTIVATE) == 4
    assert sample(text, "actgrad_requests_in_flight") == 0
    assert sample(text, "actgrad_serving") == 1


def test_bytes_in_and_out_are_the_message_sizes(metered: tuple[ActgradServer, object]) -> None:
    server, client = metered
    x = np.arange(1000, dtype=np.float64) / 100.0
    y = client.activate(x, "relu")  # type: ignore[attr-defined]
    request = activation_pb2.ActivateRequest(function="relu")
    wire.encode(x, out=request.input)
    response = activation_pb2.ActivateResponse(output=wire.encode(y))
    text = scrape(server.metrics_port or 0)
    assert sample(text, "actgrad_request_bytes_total", rpc=ACTIVATE) == request.ByteSize()
    assert sample(text, "actgrad_response_bytes_total", rpc=ACTIVATE) == response.ByteSize()
    assert request.ByteSize() > x.nbytes


def test_session_cache_size_and_graph_builds(metered: tuple[ActgradServer, object]) -> None:
    server, client = metered
    port = server.metrics_port or 0
    info = server.engine.cache_info()
    text = scrape(port)
    assert sample(text, "actgrad_session_cache_size") == info.size > 0
    assert sample(text, "actgrad_session_cache_capacity") == info.capacity
    assert sample(text, "actgrad_graph_builds_total") == info.builds
    # float16 is not warmed up: the first float16 call builds a graph, the second does not.
    x16 = np.linspace(-1, 1, 4, dtype=np.float16)
    client.activate(x16, "tanh")  # type: ignore[attr-defined]
    after_first = sample(scrape(port), "actgrad_graph_builds_total")
    assert after_first == info.builds + 1
    client.activate(x16, "tanh")  # type: ignore[attr-defined]
    text = scrape(port)
    assert sample(text, "actgrad_graph_builds_total") == after_first
    assert sample(text, "actgrad_session_cache_size") == info.size + 1


def test_two_servers_in_one_process_have_their_own_registries() -> None:
    with running(settings(metrics_port=0)) as first, running(settings(metrics_port=0)) as second:
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            from actgrad.v1 import activation_pb2_grpc

            stub = activation_pb2_grpc.ActivationServiceStub(channel)
            stub.ListFunctions(activation_pb2.ListFunctionsRequest(), timeout=10)
        rpc = "actgrad.v1.ActivationService/ListFunctions"
        assert first.metrics_port != second.metrics_port
        assert (
            sample(scrape(first.metrics_port or 0), "actgrad_requests_received_total", rpc=rpc) == 1
        )
        assert (
            sample(scrape(second.metrics_port or 0), "actgrad_requests_received_total", rpc=rpc)
            is None
        )
