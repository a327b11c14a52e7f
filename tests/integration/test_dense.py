"""Dense: f(x . W^T + b) and its gradients, through both clients.

The reference is an independent numpy implementation of the forward and backward pass
(each activation's derivative written out by hand), in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from _common import TEST_SETTINGS, AsyncAdapter

import actgrad
from actgrad import cli, wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc

Array = np.ndarray[Any, Any]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))  # type: ignore[no-any-return]


# name -> (params, f(z, params), vjp(z, g, params) -> (grad_z, grad_params))
Reference = tuple[
    dict[str, Any],
    Callable[[Array, dict[str, Any]], Array],
    Callable[[Array, Array, dict[str, Any]], tuple[Array, dict[str, Array]]],
]
SLOPE = np.array([0.2, -0.1, 0.3])
REFERENCES: dict[str | None, Reference] = {
    None: ({}, lambda z, p: z, lambda z, g, p: (g, {})),
    "relu": ({}, lambda z, p: np.maximum(z, 0.0), lambda z, g, p: (g * (z > 0), {})),
    "sigmoid": (
        {},
        lambda z, p: _sigmoid(z),
        lambda z, g, p: (g * _sigmoid(z) * (1.0 - _sigmoid(z)), {}),
    ),
    "tanh": ({}, lambda z, p: np.tanh(z), lambda z, g, p: (g * (1.0 - np.tanh(z) ** 2), {})),
    "leaky_relu": (
        {"alpha": 0.1},
        lambda z, p: np.where(z > 0, z, p["alpha"] * z),
        lambda z, g, p: (g * np.where(z > 0, 1.0, p["alpha"]), {}),
    ),
    "prelu": (
        {"slope": SLOPE},
        lambda z, p: np.where(z > 0, z, p["slope"] * z),
        lambda z, g, p: (
            g * np.where(z > 0, 1.0, p["slope"]),
            {"slope": (g * np.minimum(z, 0.0)).reshape(-1, z.shape[-1]).sum(axis=0)},
        ),
    ),
    "softmax": (
        {},
        lambda z, p: _softmax(z),
        lambda z, g, p: (
            _softmax(z) * (g - (g * _softmax(z)).sum(axis=-1, keepdims=True)),
            {},
        ),
    ),
}


def reference(
    name: str | None,
    x: Array,
    w: Array,
    b: Array | None,
    g: Array | None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Forward and backward pass of f(x . W^T + b) in float64, by hand."""
    defaults, f, vjp = REFERENCES[name]
    params = defaults if params is None else params
    z = x @ w.T + (0.0 if b is None else b)
    g = np.ones(z.shape) if g is None else g
    grad_z, grad_params = vjp(z, g, params)
    rows_z = grad_z.reshape(-1, w.shape[0])
    rows_x = x.reshape(-1, w.shape[1])
    return {
        "output": f(z, params),
        "net_output": z,
        "grad_input": grad_z @ w,
        "grad_weight": rows_z.T @ rows_x,
        "grad_bias": rows_z.sum(axis=0),
        "grad_params": grad_params,
    }


def layer(shape: tuple[int, ...], out: int = 3, seed: int = 0) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(shape),
        rng.standard_normal((out, shape[-1])),
        rng.standard_normal(out),
    )


def test_the_single_neuron_worked_by_hand(client: Any) -> None:
    # One neuron, x = [x1, x2], w = [w1, w2], b: z = w1 x1 + w2 x2 + b, y = sigmoid(z);
    # dy/dw_i = sigmoid'(z) x_i, dy/db = sigmoid'(z), dy/dx_i = sigmoid'(z) w_i.
    x1, x2, w1, w2, b = 1.0, 2.0, 0.5, -0.25, 0.1
    z = w1 * x1 + w2 * x2 + b  # 0.1
    s = 1.0 / (1.0 + math.exp(-z))
    ds = s * (1.0 - s)
    x, w, bias = np.array([x1, x2]), np.array([[w1, w2]]), np.array([b])

    y = client.dense(x, w, bias, activation="sigmoid")
    assert y.shape == (1,) and y.dtype == np.float64
    np.testing.assert_allclose(y, [s], rtol=1e-15)

    r = client.dense_vjp(
        x, w, bias, activation="sigmoid", return_output=True, return_net_output=True
    )
    np.testing.assert_allclose(r.net_output, [z], rtol=1e-15)
    np.testing.assert_allclose(r.output, [s], rtol=1e-15)
    np.testing.assert_allclose(r.grad_weight, [[ds * x1, ds * x2]], rtol=1e-14)
    np.testing.assert_allclose(r.grad_bias, [ds], rtol=1e-14)
    np.testing.assert_allclose(r.grad_input, [ds * w1, ds * w2], rtol=1e-14)
    assert r.grad_params == {}

    # The bare net output and relu, exactly: z = 0.5 - 0.5 + 0.1.
    np.testing.assert_array_equal(client.dense(x, w, bias, activation=None), [z])
    r = client.dense_vjp(x, w, activation="relu", grad_output=np.array([3.0]))
    # z = 0 without the bias: relu'(0) = 0, as in Gradient.
    np.testing.assert_array_equal(r.grad_weight, [[0.0, 0.0]])
    np.testing.assert_array_equal(r.grad_bias, [0.0])


