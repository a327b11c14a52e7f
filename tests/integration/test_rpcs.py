"""Every RPC through both clients against a real server."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import actgrad
from actgrad_server import catalog

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import graph_reference  # type: ignore[import-not-found,unused-ignore]

DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]


def _references() -> dict[str, Callable[[Any], Any]]:
    """Every name (canonical and alias) of an elementwise function callable with its
    defaults, with the float64 high-precision reference at those defaults; the graphs'
    own unit tests hold the tight tolerances."""
    references: dict[str, Callable[[Any], Any]] = {}
    for function in catalog.CATALOG:
        if not function.elementwise or any(p.required for p in function.params):
            continue
        defaults = {p.name: p.default for p in function.params}
        for name in (function.name, *function.aliases):
            references[name] = functools.partial(_reference, function.name, defaults)
    return references


def _reference(function: str, params: dict[str, Any], x: Any) -> Any:
    return graph_reference.reference(function, x, params)[0]


REFERENCES = _references()


def tolerance(dtype: Any) -> float:
    return {
        np.dtype(np.float32): 1e-6,
        np.dtype(np.float64): 1e-12,
        np.dtype(np.float16): 2e-3,
        np.dtype(ml_dtypes.bfloat16): 1.6e-2,
    }[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activate_matches_reference(client: Any, name: str, dtype: Any) -> None:
    x = np.linspace(-6, 6, 49).astype(dtype).reshape(7, 7)
    y = client.activate(x, name)
    assert y.dtype == np.dtype(dtype)
    assert y.shape == x.shape
    expected = REFERENCES[name](x.astype(np.float64))
    tol = tolerance(dtype)
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=tol, atol=tol)


def test_softmax_known_values(client: Any) -> None:
    p = client.softmax(np.array([2.0, 1.0, 0.1]))
    np.testing.assert_allclose(np.round(p, 3), [0.659, 0.242, 0.099])
    assert p.dtype == np.float64


@pytest.mark.parametrize("log", [False, True])
def test_softmax_axis_temperature(client: Any, log: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    out = client.softmax(x, axis=1, temperature=0.7, log=log)
    z = x.astype(np.float64) / 0.7
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out, logp if log else np.exp(logp), rtol=2e-6, atol=2e-7)
    # The same function through Activate.
    again = client.activate(x, "softmax", axis=1, temperature=0.7, log=log)
    np.testing.assert_array_equal(again, out)


def test_gelu_both_forms(client: Any) -> None:
    from math import erf, pi, sqrt, tanh

    x = np.linspace(-5, 5, 41)
    exact = client.activate(x, "gelu")
    approx = client.activate(x, "gelu", approximate="tanh")
    ref_exact = [0.5 * v * (1 + erf(v / sqrt(2))) for v in x]
    ref_tanh = [0.5 * v * (1 + tanh(sqrt(2 / pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(exact, ref_exact, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(approx, ref_tanh, rtol=1e-12, atol=1e-15)


def test_gradient_leaky_relu_with_grad_output(client: Any) -> None:
    x = np.array([-2.0, -0.0, 0.0, 3.0], dtype=np.float32)
    g = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    dx = client.gradient(x, "leaky_relu", grad_output=g, alpha=0.1)
    assert dx.dtype == np.float32
    # PyTorch's convention: leaky_relu'(0) = alpha.
    np.testing.assert_allclose(dx, [0.1, 0.2, 0.3, 4.0], rtol=1e-7)


def test_gradient_relu_kink_is_zero(client: Any) -> None:
    dx = client.gradient(np.array([-1.0, 0.0, 1.0]), "relu")
    np.testing.assert_array_equal(dx, [0.0, 0.0, 1.0])


def test_vjp_prelu_returns_slope_gradient(client: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4))
    slope = np.array([0.1, 0.2, 0.3]).reshape(3, 1)
    g = rng.normal(size=x.shape)
    result = client.vjp(x, "prelu", slope=slope, grad_output=g, return_output=True)
    s = np.broadcast_to(slope, x.shape)
    np.testing.assert_allclose(result.grad_input, np.where(x > 0, g, s * g), rtol=1e-12)
    expected_slope = np.where(x > 0, 0.0, x * g).sum(axis=(0, 2)).reshape(3, 1)
    np.testing.assert_allclose(result.grad_params["slope"], expected_slope, rtol=1e-12)
    np.testing.assert_allclose(result.output, np.where(x > 0, x, s * x), rtol=1e-12)


def test_softmax_gradient(client: Any) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 6))
    g = rng.normal(size=x.shape)
    dx = client.gradient(x, "softmax", grad_output=g, axis=0, temperature=2.0)
    z = x / 2.0
    s = np.exp(z - z.max(axis=0)) / np.exp(z - z.max(axis=0)).sum(axis=0)
    np.testing.assert_allclose(dx, s * (g - (g * s).sum(axis=0)) / 2.0, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(0,), (3, 0, 5), ()])
@pytest.mark.parametrize("name", ["sigmoid", "softmax", "gelu"])
def test_empty_and_scalar_tensors(client: Any, shape: tuple[int, ...], name: str) -> None:
    x = np.full(shape, 0.5, dtype=np.float32)
    y = client.activate(x, name)
    assert y.shape == shape and y.dtype == np.float32
    dx = client.gradient(x, name)
    assert dx.shape == shape and dx.dtype == np.float32
    if shape == ():
        expected = {"sigmoid": 0.6224593, "softmax": 1.0, "gelu": 0.34573123}[name]
        assert float(y) == pytest.approx(expected, rel=1e-6)


def test_lists_and_non_contiguous_and_big_endian(client: Any) -> None:
    as_list = client.activate([[-1.0, 2.0], [3.0, -4.0]], "relu")
    np.testing.assert_array_equal(as_list, [[0.0, 2.0], [3.0, 0.0]])
    base = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    strided = base.T
    np.testing.assert_array_equal(client.activate(strided, "relu"), np.maximum(strided, 0))
    big = np.array([-1.5, 2.5], dtype=">f8")
    out = client.activate(big, "relu")
    np.testing.assert_array_equal(out, [0.0, 2.5])


def test_integer_input_raises_type_error(client: Any) -> None:
    with pytest.raises(TypeError):
        client.activate(np.arange(4), "relu")


def test_functions_catalog(client: Any) -> None:
    functions = {f.name: f for f in client.functions()}
    assert list(functions) == [f.name for f in catalog.CATALOG]
    for entry in catalog.CATALOG:
        served = functions[entry.name]
        assert served.aliases == list(entry.aliases)
        assert served.elementwise == entry.elementwise
        assert served.axis_param == entry.axis_param
        assert [p.name for p in served.params] == [p.name for p in entry.params]
    assert "silu" in functions["swish"].aliases
    assert "scaled_tanh" in functions["xtanh"].aliases
    assert "sinusoidal" in functions["xsin"].aliases
    alpha = {p.name: p for p in functions["leaky_relu"].params}["alpha"]
    assert alpha.default == pytest.approx(0.01)
    approximate = {p.name: p for p in functions["gelu"].params}["approximate"]
    assert list(approximate.choices) == ["none", "tanh"]
    assert functions["softmax"].elementwise is False
    assert functions["softmax"].axis_param == "axis"
    assert functions["relu"].axis_param is None
    assert set(functions["relu"].dtypes) == {"float32", "float64", "float16", "bfloat16"}


def test_server_info(client: Any, server: Any) -> None:
    info = client.server_info()
    assert info.version == actgrad.__version__
    assert info.onnx_opset >= 17
    assert "CPUExecutionProvider" in info.execution_providers
