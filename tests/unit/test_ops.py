"""ops.Operations against the engine, no sockets: values against the mpmath references,
the catalog's defaults, the limits, and errors naming the field."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actgrad
from actgrad_server import catalog, neuron
from actgrad_server.api.activation import function_infos as grpc_function_infos
from actgrad_server.config import Limits
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument, NotFound, OverLimit
from actgrad_server.ops import Operations

sys.path.insert(0, str(Path(__file__).parent))
import graph_reference as ref  # type: ignore[import-not-found,unused-ignore]

LIMITS = Limits(max_message_bytes=1 << 20, max_elements=1000, max_rank=4, max_concurrent_rpcs=4)
X = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])


@pytest.fixture(scope="module")
def ops() -> Operations:
    return Operations(Engine(device="cpu"), LIMITS)


ELEMENTWISE = [f.name for f in catalog.CATALOG if f.elementwise and not f.tensor_params]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activate_and_gradient_match_the_reference_at_the_defaults(
    ops: Operations, name: str
) -> None:
    function = catalog.lookup(name)
    defaults = {p.name: p.default for p in function.params}
    f, d = ref.reference(name, X, defaults)
    np.testing.assert_allclose(ops.activate(X, name), f, rtol=1e-12, atol=1e-14)
    g = np.array([1.0, -2.0, 0.5, 3.0, 1.0])
    result = ops.gradient(X, name, grad_output=g, return_output=True)
    assert result.grad_input is not None and result.output is not None
    np.testing.assert_allclose(result.grad_input, g * d, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.output, f, rtol=1e-12, atol=1e-14)
    assert result.grad_params == {}


def test_the_seeds_softmax(ops: Operations) -> None:
    y = ops.softmax(np.array([2.0, 1.0, 0.1]))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [0.659, 0.242, 0.099], atol=1e-3)


def test_softmax_defaults_and_options_match_the_reference(ops: Operations) -> None:
    x = np.array([[0.5, -1.0, 2.0], [3.0, 3.0, -7.0]])
    ones = np.ones_like(x)
    for axis, temperature, log in [(-1, 1.0, False), (0, 0.5, True), (1, 2.0, False)]:
        want, _ = ref.softmax_reference(x, ones, axis, temperature, log)
        got = ops.softmax(x, axis=axis, temperature=temperature, log=log)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    want, _ = ref.softmax_reference(x, ones, -1, 1.0, False)
    np.testing.assert_allclose(ops.softmax(x), want, rtol=1e-12)


def test_softmax_vjp_is_the_gradient_of_the_softmax_function(ops: Operations) -> None:
    x = np.array([0.5, -1.0, 2.0])
    g = np.array([1.0, 0.0, -1.0])
    _, want = ref.softmax_reference(x, g, -1, 1.0, False)
    result = ops.gradient(x, "softmax", grad_output=g)
    np.testing.assert_allclose(result.grad_input, want, rtol=1e-12, atol=1e-15)


def test_prelu_gradient_has_the_slopes(ops: Operations) -> None:
    x = np.array([[-1.0, 2.0], [-3.0, -4.0]])
    slope = np.array([0.25, 0.5])
    result = ops.gradient(x, "prelu", {"slope": slope}, return_output=True)
    np.testing.assert_allclose(result.grad_input, [[0.25, 1.0], [0.25, 0.5]])
    # d/d slope of sum(prelu(x)) = sum of the negative x along the broadcast axis.
    np.testing.assert_allclose(result.grad_params["slope"], [-4.0, -4.0])
    np.testing.assert_allclose(result.output, [[-0.25, 2.0], [-0.75, -2.0]])


def test_dtypes_are_kept(ops: Operations) -> None:
    for dtype in (np.float32, np.float16, actgrad.wire.BFLOAT16):
        x = X.astype(dtype)
        assert ops.activate(x, "gelu").dtype == x.dtype
        result = ops.gradient(x, "tanh")
        assert result.grad_input is not None and result.grad_input.dtype == x.dtype


def test_dense_and_its_vjp(ops: Operations) -> None:
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    w = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    b = np.array([0.0, -10.0])
    z = x @ w.T + b
    result = ops.dense(x, w, b, activation="relu")
    np.testing.assert_allclose(result.net_output, z)
    np.testing.assert_allclose(result.output, np.maximum(z, 0))
    bare = ops.dense(x, w, b)  # as gRPC: no activation means the output is z
    np.testing.assert_allclose(bare.output, z)
    g = np.array([[1.0, 2.0], [3.0, 4.0]])
    vjp = ops.dense_vjp(x, w, b, activation="relu", grad_output=g, return_output=True)
    gz = g * (z > 0)
    np.testing.assert_allclose(vjp.grad_input, gz @ w)
    np.testing.assert_allclose(vjp.grad_weight, gz.T @ x)
    np.testing.assert_allclose(vjp.grad_bias, gz.sum(axis=0))
    np.testing.assert_allclose(vjp.output, np.maximum(z, 0))


def test_gradient_flow_matches_its_defaults_and_the_sdk(ops: Operations) -> None:
    result = ops.gradient_flow("sigmoid", depth=3, width=8, batch=4, init="he_normal")
    assert result.act_rms.shape == (4,) and result.weight_grad_rms.shape == (3,)
    assert result.ratio == pytest.approx(result.grad_rms[0] / result.grad_rms[-1])
    # The SDK's keyword defaults and the core's are neuron's (one owner).
    sdk = inspect.signature(actgrad.Client.gradient_flow).parameters
    core = inspect.signature(Operations.gradient_flow).parameters
    for name, value in neuron.FLOW_DEFAULTS.items():
        assert sdk[name].default == value, name
        assert core[name].default == value, name


def test_softmax_defaults_are_the_sdks() -> None:
    sdk = inspect.signature(actgrad.Client.softmax).parameters
    for param in catalog.SOFTMAX.params:
        assert sdk[param.name].default == param.default, param.name


def test_functions_are_the_catalog_and_listfunctions(ops: Operations) -> None:
    infos = ops.functions()
    grpc_infos = grpc_function_infos()
    assert [i.name for i in infos] == [f.name for f in catalog.CATALOG]
    for info, message in zip(infos, grpc_infos, strict=True):
        assert info.name == message.name
        assert list(info.aliases) == list(message.aliases)
        assert [p.name for p in info.params] == [p.name for p in message.params]
        assert info.properties.output_min == message.properties.output_min
    assert ops.function("Leaky-ReLU").name == "leaky_relu"


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda o: o.activate(X, "relux"), NotFound, "unknown function 'relux'"),
        (lambda o: o.activate(np.zeros(1001), "relu"), OverLimit, "x: 1001 elements"),
        (lambda o: o.activate(np.zeros((1,) * 5), "relu"), InvalidArgument, "x: rank 5"),
        (lambda o: o.activate(np.zeros(2, np.int64), "relu"), InvalidArgument, "x: dtype"),
        (lambda o: o.activate(X, "elu", {"alpha": "x"}), InvalidArgument, "params['alpha']"),
        (lambda o: o.activate(X, "relu", {"beta": 1.0}), InvalidArgument, "params['beta']"),
        (lambda o: o.activate(X, "prelu"), InvalidArgument, "params['slope']: is required"),
        (
            lambda o: o.gradient(X, "tanh", grad_output=np.ones(2)),
            InvalidArgument,
            "grad_output: shape",
        ),
        (lambda o: o.softmax(X, axis=2), InvalidArgument, "request['axis']"),
        (lambda o: o.softmax(X, temperature=0.0), InvalidArgument, "request['temperature']"),
        (lambda o: o.dense(np.array(1.0), np.ones((2, 1))), InvalidArgument, "x: must have"),
        (lambda o: o.dense(np.ones(3), np.ones((2, 2))), InvalidArgument, "weight: shape"),
        (
            lambda o: o.dense(np.ones((600, 1)), np.ones((2, 1))),
            OverLimit,
            "output: shape [600, 2]",
        ),
        (
            lambda o: o.dense(
                np.ones((1, 2)), np.ones((2, 2)), activation="softmax", params={"axis": 0}
            ),
            InvalidArgument,
            "params['axis']",
        ),
        (lambda o: o.dense(np.ones((1, 2)), np.ones((2, 2)), activation="nope"), NotFound, "nope"),
        (lambda o: o.gradient_flow("prelu"), InvalidArgument, "function: the probe"),
        (lambda o: o.gradient_flow("tanh"), OverLimit, "depth: depth * batch * width"),
        (
            lambda o: o.gradient_flow("tanh", depth=1, width=2, batch=2, init="x"),
            InvalidArgument,
            "init:",
        ),
        (
            lambda o: o.gradient_flow("tanh", depth=1, width=2, batch=2, dtype="float16"),
            InvalidArgument,
            "dtype: must be float32 or float64",
        ),
        (
            lambda o: o.gradient_flow("tanh", depth=1, width=2, batch=2, seed=-1),
            InvalidArgument,
            "seed:",
        ),
    ],
)
def test_errors_name_the_field(ops: Operations, call: Any, error: type, field: str) -> None:
    with pytest.raises(error) as caught:
        call(ops)
    assert field in str(caught.value)


def test_over_limit_is_still_invalid_argument_on_grpc() -> None:
    assert OverLimit("x").status == "INVALID_ARGUMENT"
    assert issubclass(OverLimit, InvalidArgument)