@pytest.mark.parametrize("activation", list(REFERENCES))
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
def test_float64_matches_the_numpy_reference(
    client: Any, activation: str | None, shape: tuple[int, ...]
) -> None:
    x, w, b = layer(shape)
    params = REFERENCES[activation][0]
    g = np.random.default_rng(1).standard_normal((*shape[:-1], 3))
    want = reference(activation, x, w, b, g)

    y = client.dense(x, w, b, activation=activation, **params)
    np.testing.assert_allclose(y, want["output"], rtol=1e-12, atol=1e-15)

    r = client.dense_vjp(
        x,
        w,
        b,
        activation=activation,
        grad_output=g,
        return_output=True,
        return_net_output=True,
        **params,
    )
    for name in ("output", "net_output", "grad_input", "grad_weight", "grad_bias"):
        got = getattr(r, name)
        assert got.dtype == np.float64
        assert got.shape == want[name].shape, name
        np.testing.assert_allclose(got, want[name], rtol=1e-12, atol=1e-14, err_msg=name)
    assert sorted(r.grad_params) == sorted(want["grad_params"])
    for name, value in want["grad_params"].items():
        np.testing.assert_allclose(r.grad_params[name], value, rtol=1e-12, atol=1e-14)


def test_defaults_no_bias_ones_and_no_output(client: Any) -> None:
    x, w, _ = layer((4, 5))
    want = reference("tanh", x, w, None, None)
    r = client.dense_vjp(x, w, activation="tanh")
    assert r.output is None and r.net_output is None
    np.testing.assert_allclose(r.grad_weight, want["grad_weight"], rtol=1e-12)
    # Without a bias the gradient of a zero bias comes back.
    np.testing.assert_allclose(r.grad_bias, want["grad_bias"], rtol=1e-12)
    np.testing.assert_allclose(client.dense(x, w, activation="tanh"), want["output"], rtol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "rtol"), [("float32", 1e-5), ("float16", 1e-2), ("bfloat16", 2e-2)]
)
def test_narrow_dtypes_keep_their_dtype(client: Any, dtype: str, rtol: float) -> None:
    numpy_dtype = wire.dtype_info(dtype).numpy
    x, w, b = (a.astype(numpy_dtype) for a in layer((6, 5), out=3))
    params = {"slope": SLOPE.astype(numpy_dtype)}
    # The reference runs on the rounded values, in float64.
    x64, w64, b64, slope64 = (a.astype(np.float64) for a in (x, w, b, params["slope"]))
    want = reference("prelu", x64, w64, b64, None, {"slope": slope64})
    r = client.dense_vjp(x, w, b, activation="prelu", return_output=True, **params)
    for name in ("output", "grad_input", "grad_weight", "grad_bias"):
        got = getattr(r, name)
        assert got.dtype == numpy_dtype, name
        scale = np.abs(want[name]).max()
        np.testing.assert_allclose(
            got.astype(np.float64), want[name], rtol=rtol, atol=rtol * scale, err_msg=name
        )
    assert r.grad_params["slope"].dtype == numpy_dtype


def test_empty_leading_dimensions(client: Any) -> None:
    _, w, b = layer((1, 5))
    r = client.dense_vjp(np.zeros((0, 5)), w, b, activation="relu", return_output=True)
    assert r.output.shape == (0, 3) and r.grad_input.shape == (0, 5)
    np.testing.assert_array_equal(r.grad_weight, np.zeros((3, 5)))
    np.testing.assert_array_equal(r.grad_bias, np.zeros(3))


def _bad_calls() -> list[tuple[str, Callable[[Any], Any], str]]:
    x, w, b = layer((4, 5))
    big = TEST_SETTINGS.max_elements
    return [
        ("in mismatch", lambda c: c.dense(x, w[:, :4], b, activation=None), "weight"),
        ("weight 1-d", lambda c: c.dense(x, w[0], b, activation=None), "weight"),
        ("bias shape", lambda c: c.dense(x, w, b[:2], activation=None), "bias"),
        ("0-d input", lambda c: c.dense(np.float64(1.0), w, activation=None), "input"),
        (
            "grad_output shape",
            lambda c: c.dense_vjp(x, w, b, activation="relu", grad_output=np.ones((4, 5))),
            "grad_output",
        ),
        (
            "softmax along another axis",
            lambda c: c.dense(x, w, b, activation="softmax", axis=0),
            "axis",
        ),
        (
            "parameters without an activation",
            lambda c: c.dense(x, w, b, activation=None, alpha=0.1),
            "params['alpha']",
        ),
        (
            "bad parameter",
            lambda c: c.dense(x, w, b, activation="leaky_relu", beta=0.1),
            "params['beta']",
        ),
        (
            "slope shape",
            lambda c: c.dense(x, w, b, activation="prelu", slope=np.ones(4)),
            "params['slope']",
        ),
        (
            "output over the element limit",
            lambda c: c.dense(np.zeros((big // 4 + 1, 1)), np.zeros((4, 1)), activation=None),
            "output",
        ),
        (
            "input over the element limit",
            lambda c: c.dense(
                np.zeros((1, big + 1), np.float32), np.zeros((1, big + 1)), activation=None
            ),
            "input",
        ),
        (
            "weight over the element limit",
            lambda c: c.dense(
                np.zeros((1, 2), np.float32), np.zeros((big // 2 + 1, 2)), activation=None
            ),
            "weight",
        ),
    ]


BAD = _bad_calls()


@pytest.mark.parametrize(("label", "call", "fragment"), BAD, ids=[row[0] for row in BAD])
def test_bad_inputs_are_invalid_argument_then_a_call_succeeds(
    client: Any, label: str, call: Callable[[Any], Any], fragment: str
) -> None:
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        call(client)
    assert info.value.code == INVALID
    assert fragment in info.value.details, info.value.details
    x, w, b = layer((4, 5))
    np.testing.assert_allclose(
        client.dense(x, w, b, activation=None), x @ w.T + b, rtol=1e-12, atol=1e-15
    )


def test_unknown_activation_is_not_found(client: Any) -> None:
    x, w, b = layer((2, 5))
    with pytest.raises(actgrad.NotFoundError) as info:
        client.dense(x, w, b, activation="sigmoyd")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "sigmoid" in info.value.details
    np.testing.assert_allclose(
        client.dense(x, w, b, activation="relu"), np.maximum(x @ w.T + b, 0), rtol=1e-12
    )


def test_one_session_per_activation_serves_every_layer_size(server: Any, client: Any) -> None:
    engine = server.engine
    x, w, b = layer((3, 7), out=4, seed=5)
    client.dense(x, w, b, activation="hardtanh")
    builds = engine.cache_info().builds
    x, w, b = layer((9, 2), out=6, seed=6)
    client.dense(x, w, b, activation="hardtanh")
    assert engine.cache_info().builds == builds


@pytest.fixture
def stub(server: Any) -> Iterator[activation_pb2_grpc.ActivationServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield activation_pb2_grpc.ActivationServiceStub(channel)


def _raw_request(**fields: Any) -> pb.DenseRequest:
    x, w, b = layer((4, 5))
    request = pb.DenseRequest(**fields)
    wire.encode(x, out=request.input)
    wire.encode(w, out=request.weight)
    wire.encode(b, out=request.bias)
    return request


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: wire.encode(np.ones((3, 5), np.float32), out=r.weight), "weight: dtype"),
        (lambda r: wire.encode(np.ones(3, np.float32), out=r.bias), "bias: dtype"),
        (lambda r: wire.encode(np.ones((4, 3)), out=r.grad_output), "grad_output: is set"),
        (lambda r: r.ClearField("weight"), "weight: is required"),
    ],
    ids=["weight dtype", "bias dtype", "grad_output without gradient", "no weight"],
)
def test_raw_requests_the_sdk_cannot_send(stub: Any, change: Any, fragment: str) -> None:
    request = _raw_request(activation="relu")
    change(request)
    with pytest.raises(grpc.RpcError) as info:
        stub.Dense(request, timeout=10)
    assert info.value.code() == INVALID
    assert fragment in info.value.details()
    response = stub.Dense(_raw_request(activation="relu", gradient=True), timeout=10)
    assert not response.HasField("output") and response.HasField("grad_weight")


def test_dense_command(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--target", f"127.0.0.1:{server.port}"]
    neuron = ["1", "2", "--weight", "0.5", "-0.25", "--bias", "0.1"]
    assert cli.main(["dense", *neuron, "--activation", "relu", *target]) == 0
    assert capsys.readouterr().out.splitlines() == [f"output: {np.float64(0.1)}"]
    grad = ["--grad", "--grad-output", "2"]
    assert cli.main(["dense", *neuron, "--activation", "relu", *grad, *target]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"output: {np.float64(0.1)}",
        "grad_input: 1.0 -0.5",
        "grad_weight: 2.0 4.0",
        "grad_bias: 2.0",
    ]
    # Two samples, two outputs, prelu: a parameter gradient line too.
    two = ["1", "-1", "2", "-2", "--shape", "2", "2", "--weight", "1", "0", "0", "1"]
    prelu = ["--activation", "prelu", "--param", "slope=0.5", "--grad"]
    assert cli.main(["dense", *two, *prelu, *target]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "slope: -3.0"
    assert cli.main(["dense", "1", "2", "--weight", "1", "2", "3", *target]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert cli.main(["dense", "1", "2", "--weight", "1", "2", "--bias", "1", "2", *target]) == 1
    assert "INVALID_ARGUMENT: bias" in capsys.readouterr().err


# Small chunks so that modest layers take many chunks.
STREAMING = {"stream_threshold_bytes": 4096, "chunk_bytes": 2048}


@pytest.fixture(params=["sync", "async"])
def streaming(request: pytest.FixtureRequest, server: Any) -> Iterator[Any]:
    target = f"127.0.0.1:{server.port}"
    if request.param == "sync":
        sync = actgrad.Client(target, **STREAMING)
        try:
            yield sync
        finally:
            sync.close()
    else:
        adapter = AsyncAdapter(target, **STREAMING)
        try:
            yield adapter
        finally:
            adapter.close()


@pytest.mark.parametrize(
    ("activation", "params", "shape"),
    [("tanh", {}, (200, 6)), ("prelu", {"slope": SLOPE}, (30, 8, 6)), ("softmax", {}, (200, 6))],
)
def test_large_layers_stream_in_chunks_with_the_same_results(
    streaming: Any, activation: str, params: dict[str, Any], shape: tuple[int, ...]
) -> None:
    x, w, b = layer(shape)
    g = np.random.default_rng(2).standard_normal((*shape[:-1], 3))
    want = reference(activation, x, w, b, g, params)
    np.testing.assert_allclose(
        streaming.dense(x, w, b, activation=activation, **params),
        want["output"],
        rtol=1e-12,
        atol=1e-15,
    )
    r = streaming.dense_vjp(
        x,
        w,
        b,
        activation=activation,
        grad_output=g,
        return_output=True,
        return_net_output=True,
        **params,
    )
    for name in ("output", "net_output", "grad_input", "grad_weight", "grad_bias"):
        np.testing.assert_allclose(getattr(r, name), want[name], rtol=1e-12, atol=1e-13)
    for name, value in want["grad_params"].items():
        np.testing.assert_allclose(r.grad_params[name], value, rtol=1e-12, atol=1e-13)


def test_what_streams(server: Any) -> None:
    x, w, b = layer((200, 6))
    with actgrad.Client(f"127.0.0.1:{server.port}", **STREAMING) as client:
        assert client._dense_rpc(x, w, b, None, {}).method == "DenseStream"
        assert client._dense_rpc(x[:2], w, b, None, {}).method == "Dense"
        # A slope along the first axis would have to be split too: the call goes whole.
        slope = np.ones((200, 1))
        assert client._dense_rpc(x, w, b, "prelu", {"slope": slope}).method == "Dense"
        broadcast = {"slope": np.ones((1, 3))}
        assert client._dense_rpc(x, w, b, "prelu", broadcast).method == "DenseStream"


def test_a_bad_chunk_ends_the_stream_with_its_status(streaming: Any) -> None:
    x, w, b = layer((200, 6))
    with pytest.raises(actgrad.InvalidArgumentError) as info:
        streaming.dense(x, w, b, activation="softmax", axis=0)
    assert "axis" in info.value.details
    assert streaming.dense(x, w, b, activation=None).shape == (200, 3)


def _identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize(
    "method",
    [
        "/actgrad.v1.ActivationService/Dense",
        "/actgrad.v1.ActivationService/DenseStream",
        "/actgrad.v1.ActivationService/GradientFlow",
    ],
)
def test_bytes_that_are_no_message_are_invalid_argument(server: Any, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            if method.endswith("Stream"):
                list(
                    channel.stream_stream(method, _identity, _identity)(iter([b"\xff"]), timeout=10)
                )
            else:
                channel.unary_unary(method, _identity, _identity)(b"\xff", timeout=10)
        assert info.value.code() == INVALID


def test_the_default_activation_is_relu(client: Any) -> None:
    x = np.array([[1.0, -2.0]])
    w = np.array([[1.0, 1.0], [-1.0, 0.5]])
    np.testing.assert_allclose(client.dense(x, w), np.maximum(x @ w.T, 0.0), rtol=1e-15)
    np.testing.assert_allclose(client.dense(x, w, activation=None), x @ w.T, rtol=1e-15)
